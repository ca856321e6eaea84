"""Decode an uploaded file into 16 kHz mono float32 PCM with PyAV (FFmpeg's decoders).

The level matches faster-whisper's (and OpenAI Whisper's) own decoder, which the models were
validated with: FFmpeg resamples to signed 16-bit mono, then samples are scaled by 1/32768.
With an integer output format FFmpeg normalises its downmix matrix, so stereo becomes the
average of the channels and stays within [-1, 1]; with a float output it would sum the
channels at -3 dB each, 1.41 times too loud for identical channels and above 1.0 at peaks.

A hostile file can be tiny and still decode into hours of audio or gigabytes of PCM (a FLAC
that declares a sample rate of 3 Hz turns 55 bytes into six hours). So what a file costs is
bounded before and while it is decoded, never after:
- `probe_audio` opens the container and refuses, before any frame is decoded, sample rates
  outside 8-192 kHz, more than 8 channels, a declared duration over the limit and a declared
  duration no real codec fits in the uploaded bytes;
- `decode_pcm16` checks every decoded frame *before* it joins a block to resample (frames
  may change rate or layout mid-stream): its rate and channels, the seconds decoded so far
  against the limit and against the uploaded bytes, and the samples decoded against a work
  budget (what the longest allowed 48 kHz stereo file needs), so CPU and memory stop growing
  at the limit.

A 16 kHz mono 16-bit WAV is already the engines' input: it is read without FFmpeg
(engine_wav.py), under the same limits (the declared duration first, then the samples read).

Statuses the failures map to (documented in the README):
- 415: not audio at all (FFmpeg cannot open it, or it has no audio stream);
- 400: empty, corrupt, truncated, or outside the sane bounds above;
- 413: longer than the configured limit (declared, or found while decoding).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import SAMPLE_RATE, pcm16_to_float
from voicefleet_runtime.engine_wav import FORMAT_NAME, open_engine_wav, read_samples
from voicefleet_runtime.errors import ApiError

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
DECLARED_DURATION_SLACK = 1.5
"""Some demuxers estimate a duration from the first frames' bit rate (MP3 without a Xing
header): a declared duration is refused only this far over the limit; decoding enforces
the limit exactly."""
RATIO_FREE_SECONDS = 30.0
"""Audio this short is never refused for its compression ratio (tiny legitimate files)."""
WORK_BUDGET_RATE = 48_000 * 2
"""Source samples per allowed second the decoder may process: a 48 kHz stereo file at the
limit fits, an 8-channel 192 kHz one is stopped after a sixteenth of it."""
MAX_FORMAT_CHANGES = 32
"""Times a stream may change its sample rate, layout or sample format: each change starts a new
resampler (~0.2 ms, ten frames' worth), so a file that flips every frame is refused rather
than costing ten times its decoding; real streams change rarely (chained Ogg, joined MP3s)."""


@dataclass(frozen=True)
class DecodeLimits:
    max_seconds: float
    min_bytes_per_second: float
    """Compression-ratio bound: fewer uploaded bytes per decoded second is not a real codec."""

    def seconds_for(self, uploaded_bytes: int) -> float:
        """The most audio `uploaded_bytes` may plausibly hold (never under RATIO_FREE_SECONDS)."""
        if self.min_bytes_per_second <= 0:
            return float("inf")
        return max(RATIO_FREE_SECONDS, uploaded_bytes / self.min_bytes_per_second)


@dataclass(frozen=True)
class AudioProbe:
    format_name: str
    sample_rate: int
    channels: int
    declared_seconds: float | None


def _not_audio(detail: str) -> ApiError:
    return ApiError(
        415,
        f"the file is not audio FFmpeg can decode: {detail}",
        code="unsupported_audio",
        param="file",
    )


def _empty() -> ApiError:
    return ApiError(400, "the audio file is empty", code="empty_audio", param="file")


def _too_long(limit: float, declared: bool = False) -> ApiError:
    what = "declares a duration" if declared else "is"
    return ApiError(
        413,
        f"the audio {what} longer than the limit of {limit:g} seconds",
        code="audio_too_long",
        param="file",
    )


def _out_of_bounds(detail: str) -> ApiError:
    return ApiError(
        400,
        f"the audio is outside what this server decodes: {detail} "
        f"(sample rates {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz, at most {MAX_CHANNELS} channels)",
        code="unsupported_audio_format",
        param="file",
    )


def _implausible(seconds: float, uploaded: int) -> ApiError:
    return ApiError(
        400,
        f"the file decodes to more audio ({seconds:.0f} s) than any real codec stores in "
        f"{uploaded} bytes",
        code="implausible_audio",
        param="file",
    )


def _check_format(sample_rate: int, channels: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise _out_of_bounds(f"sample rate {sample_rate} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise _out_of_bounds(f"{channels} channels")


AudioSource = bytes | BinaryIO
"""The upload: bytes, or a seekable file (a spooled upload is read where it lies)."""


def _size(source: AudioSource) -> int:
    if isinstance(source, bytes):
        return len(source)
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    return size


def _stream(source: AudioSource) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else source


def _open(source: AudioSource) -> av.container.InputContainer:
    if not _size(source):
        raise _empty()
    stream = _stream(source)
    try:
        return av.open(stream, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise _not_audio(type(exc).__name__) from exc


def _declared_seconds(container: av.container.InputContainer) -> float | None:
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _probe_open(
    container: av.container.InputContainer, uploaded: int, limits: DecodeLimits
) -> AudioProbe:
    if not container.streams.audio:
        raise _not_audio(f"{container.format.name} without an audio stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # a stream whose codec FFmpeg does not have (a bad id)
        raise _not_audio(f"{container.format.name} with an audio codec FFmpeg lacks")
    probe = AudioProbe(
        format_name=container.format.name,
        sample_rate=int(stream.codec_context.sample_rate or 0),
        channels=int(stream.codec_context.channels or 0),
        declared_seconds=_declared_seconds(container),
    )
    return _checked(probe, uploaded, limits)


def _checked(probe: AudioProbe, uploaded: int, limits: DecodeLimits) -> AudioProbe:
    """The probe, once its format and declared duration are within the limits."""
    _check_format(probe.sample_rate, probe.channels)
    declared = probe.declared_seconds
    if declared is not None:
        if declared > limits.max_seconds * DECLARED_DURATION_SLACK:
            raise _too_long(limits.max_seconds, declared=True)
        if declared > limits.seconds_for(uploaded) * DECLARED_DURATION_SLACK:
            raise _implausible(declared, uploaded)
    return probe


def probe_audio(
    source: AudioSource, max_seconds: float, *, min_bytes_per_second: float = 0.0
) -> AudioProbe:
    """Container metadata, checked before anything is decoded; cheap (headers only)."""
    uploaded = _size(source)
    limits = DecodeLimits(max_seconds, min_bytes_per_second)
    if (wav := open_engine_wav(_stream(source))) is not None:
        return _checked(_wav_probe(wav), uploaded, limits)
    with _open(source) as container:
        return _probe_open(container, uploaded, limits)


def _wav_probe(wav: wave.Wave_read) -> AudioProbe:
    declared = wav.getnframes() / SAMPLE_RATE
    return AudioProbe(FORMAT_NAME, SAMPLE_RATE, 1, declared)


def _read_engine_wav(wav: wave.Wave_read, uploaded: int, limits: DecodeLimits) -> NDArray[np.int16]:
    """A WAV's samples under the limits FFmpeg's path applies: the declared duration before
    reading, then what was read (one sample past the limit says the file is too long)."""
    _checked(_wav_probe(wav), uploaded, limits)
    pcm = read_samples(wav, int(limits.max_seconds * SAMPLE_RATE) + 1)
    seconds = pcm.shape[0] / SAMPLE_RATE
    if seconds > limits.max_seconds:
        raise _too_long(limits.max_seconds)
    if seconds > limits.seconds_for(uploaded):
        raise _implausible(seconds, uploaded)
    if not pcm.shape[0]:
        raise _empty()
    return pcm


class _Budget:
    """What decoding one upload may cost, checked per frame before the frame is resampled."""

    def __init__(self, limits: DecodeLimits, uploaded: int) -> None:
        self.limits = limits
        self.uploaded = uploaded
        self.plausible_seconds = limits.seconds_for(uploaded)
        self.max_work = limits.max_seconds * WORK_BUDGET_RATE
        self.seconds = 0.0
        self.work = 0

    def charge(self, frame: av.AudioFrame) -> int:
        """The frame's sample rate, once its cost is within the limits."""
        rate = int(frame.sample_rate or 0)
        channels = frame.layout.nb_channels
        _check_format(rate, channels)
        self.seconds += frame.samples / rate
        self.work += frame.samples * channels
        if self.seconds > self.limits.max_seconds:
            raise _too_long(self.limits.max_seconds)
        if self.seconds > self.plausible_seconds:
            raise _implausible(self.seconds, self.uploaded)
        if self.work > self.max_work:
            raise ApiError(
                413,
                f"the audio needs more decoding than the limit allows ({channels} channels at "
                f"{rate} Hz); downmix or resample it, or send less than "
                f"{self.limits.max_seconds:g} seconds",
                code="audio_too_long",
                param="file",
            )
        return rate


class _PcmBuffer:
    """16-bit output written in place: untouched pages of the reservation cost no memory, so
    the peak is the decoded audio itself (2 bytes a sample), not chunks plus copies."""

    def __init__(self, max_seconds: float) -> None:
        # +1 s: the resampler's flush may add a few samples past the last frame.
        self._pcm = np.empty(int((max_seconds + 1) * SAMPLE_RATE), dtype=np.int16)
        self.length = 0

    def append(self, frame: av.AudioFrame) -> None:
        samples = frame.to_ndarray().reshape(-1)
        end = min(self.length + samples.shape[0], self._pcm.shape[0])
        self._pcm[self.length : end] = samples[: end - self.length]
        self.length = end

    def audio(self) -> NDArray[np.int16]:
        return self._pcm[: self.length]


RESAMPLE_BLOCK_SAMPLES = 65_536
"""Decoded samples (per channel) gathered before one resampler call. Codecs emit small frames
(Opus: 20 ms, 1,100 for a 22 s clip), and resampling each on its own, with its per-frame
Python, cost more than FFmpeg's Opus decoding itself (bench/decode_cost.py); the resampler is
continuous across calls, so blocks give the same samples. 65,536 samples of 8-channel float
are 2 MiB."""


class _Resampling:
    """Decoded frames to 16 kHz mono s16, in blocks. Stereo and other layouts are mixed down
    here; s16, not flt: see the module docstring for why the format decides the downmix level.

    A frame whose format, layout or rate differs from the previous one's (codecs may change
    them mid-stream) ends the block and the resampler: what came before is flushed at its own
    rate and a new resampler takes the rest, so every part reaches the output at 16 kHz."""

    def __init__(self, pcm: _PcmBuffer) -> None:
        self._pcm = pcm
        self._fifo = av.AudioFifo()
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._source: tuple[str, str, int] | None = None
        self._changes = 0

    def feed(self, frame: av.AudioFrame, rate: int) -> None:
        source = (frame.format.name, frame.layout.name, rate)
        if source != self._source:
            if self._source is not None:
                self._changes += 1
                if self._changes > MAX_FORMAT_CHANGES:
                    raise ApiError(
                        400,
                        f"the audio changes its sample rate, channel layout or sample format "
                        f"more than {MAX_FORMAT_CHANGES} times",
                        code="unsupported_audio_format",
                        param="file",
                    )
                self.flush()
            self._source = source
        # The FIFO checks timestamps for continuity; a stream's gaps are not ours to refuse.
        frame.pts = None
        self._fifo.write(frame)
        if self._fifo.samples >= RESAMPLE_BLOCK_SAMPLES:
            self._resample(self._fifo.read())

    def flush(self) -> None:
        """The block in hand and the resampler's tail; the next frame starts afresh."""
        if self._fifo.samples:
            self._resample(self._fifo.read())
        self._resample(None)
        self._fifo = av.AudioFifo()
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def _resample(self, block: av.AudioFrame | None) -> None:
        for resampled in self._resampler.resample(block):
            self._pcm.append(resampled)


def decode_pcm16(
    source: AudioSource, max_seconds: float, *, min_bytes_per_second: float = 0.0
) -> NDArray[np.int16]:
    """The upload as 16 kHz mono signed 16-bit samples, which is all the decoder produces:
    half the bytes of float32 to carry between processes, and `pcm16_to_float` makes the
    engines' input from it exactly. Blocking and CPU-bound: call it in a worker thread or
    process. `min_bytes_per_second` 0: no compression-ratio bound (trusted input, as in
    benchmarks)."""
    pcm = decode_engine_wav(source, max_seconds, min_bytes_per_second=min_bytes_per_second)
    if pcm is not None:
        return pcm
    return decode_pcm16_with_ffmpeg(source, DecodeLimits(max_seconds, min_bytes_per_second))


def decode_engine_wav(
    source: AudioSource, max_seconds: float, *, min_bytes_per_second: float = 0.0
) -> NDArray[np.int16] | None:
    """`decode_pcm16` of a 16 kHz mono 16-bit WAV, read without FFmpeg (engine_wav.py) under
    the same limits; None, after reading the header only, for any other file."""
    uploaded = _size(source)  # before the reader is opened: measuring seeks a file
    if (wav := open_engine_wav(_stream(source))) is None:
        return None
    return _read_engine_wav(wav, uploaded, DecodeLimits(max_seconds, min_bytes_per_second))


def decode_pcm16_with_ffmpeg(source: AudioSource, limits: DecodeLimits) -> NDArray[np.int16]:
    """`decode_pcm16` through FFmpeg whatever the file (engine WAVs too: what the benches and
    tests compare the standard library's reading with)."""
    uploaded = _size(source)
    with _open(source) as container:
        _probe_open(container, uploaded, limits)
        budget = _Budget(limits, uploaded)
        pcm = _PcmBuffer(limits.max_seconds)
        resampling = _Resampling(pcm)
        try:
            for frame in container.decode(audio=0):
                resampling.feed(frame, budget.charge(frame))
            resampling.flush()
        except av.error.FFmpegError as exc:
            raise ApiError(
                400,
                f"the audio is corrupt or truncated ({type(exc).__name__})",
                code="invalid_audio",
                param="file",
            ) from exc
    if pcm.length == 0:
        raise _empty()
    return pcm.audio()


def decode_audio(
    source: AudioSource, max_seconds: float, *, min_bytes_per_second: float = 0.0
) -> NDArray[np.float32]:
    """`decode_pcm16`, scaled for the engines."""
    return pcm16_to_float(
        decode_pcm16(source, max_seconds, min_bytes_per_second=min_bytes_per_second)
    )
