"""Why `voicefleet serve` did not batch on a GPU: upload decoding starves the loop thread.

A stand-in for the batching loop's thread on a GPU: each step waits six times with the GIL
released (as a CUDA copy, graph replay or synchronisation does) and does a little Python in
between. Beside it, N threads decode the bench's uploads with the runtime's decoder, as the
server's request threads did (mode `thread`), or hand them to worker processes
(`process`, audio_workers.py). It prints the loop's step time and the uploads decoded per
second. No GPU needed: the effect is the interpreter's.

    .venv/bin/python bench/gil_convoy.py --threads 0 1 4 16 --processes 2
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from voicefleet_runtime.audio_workers import AudioDecoder

CLIP = Path(__file__).resolve().parent / "audio" / "gettysburg.ogg"
WAITS_PER_STEP = 6
WAIT_S = 0.0001
MIN_STEPS = 300
MIN_SECONDS = 3.0
"""Long enough for the decoding threads to finish uploads even when they share one core."""


def loop_step() -> None:
    for _ in range(WAITS_PER_STEP):
        time.sleep(WAIT_S)  # the GIL is released, as in a wait on the GPU
        sum(range(200))  # the host's bookkeeping between waits


def measure(threads: int, decoder: AudioDecoder, data: bytes) -> tuple[float, float]:
    """(loop step ms, uploads decoded per second) with `threads` decoding beside the loop."""
    stop = threading.Event()
    decoded = [0]

    def decode_forever() -> None:
        while not stop.is_set():
            decoder.decode_pcm16(data, 600.0)
            decoded[0] += 1

    workers = [threading.Thread(target=decode_forever) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(0.2)
    started = time.perf_counter()
    counted = decoded[0]
    steps = 0
    while steps < MIN_STEPS or time.perf_counter() - started < MIN_SECONDS:
        loop_step()
        steps += 1
    wall = time.perf_counter() - started
    rate = (decoded[0] - counted) / wall
    stop.set()
    for worker in workers:
        worker.join()
    return 1000 * wall / steps, rate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1, 4, 16])
    parser.add_argument("--processes", type=int, default=2, help="decoding processes")
    args = parser.parse_args(argv)
    data = CLIP.read_bytes()
    print(f"{'decoding':26s} {'threads':>7s} {'loop step ms':>12s} {'uploads/s':>9s}")
    in_thread = AudioDecoder(0)
    in_processes = AudioDecoder(args.processes)
    try:
        for threads in args.threads:
            for label, decoder in (
                ("in the request threads", in_thread),
                (f"in {args.processes} processes", in_processes),
            ):
                step_ms, rate = measure(threads, decoder, data)
                print(f"{label:26s} {threads:7d} {step_ms:12.2f} {rate:9.1f}", flush=True)
                if not threads:
                    break
    finally:
        in_processes.close()


if __name__ == "__main__":
    main()
