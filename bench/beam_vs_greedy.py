"""Greedy against beam search, in word error rate, on the GPU bench's speech (issue 8).

The batched engine decodes greedily; the sequential torch engine can do both. This runs the
sequential engine with beam 1 and beam N and the batched engine (greedy) over the same clips
(bench/speech_corpus.py: jfk.flac and eight read passages, 185 s) and prints each model's
pooled WER, so the default is a measured choice. Decoding is deterministic, so a CPU gives
the same words a GPU would (up to float rounding); the times are only for orientation.

    .venv/bin/python bench/beam_vs_greedy.py --models tiny.en base --beam 5
    python3 bench/beam_vs_greedy.py --device cuda --precision float16 --models /path/to/tiny.en
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from speech_corpus import Clip, load_corpus, word_error_rate

from voicefleet_runtime.engine.base import DecodeOptions, SpeechEngine
from voicefleet_runtime.engine.models import resolve_model
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.batched import BatchedWhisperEngine, BatchingConfig


def transcribe_all(engine: SpeechEngine, clips: Sequence[Clip], beam: int) -> tuple[float, float]:
    """(pooled WER, audio seconds per second), one clip at a time."""
    options = DecodeOptions(beam_size=beam, language="en")
    started = time.perf_counter()
    texts = []
    for clip in clips:
        _, segments = engine.transcribe(clip.audio, options)
        texts.append("".join(segment.text for segment in segments))
    wall = time.perf_counter() - started
    wer = word_error_rate([clip.reference for clip in clips], texts)
    return wer, sum(clip.seconds for clip in clips) / wall


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models", nargs="+", default=["tiny.en", "base"], help="names or model folders"
    )
    parser.add_argument("--jfk", type=Path, help="jfk.flac (default: ../shared/audio)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    clips = load_corpus(args.jfk)
    print(f"corpus: {len(clips)} clips, {sum(c.seconds for c in clips):.0f} s; {args.device}")
    print(f"{'model':8s} {'engine':34s} {'beam':>4s} {'WER':>6s} {'audio s/s':>9s}")
    for name in args.models:
        model = resolve_model(name, None)
        name = model.name
        sequential = TorchWhisperEngine.load(model, args.device, args.precision)
        run(name, "sequential (TorchWhisperEngine)", sequential, clips, [1, args.beam])
        batched = BatchedWhisperEngine.load(
            model,
            args.device,
            args.precision,
            BatchingConfig(max_sequences=8, memory_gib=0.5, cuda_graphs=False),
        )
        run(name, "continuous batching", batched, clips, [1])
        batched.close()


def run(
    name: str, label: str, engine: SpeechEngine, clips: Sequence[Clip], beams: list[int]
) -> None:
    for beam in beams:
        wer, rate = transcribe_all(engine, clips, beam)
        print(f"{name:8s} {label:34s} {beam:4d} {wer:6.3f} {rate:9.1f}", flush=True)


if __name__ == "__main__":
    main()
