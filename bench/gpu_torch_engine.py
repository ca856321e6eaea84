"""The PyTorch engine on a GPU: precision against precision, and NVML series while it works.

Runs on a machine with an NVIDIA GPU (the device tool's H100 here). faster-whisper cannot
be the baseline there: the CTranslate2 wheels on PyPI link cuBLAS 12 and that machine ships
CUDA 13 only. So the baseline is the same engine in float32 on the same GPU, and each row's
ratio is its throughput over that baseline, measured in the same run.

    python bench/gpu_torch_engine.py --model-dir DIR --audio jfk.npy [--repeats 20]

`--audio` takes a .npy of 16 kHz mono float32 (decode once with faster_whisper.decode_audio)
or any file PyAV can decode when PyAV is installed.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from voicefleet_runtime.engine.base import SAMPLE_RATE, DecodeOptions
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.gpu_metrics import register_gpu_collector

JFK_REFERENCE = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
)


def normalise(text: str) -> list[str]:
    kept = "".join(ch.lower() if ch.isalnum() or ch.isspace() else " " for ch in text)
    return kept.split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = normalise(reference), normalise(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i]
        for j, hyp_word in enumerate(hyp, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
            )
        previous = current
    return previous[-1] / max(len(ref), 1)


def load_audio(path: Path) -> NDArray[np.float32]:
    if path.suffix == ".npy":
        samples = np.load(path)
    else:
        from faster_whisper import decode_audio

        samples = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    return np.asarray(samples, dtype=np.float32)


def sample_gpu(registry: CollectorRegistry, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        value = registry.get_sample_value("voicefleet_gpu_utilization_ratio", {"gpu": "0"})
        if value is not None:
            out.append(value)
        stop.wait(0.05)


def run_case(
    model: ResolvedModel, device: str, precision: str, audio: NDArray[np.float32], repeats: int
) -> dict[str, float | str]:
    engine = TorchWhisperEngine.load(model, device=device, precision=precision, cpu_threads=0)
    options = DecodeOptions(beam_size=1)

    def transcribe() -> str:
        _, segments = engine.transcribe(audio, options)
        return "".join(segment.text for segment in segments)

    text = transcribe()  # warm-up: kernels, allocator, cuDNN autotune
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        transcribe()
        latencies.append(time.perf_counter() - started)
    duration = len(audio) / SAMPLE_RATE
    return {
        "case": f"{device} {precision}",
        "p50_s": statistics.median(latencies),
        "audio_s_per_s": duration * repeats / sum(latencies),
        "wer": word_error_rate(JFK_REFERENCE, text),
        "text": text.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model = ResolvedModel(name="tiny.en", path=args.model_dir, multilingual=False)
    audio = load_audio(args.audio)

    registry = CollectorRegistry()
    has_gpu = register_gpu_collector(registry)
    print(f"NVML collector registered: {has_gpu}")
    for family in registry.collect():
        for sample in family.samples:
            print(f"  {sample.name}{sample.labels} = {sample.value:g}")

    cases = [("cuda", "float32"), ("cuda", "float16"), ("cuda", "bfloat16"), ("cpu", "float32")]
    rows = []
    for device, precision in cases:
        stop, utilisation = threading.Event(), list[float]()
        sampler = threading.Thread(target=sample_gpu, args=(registry, stop, utilisation))
        sampler.start()
        try:
            row = run_case(model, device, precision, audio, args.repeats)
        finally:
            stop.set()
            sampler.join()
        row["gpu_util_mean"] = statistics.fmean(utilisation) if utilisation else float("nan")
        rows.append(row)

    baseline = float(rows[0]["audio_s_per_s"])
    print(f"\n{len(audio) / SAMPLE_RATE:.1f} s clip, {args.repeats} sequential runs per case")
    header = (
        f"{'case':<16}{'p50 s':>8}{'audio s/s':>11}{'vs cuda fp32':>14}{'WER':>7}{'GPU util':>10}"
    )
    print(header)
    for row in rows:
        ratio = float(row["audio_s_per_s"]) / baseline
        print(
            f"{row['case']:<16}{row['p50_s']:>8.3f}{row['audio_s_per_s']:>11.1f}"
            f"{ratio:>13.2f}x{row['wer']:>7.3f}{row['gpu_util_mean']:>10.2f}"
        )
    for row in rows:
        print(f"{row['case']}: {row['text']}")


if __name__ == "__main__":
    main()
