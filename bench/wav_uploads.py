"""What a 16 kHz mono WAV upload costs the server: through FFmpeg and a decoding process, as
before engine_wav.py, against the standard library's `wave` in the request's thread.

For each of the GPU benchmark's uploads as 16 kHz WAV (`speech_corpus.as_wav`), CPU time
(process time) of:
- `ffmpeg`: the probe (`_probe_open`) and the decode (`decode_pcm16_with_ffmpeg`), what a
  WAV cost before, the probe in the server and the decode in a decoding process;
- `hop`: the round trip to that process, both sides (the upload pickled and unpickled, the
  samples pickled and unpickled back);
- `wave`: `probe_audio` and `decode_pcm16`, as the server runs them now.
Rounds are interleaved, and both paths must give the same samples.

    .venv/bin/python bench/wav_uploads.py --rounds 20
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speech_corpus import as_wav, load_corpus

from voicefleet_runtime.audio import (
    DecodeLimits,
    _open,
    _probe_open,
    decode_engine_wav,
    decode_pcm16,
    decode_pcm16_with_ffmpeg,
    probe_audio,
)

MAX_SECONDS = 3600.0
LIMITS = DecodeLimits(MAX_SECONDS, 0.0)


def cpu_ms(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) * 1000


def through_ffmpeg(data: bytes) -> None:
    with _open(data) as container:
        _probe_open(container, len(data), LIMITS)
    decode_pcm16_with_ffmpeg(data, LIMITS)


def round_trip(data: bytes, pcm: np.ndarray) -> None:
    pickle.loads(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: S301
    pickle.loads(pickle.dumps(pcm, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: S301


def with_wave(data: bytes) -> None:
    probe_audio(data, MAX_SECONDS)
    decode_pcm16(data, MAX_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    uploads = [as_wav(clip) for clip in load_corpus()]
    samples = {}
    for upload in uploads:
        pcm = decode_engine_wav(upload.data, MAX_SECONDS)
        assert pcm is not None, upload.name
        if not np.array_equal(pcm, decode_pcm16_with_ffmpeg(upload.data, LIMITS)):
            raise SystemExit(f"{upload.name}: wave and FFmpeg give different samples")
        samples[upload.name] = pcm
    costs: dict[str, dict[str, list[float]]] = {
        upload.name: {"ffmpeg": [], "hop": [], "wave": []} for upload in uploads
    }
    for _ in range(args.rounds):
        for upload in uploads:
            data, cost = upload.data, costs[upload.name]
            cost["ffmpeg"].append(cpu_ms(lambda: through_ffmpeg(data)))  # noqa: B023
            cost["hop"].append(cpu_ms(lambda: round_trip(data, samples[upload.name])))  # noqa: B023
            cost["wave"].append(cpu_ms(lambda: with_wave(data)))  # noqa: B023
    print(f"CPU ms per upload, median of {args.rounds} rounds")
    print(f"{'upload':<24}{'s':>6}{'ffmpeg':>9}{'hop':>8}{'before':>9}{'wave':>8}{'ratio':>8}")
    ratios = []
    for upload in uploads:
        median = {stage: statistics.median(values) for stage, values in costs[upload.name].items()}
        before = median["ffmpeg"] + median["hop"]
        ratios.append(before / median["wave"])
        print(
            f"{upload.name:<24}{upload.seconds:>6.1f}{median['ffmpeg']:>9.2f}{median['hop']:>8.2f}"
            f"{before:>9.2f}{median['wave']:>8.2f}{ratios[-1]:>7.1f}x"
        )
    total = sum(upload.seconds for upload in uploads)
    before_ms = sum(
        statistics.median(costs[u.name]["ffmpeg"]) + statistics.median(costs[u.name]["hop"])
        for u in uploads
    )
    wave_ms = sum(statistics.median(costs[u.name]["wave"]) for u in uploads)
    print(
        f"all {len(uploads)} uploads ({total:.0f} s of speech): before {before_ms:.1f} ms, "
        f"wave {wave_ms:.1f} ms ({before_ms / wave_ms:.1f}x); audio seconds per CPU second: "
        f"{1000 * total / before_ms:.0f} before, {1000 * total / wave_ms:.0f} with wave"
    )


if __name__ == "__main__":
    main()
