"""What receiving a transcription call costs the engine process, by sample format.

With several API processes (runtime/voicefleet_runtime/api_processes.py), every upload's
samples cross a local socket to the engine process, whose threads receive them under the
interpreter lock that the batching loop needs for each decode step. This sends the real call
message (`engine.remote.Transcribe`) of the bench corpus's clip length, as 16-bit samples
(what the server sends) and as float32 (what it sent before), from another process, and times
the receiving thread's CPU per call: both in one run, so the ratio holds on a noisy host.

    python bench/engine_hop.py [--seconds 20] [--calls 300]
"""

from __future__ import annotations

import argparse
import secrets
import time
from multiprocessing import get_context
from multiprocessing.connection import Client, Connection, Listener

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import SAMPLE_RATE, DecodeOptions, pcm16_to_float
from voicefleet_runtime.engine.remote import FAMILY, Transcribe

FORMATS = ("int16", "float32")


def samples(seconds: float, dtype: str) -> NDArray[np.float32] | NDArray[np.int16]:
    count = int(seconds * SAMPLE_RATE)
    pcm: NDArray[np.int16] = np.random.default_rng(0).integers(-3000, 3000, count, np.int16)
    return pcm if dtype == "int16" else pcm16_to_float(pcm)


def send_calls(address: str, authkey: bytes, seconds: float, dtype: str, calls: int) -> None:
    connection = Client(address, family=FAMILY, authkey=authkey)
    call = Transcribe(DecodeOptions(), samples(seconds, dtype))
    for _ in range(calls):
        connection.send(call)
        connection.recv()
    connection.close()


def receive_cpu_ms(connection: Connection, calls: int) -> tuple[float, float]:
    """(CPU ms, wall ms) of this thread per call received, the float32 scaling included."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(calls):
        call = connection.recv()
        call.engine_audio()
        connection.send(None)
    return (
        (time.thread_time() - cpu) * 1000 / calls,
        (time.perf_counter() - wall) * 1000 / calls,
    )


def measure(seconds: float, dtype: str, calls: int) -> tuple[float, float]:
    authkey = secrets.token_bytes(32)
    address = f"\0voicefleet-engine-hop-{secrets.token_hex(8)}"
    with Listener(address, family=FAMILY, authkey=authkey) as listener:
        sender = get_context("spawn").Process(
            target=send_calls, args=(address, authkey, seconds, dtype, calls)
        )
        sender.start()
        with listener.accept() as connection:
            figures = receive_cpu_ms(connection, calls)
        sender.join()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per call")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {dtype: [] for dtype in FORMATS}
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        for dtype in FORMATS:
            cpu_ms, wall_ms = measure(args.seconds, dtype, args.calls)
            results[dtype].append(cpu_ms)
            print(f"{dtype:>8}: {cpu_ms:.3f} CPU ms per call received ({wall_ms:.3f} wall ms)")
    best = {dtype: min(values) for dtype, values in results.items()}
    print(
        f"{args.seconds:.0f} s of audio per call, best of {args.rounds}: int16 "
        f"{best['int16']:.3f} CPU ms, float32 {best['float32']:.3f} CPU ms "
        f"(float32 / int16 = {best['float32'] / best['int16']:.1f}x)"
    )


if __name__ == "__main__":
    main()
