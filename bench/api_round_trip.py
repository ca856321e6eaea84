"""A small request's round trip through `voicefleet serve`, by API process count.

What a request costs the HTTP layer alone: GET /v1/models and /metrics, one after another on
one keep-alive connection, against a server with one process and one with several API
processes (VOICEFLEET_API_PROCESSES), in the same run. The two should be alike. Before the API
processes' sockets were declared TCP (api_processes.listening_sockets), every response of the
several-process server waited ~40 ms for the client's delayed ACK (Nagle's algorithm was on):
44.0 ms against 0.8 ms with one process for /v1/models on the 2-core machine
(bench/results/api_round_trip-cpu2.txt).

    python bench/api_round_trip.py [--model tiny.en] [--processes 1 2] [--requests 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching_engines import EngineFactory
from gpu_batching_http import ServedModel

from voicefleet_runtime.engine.models import resolve_model

PATHS = ("/v1/models", "/metrics")


def round_trips_ms(url: str, path: str, requests: int) -> list[float]:
    times = []
    with httpx.Client() as client:
        client.get(url + path).raise_for_status()  # the connection, opened outside the timing
        for _ in range(requests):
            started = time.perf_counter()
            client.get(url + path).raise_for_status()
            times.append(1000 * (time.perf_counter() - started))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny.en", help="a model name or folder")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    model = resolve_model(args.model, None)
    # gpu_batching.py's HTTP rows' settings on a CPU: the batched engine, a remote one behind
    # several API processes.
    cpu_server = EngineFactory("cpu", "float32", {}).server_env()
    for processes in args.processes:
        env = cpu_server | {"VOICEFLEET_API_PROCESSES": str(processes)}
        with ServedModel(model.path, "cpu", "float32", 4, 1, env) as server:
            for path in PATHS:
                times = round_trips_ms(server.url, path, args.requests)
                print(
                    f"{processes} API process(es) {path:<11} p50 {statistics.median(times):6.2f} ms"
                    f"  max {max(times):6.2f} ms  ({args.requests} requests)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
