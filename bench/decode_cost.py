"""What decoding one upload costs, stage by stage, before and after resampling in blocks.

Over HTTP on a GPU the server is limited by its upload-decoding processes (audio_workers.py;
README, "GPU throughput"). This prints, per real recording, the CPU time (process time, so
FFmpeg's own threads count too) of each stage of audio.py's decode, cumulatively:

- `probe`: open the container and read its headers (`probe_audio`);
- `demux`: read every packet;
- `decode`: and run the codec;
- `res/frame`: and resample each decoded frame on its own, as the runtime did (one
  resampler call per 20 ms Opus frame);
- `res/block`: and resample blocks of frames gathered in an AudioFifo, as it does now;
- `before`, `after`: the whole decode with its limits and output buffer: the runtime's
  previous decode (copied below: frame by frame, float32 out) and `decode_pcm16` now.

Then the cost of sending the result back from a decoding process (pickle of float32 against
int16 samples) and one real worker process (the runtime's `AudioDecoder(1)` against a pool
running the previous decode) fed by two threads: uploads per second and the server's own CPU
time per upload. Both sides run in the same process, rounds interleaved, and the script
checks that both decodes give the same samples on every file (so the transcripts, and the
word error rate, cannot change).

    .venv/bin/python bench/decode_cost.py --rounds 15 --pool-uploads 150
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.audio import (
    RESAMPLE_BLOCK_SAMPLES,
    DecodeLimits,
    _Budget,
    _open,
    _probe_open,
    _size,
    decode_pcm16,
    probe_audio,
)
from voicefleet_runtime.audio_workers import AudioDecoder
from voicefleet_runtime.engine.base import PCM16_SCALE, SAMPLE_RATE, pcm16_to_float

HERE = Path(__file__).resolve().parent
SHARED_AUDIO = HERE.parent.parent / "shared" / "audio"
BENCH_UPLOADS = ["jfk.flac", *sorted(path.name for path in (HERE / "audio").glob("*.ogg"))]
"""What bench/gpu_batching.py uploads: jfk.flac and eight espeak-ng passages in Ogg Opus."""
OTHER_RECORDINGS = ["hotwords.mp3", "multilingual.mp3", "stereo_diarization.wav"]
MAX_SECONDS = 7200.0


def frame_by_frame_decode(data: bytes, max_seconds: float = MAX_SECONDS) -> NDArray[np.float32]:
    """The runtime's decode before this change (commit 0df267d), kept as the baseline: one
    resampler call and one float32 scaling per decoded frame."""
    limits = DecodeLimits(max_seconds, 0.0)
    with _open(data) as container:
        _probe_open(container, _size(data), limits)
        budget = _Budget(limits, len(data))
        pcm = np.empty(int((max_seconds + 1) * SAMPLE_RATE), dtype=np.float32)
        length = 0

        def append(frame: av.AudioFrame) -> None:
            nonlocal length
            samples = frame.to_ndarray().reshape(-1)
            end = min(length + samples.shape[0], pcm.shape[0])
            np.multiply(samples[: end - length], PCM16_SCALE, out=pcm[length:end])
            length = end

        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            budget.charge(frame)
            for resampled in resampler.resample(frame):
                append(resampled)
        for resampled in resampler.resample(None):
            append(resampled)
    return pcm[:length]


def demux(data: bytes) -> None:
    with _open(data) as container:
        for _ in container.demux(audio=0):
            pass


def decode(data: bytes) -> None:
    with _open(data) as container:
        for _ in container.decode(audio=0):
            pass


def resample_per_frame(data: bytes) -> None:
    with _open(data) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in [*container.decode(audio=0), None]:
            for resampled in resampler.resample(frame):
                resampled.to_ndarray()


def resample_in_blocks(data: bytes) -> None:
    with _open(data) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        fifo = av.AudioFifo()
        for frame in container.decode(audio=0):
            frame.pts = None
            fifo.write(frame)
            if fifo.samples >= RESAMPLE_BLOCK_SAMPLES:
                for resampled in resampler.resample(fifo.read()):
                    resampled.to_ndarray()
        for block in [fifo.read(), None]:
            for resampled in resampler.resample(block):
                resampled.to_ndarray()


STAGES: dict[str, Callable[[bytes], object]] = {
    "probe": lambda data: probe_audio(data, MAX_SECONDS),
    "demux": demux,
    "decode": decode,
    "res/frame": resample_per_frame,
    "res/block": resample_in_blocks,
    "before": frame_by_frame_decode,
    "after": lambda data: decode_pcm16(data, MAX_SECONDS),
}


@dataclass
class Upload:
    name: str
    data: bytes
    codec: str
    seconds: float
    cpu_ms: dict[str, list[float]]

    def median(self, stage: str) -> float:
        return statistics.median(self.cpu_ms[stage])


def load(name: str) -> Upload:
    path = SHARED_AUDIO / name if (SHARED_AUDIO / name).exists() else HERE / "audio" / name
    data = path.read_bytes()
    with _open(data) as container:
        stream = container.streams.audio[0]
        codec = f"{stream.codec_context.name} {stream.codec_context.sample_rate // 1000}k"
        codec += f" {stream.codec_context.channels}ch"
    before = frame_by_frame_decode(data)
    after = decode_pcm16(data, MAX_SECONDS)
    if not np.array_equal(before, after * np.float32(PCM16_SCALE)):
        raise SystemExit(f"{name}: the new decode's samples differ from the previous decode's")
    return Upload(name, data, codec, before.shape[0] / SAMPLE_RATE, {stage: [] for stage in STAGES})


def cpu_ms(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) * 1000


def measure_stages(uploads: list[Upload], rounds: int) -> None:
    for _ in range(rounds):
        for upload in uploads:
            for stage, run in STAGES.items():
                upload.cpu_ms[stage].append(cpu_ms(lambda: run(upload.data)))  # noqa: B023


def transfer_ms(seconds: float, dtype: type[np.generic], repeats: int = 30) -> float:
    """CPU ms to pickle and unpickle `seconds` of 16 kHz samples (what a pool sends back)."""
    pcm = np.zeros(int(seconds * SAMPLE_RATE), dtype=dtype)
    return statistics.median(
        cpu_ms(lambda: pickle.loads(pickle.dumps(pcm, protocol=pickle.HIGHEST_PROTOCOL)))  # noqa: S301
        for _ in range(repeats)
    )


def scaling_ms(seconds: float, repeats: int = 30) -> float:
    """CPU ms for the server to scale `seconds` of 16-bit samples to float32."""
    pcm = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16)
    return statistics.median(cpu_ms(lambda: pcm16_to_float(pcm)) for _ in range(repeats))


def drive(
    decode_one: Callable[[bytes], object], uploads: list[Upload], count: int
) -> tuple[float, float]:
    """(uploads per second, server CPU ms per upload) with two threads feeding one worker."""
    queue = [uploads[index % len(uploads)].data for index in range(count)]
    lock = threading.Lock()

    def feed() -> None:
        while True:
            with lock:
                if not queue:
                    return
                data = queue.pop()
            decode_one(data)

    threads = [threading.Thread(target=feed) for _ in range(2)]
    started, cpu_started = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return count / wall, (time.process_time() - cpu_started) * 1000 / count


def measure_pool(
    uploads: list[Upload], count: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    previous = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    current = AudioDecoder(1)
    try:
        previous.submit(frame_by_frame_decode, uploads[0].data).result()
        current.decode_pcm16(uploads[0].data, MAX_SECONDS)
        for _ in range(rounds):
            results["before"].append(
                drive(
                    lambda data: previous.submit(frame_by_frame_decode, data).result(),
                    uploads,
                    count,
                )
            )
            results["after"].append(
                drive(
                    lambda data: pcm16_to_float(current.decode_pcm16(data, MAX_SECONDS)),
                    uploads,
                    count,
                )
            )
    finally:
        previous.shutdown()
        current.close()
    return results


def report(uploads: list[Upload], bench_names: list[str]) -> None:
    stages = list(STAGES)
    print(
        f"{'upload':<24}{'codec':<18}{'audio s':>8}"
        + "".join(f"{s:>10}" for s in stages)
        + f"{'after/before':>14}"
    )
    for upload in uploads:
        medians = [upload.median(stage) for stage in stages]
        ratio = upload.median("after") / upload.median("before")
        print(
            f"{upload.name:<24}{upload.codec:<18}{upload.seconds:>8.1f}"
            + "".join(f"{m:>10.2f}" for m in medians)
            + f"{ratio:>14.2f}"
        )
    print("(CPU ms per upload, median over rounds; each stage includes the ones before it)\n")
    chosen = [upload for upload in uploads if upload.name in bench_names]
    for label, group in (("gpu_batching's uploads", chosen), ("every recording", uploads)):
        before = sum(upload.median("before") for upload in group)
        after = sum(upload.median("after") for upload in group)
        audio = sum(upload.seconds for upload in group)
        print(
            f"{label} ({len(group)} files, {audio:.0f} s of audio), one core: "
            f"{1000 * len(group) / before:.1f} uploads/s before, {1000 * len(group) / after:.1f} "
            f"after: x{before / after:.2f}  ({audio * 1000 / before:.0f} -> "
            f"{audio * 1000 / after:.0f} audio s/s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pool-uploads", type=int, default=150, help="per pool round (0: skip)")
    parser.add_argument("--pool-rounds", type=int, default=3)
    args = parser.parse_args()

    uploads = [load(name) for name in BENCH_UPLOADS + OTHER_RECORDINGS]
    print(
        f"PyAV {av.__version__}, FFmpeg libavcodec {av.library_versions['libavcodec']}; "
        f"resample blocks of {RESAMPLE_BLOCK_SAMPLES} samples; every file: same samples "
        "before and after\n"
    )
    measure_stages(uploads, args.rounds)
    report(uploads, BENCH_UPLOADS)

    longest = max(upload.seconds for upload in uploads)
    typical = statistics.median(
        upload.seconds for upload in uploads if upload.name in BENCH_UPLOADS
    )
    print()
    for seconds in (typical, longest):
        f32, i16 = transfer_ms(seconds, np.float32), transfer_ms(seconds, np.int16)
        print(
            f"sending {seconds:.1f} s of PCM back (pickle + unpickle): float32 {f32:.3f} ms, "
            f"int16 {i16:.3f} ms, then int16 to float32 {scaling_ms(seconds):.3f} ms"
        )

    if args.pool_uploads:
        chosen = [upload for upload in uploads if upload.name in BENCH_UPLOADS]
        report_pool(measure_pool(chosen, args.pool_uploads, args.pool_rounds), args)


def report_pool(pool: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    print(
        f"\none decoding process fed by two threads, gpu_batching's uploads, "
        f"{args.pool_uploads} a round, {args.pool_rounds} rounds interleaved (wall clock):"
    )
    medians = {}
    for side, rows in pool.items():
        medians[side] = statistics.median(rate for rate, _ in rows)
        rates = ", ".join(f"{rate:.1f}" for rate, _ in rows)
        server = statistics.median(cpu for _, cpu in rows)
        print(
            f"  {side:<7} uploads/s {rates} (median {medians[side]:.1f}); "
            f"server CPU per upload {server:.2f} ms"
        )
    print(f"  after/before uploads/s: x{medians['after'] / medians['before']:.2f}")


if __name__ == "__main__":
    main()
