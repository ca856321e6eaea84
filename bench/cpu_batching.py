"""Does continuous batching pay on CPU? The torch engine's two paths on the same clips.

Baseline: the sequential `TorchWhisperEngine` (what `VOICEFLEET_CONTINUOUS_BATCHING=auto`
keeps on CPU), with N client threads sharing it. Against it, in the same run: the
`BatchedWhisperEngine` on the same weights, device and threads, with the same N clients.
Greedy, one temperature, so both do the same work. Prints audio seconds per second and
the ratio batched / sequential for each N.

    python bench/cpu_batching.py [--clients 1,4] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from faster_whisper.audio import decode_audio

from voicefleet_runtime.engine.base import SAMPLE_RATE, DecodeOptions, SpeechEngine
from voicefleet_runtime.engine.models import resolve_model
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.batched import BatchedWhisperEngine, BatchingConfig

AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "audio"
OPTIONS = DecodeOptions(beam_size=1, temperature=(0.0,))


def throughput(engine: SpeechEngine, clips: list[np.ndarray], clients: int, rounds: int) -> float:
    def one(audio: np.ndarray) -> None:
        _, segments = engine.transcribe(audio, OPTIONS)
        for _segment in segments:
            pass

    work = [clips[i % len(clips)] for i in range(clients * rounds)]
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, clips[:clients]))  # warm-up
        started = time.perf_counter()
        list(pool.map(one, work))
        wall = time.perf_counter() - started
    return float(sum(audio.shape[0] for audio in work)) / SAMPLE_RATE / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = resolve_model(args.model, None)
    clips = [
        decode_audio(str(AUDIO / name))
        for name in ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav")
    ]
    sequential = TorchWhisperEngine.load(model, "cpu", "float32", args.threads)
    batched = BatchedWhisperEngine.load(
        model, "cpu", "float32", BatchingConfig(max_sequences=8, memory_gib=1.0), args.threads
    )
    print(
        f"model {args.model}, cpu float32, {args.threads} threads, greedy, clips: jfk, "
        "hotwords, stereo_diarization (11 s, 4 s, 5 s)"
    )
    print(f"{'clients':>8} {'sequential a-s/s':>17} {'batched a-s/s':>14} {'ratio':>6}")
    for clients in (int(c) for c in args.clients.split(",")):
        base = throughput(sequential, clips, clients, args.rounds)
        ours = throughput(batched, clips, clients, args.rounds)
        print(f"{clients:>8} {base:>17.1f} {ours:>14.1f} {ours / base:>6.2f}")
    batched.close()


if __name__ == "__main__":
    main()
