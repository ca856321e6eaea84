"""Where a served batch's time goes: py-spy on `voicefleet serve` under a closed-loop load.

Issue 8's HTTP rows top out near 110 requests/s whatever the upload format, the number of
GPUs or the client processes, while the engine in-process does twice that. This samples the
server process (every thread, and the decoding processes with --subprocesses) while N
clients upload the benchmark's speech, then prints each thread's busy share and its
costliest frames: once sampling only the thread that holds the interpreter lock, once
every thread.

    python bench/server_profile.py --model DIR [--device cuda] [--clients 64] [--seconds 15]

Needs py-spy (a wheel; it attaches with ptrace, so the machine must allow that).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching_engines import EngineFactory
from gpu_batching_http import ClientPool, ServedModel
from speech_corpus import as_wav, load_corpus

SAMPLES_PER_SECOND = 100
OWN_CODE = ("voicefleet", "starlette", "fastapi", "uvicorn", "multipart", "anyio", "asyncio")
"""Frames named by these are the ones a thread's samples are charged to (its deepest one)."""


def summarise(raw: Path, seconds: float, top: int) -> None:
    """Per thread: samples (as a share of the window) and the frames they were charged to."""
    per_thread: collections.Counter[str] = collections.Counter()
    frames: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        threads = [i for i, part in enumerate(parts) if part.startswith("thread (")]
        if not threads or not count.isdigit():
            continue
        # "process N: ...;thread (id): name;frame;..." (no process part without --subprocesses)
        thread = ";".join(parts[: threads[0] + 1])[-90:]
        per_thread[thread] += int(count)
        rest = parts[threads[0] + 1 :]
        ours = [frame for frame in rest if any(name in frame for name in OWN_CODE)]
        frames[thread][(ours[-1] if ours else rest[-1] if rest else "?")[:110]] += int(count)
    window = seconds * SAMPLES_PER_SECOND
    for thread, samples in per_thread.most_common(top):
        print(f"{100 * samples / window:6.1f}% busy  {thread}")
        for frame, hits in frames[thread].most_common(6):
            print(f"          {100 * hits / window:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="float16")
    parser.add_argument("--jfk", type=Path)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=16, help="threads to list")
    parser.add_argument("--py-spy", help="the py-spy program (default: on PATH, or the venv's)")
    parser.add_argument("--out", type=Path, default=Path("server_profile"), help="raw stacks")
    parser.add_argument(
        "--api-processes", type=int, default=1, help="VOICEFLEET_API_PROCESSES; each is sampled"
    )
    parser.add_argument(
        "--wav", action="store_true", help="upload 16 kHz WAV (no Opus decoding or resampling)"
    )
    args = parser.parse_args()
    py_spy = args.py_spy or shutil.which("py-spy") or str(Path(sys.prefix) / "bin" / "py-spy")
    clips = load_corpus(args.jfk)
    if args.wav:
        clips = [as_wav(clip) for clip in clips]
    settings = EngineFactory(args.device, args.precision, {}).server_env()  # the HTTP rows'
    settings["VOICEFLEET_API_PROCESSES"] = str(args.api_processes)
    with ServedModel(args.model, args.device, args.precision, args.clients, 1, settings) as server:
        pool = ClientPool(server.url, [clips], args.clients)
        try:
            server.transcribe(clips[0])
            pool.closed_loop(args.clients, 2 * args.clients, 5.0)  # warm: kernels, graphs
            processes = {server.pid: "the server" if args.api_processes == 1 else "engine"}
            processes |= {pid: "API process" for pid in spawned_children(server.pid)}
            results = []
            for view in ("--gil", "--idle"):
                # --gil: only the thread holding the interpreter lock is sampled; --idle: every
                # thread, waiting or not (its share of waits shows where requests queue).
                spies = [
                    subprocess.Popen(spy_command(py_spy, pid, view, args.seconds, args.out))
                    for pid in processes
                ]
                started = time.perf_counter()
                result = pool.closed_loop(args.clients, 100_000, args.seconds)
                for spy in spies:
                    spy.wait()
                results.append((view, result, time.perf_counter() - started))
        finally:
            pool.close()
    for view, result, wall in results:
        print(
            f"\n== py-spy {view}: {args.clients} clients, {args.api_processes} API process(es), "
            f"{len(result.latencies)} requests in {wall:.1f} s "
            f"({len(result.latencies) / wall:.1f}/s, {result.audio_seconds / wall:.0f} audio s/s)"
        )
        for pid, role in processes.items():
            print(f"-- {role} (pid {pid})")
            summarise(Path(f"{args.out}{view}-{pid}"), args.seconds, args.threads)


def spawned_children(pid: int) -> list[int]:
    """The API processes multiprocessing spawned under `pid` (VOICEFLEET_API_PROCESSES > 1)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            spawned = b"multiprocessing.spawn" in (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and spawned:
            children.append(int(entry.name))
    return children


def spy_command(py_spy: str, pid: int, view: str, seconds: float, out: Path) -> list[str]:
    command = [py_spy, "record", "--pid", str(pid), "--threads", view]
    command += ["--rate", str(SAMPLES_PER_SECOND), "--duration", str(round(seconds))]
    return [*command, "--nonblocking", "--format", "raw", "--output", f"{out}{view}-{pid}"]


if __name__ == "__main__":
    main()
