"""Speech with known transcripts for the GPU benchmarks, and the word error rate against them.

Two sources: the real JFK recording from `../shared/audio` (11 s), and longer English read by
espeak-ng from the passages in `bench/audio/texts.tsv` (20-23 s each, Opus in Ogg, about
90 kB a clip, so they travel with the repository). Every clip fits one 30 s window, which is
what the Hugging Face anchor decodes.

Regenerate the clips (Debian `espeak-ng`; PyAV encodes):

    python bench/speech_corpus.py synthesise
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import jiwer
import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.audio import decode_audio
from voicefleet_runtime.engine.base import SAMPLE_RATE

AUDIO_DIR = Path(__file__).resolve().parent / "audio"
TEXTS = AUDIO_DIR / "texts.tsv"
SHARED_AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "audio"
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
MAX_CLIP_SECONDS = 30.0
ESPEAK_VOICE = "en-us"
ESPEAK_WORDS_PER_MINUTE = 165
OPUS_BITS_PER_SECOND = 32_000
ESPEAK = ("espeak-ng", "-v", ESPEAK_VOICE, "-s", str(ESPEAK_WORDS_PER_MINUTE))


@dataclass(frozen=True)
class Clip:
    name: str
    data: bytes
    """The file's bytes, as a client uploads them."""
    audio: NDArray[np.float32]
    """16 kHz mono, as the runtime decodes them."""
    reference: str

    @property
    def filename(self) -> str:
        return self.name

    @property
    def seconds(self) -> float:
        return float(self.audio.shape[0] / SAMPLE_RATE)


def _clip(path: Path, reference: str) -> Clip:
    data = path.read_bytes()
    audio = decode_audio(data, max_seconds=MAX_CLIP_SECONDS)
    return Clip(path.name, data, audio, reference)


def as_wav(clip: Clip) -> Clip:
    """The same speech as a 16 kHz 16-bit WAV upload: what a client that sends PCM uploads,
    so the server's own cost shows without the Opus decoding and resampling."""
    pcm = np.clip(np.round(clip.audio * 32767), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(SAMPLE_RATE)
        target.writeframes(pcm.tobytes())
    name = clip.name.rsplit(".", 1)[0] + ".wav"
    return Clip(name, buffer.getvalue(), clip.audio, clip.reference)


def read_texts() -> dict[str, str]:
    """Clip name (without suffix) -> the passage espeak-ng read."""
    texts: dict[str, str] = {}
    for line in TEXTS.read_text().splitlines():
        if line.strip():
            name, text = line.split("\t", 1)
            texts[name] = text.strip()
    return texts


def load_corpus(jfk: Path | None = None) -> list[Clip]:
    """JFK first (the single-request figure uses it), then the synthesised passages."""
    jfk_path = jfk or SHARED_AUDIO / "jfk.flac"
    clips = [_clip(jfk_path, JFK_REFERENCE)]
    clips += [_clip(AUDIO_DIR / f"{name}.ogg", text) for name, text in read_texts().items()]
    return clips


def normalise(text: str) -> str:
    """Lowercase words without punctuation, so WER counts words, not formatting."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level WER (errors over reference words, pooled)."""
    return float(
        jiwer.wer([normalise(r) for r in references], [normalise(h) or "-" for h in hypotheses])
    )


def _encode_opus(wav_path: Path, target: Path) -> None:
    with wave.open(str(wav_path)) as source:
        rate = source.getframerate()
        pcm = np.frombuffer(source.readframes(source.getnframes()), dtype=np.int16)
    with av.open(str(target), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48_000, layout="mono")
        stream.bit_rate = OPUS_BITS_PER_SECOND
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def synthesise() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for name, text in read_texts().items():
            wav_path = Path(scratch) / f"{name}.wav"
            subprocess.run(
                [*ESPEAK, "-w", str(wav_path), text],
                check=True,
            )
            _encode_opus(wav_path, AUDIO_DIR / f"{name}.ogg")
            print(f"{name}: {(AUDIO_DIR / f'{name}.ogg').stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["synthesise", "list"])
    args = parser.parse_args()
    if args.command == "synthesise":
        synthesise()
        return
    for clip in load_corpus():
        print(f"{clip.name:<18}{clip.seconds:6.1f} s  {clip.reference[:60]}")


if __name__ == "__main__":
    main()
