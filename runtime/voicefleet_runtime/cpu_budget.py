"""How many cores the torch engine's continuous batching keeps busy: one for the server, one per
upload-decoding process. What `decode_processes=auto` starts, and what the operator sizes a GPU
pod's CPU request and its VOICEFLEET_DECODE_PROCESSES from.

Pure (no imports beyond the standard library) so the operator can use it.
"""

from __future__ import annotations

AUTO_MAX_DECODE_PROCESSES = 16
"""The most upload-decoding processes `decode_processes=auto` starts (audio_workers.py): 16
decode about 7,800 audio seconds a second of the GPU benchmark's Opus uploads (488 per core in
bench/decode_cost.py), near the ~9,000 an H200 transcribes with tiny.en in-process. At 8 the
decoding bounded the served rate on a 16-core host: Opus at 64 clients read 0.75x HF's batch
of 64, and 1.07x with 14 processes (bench/results/batching-notes.md, runs 36-37)."""
SERVER_CPUS = 1
"""The HTTP server and every GPU's batching loop run in one process and share its interpreter
lock: together they keep about one core busy, however many GPUs there are."""


def decode_processes_for(cpus: int) -> int:
    """`decode_processes=auto` on `cpus` CPUs: one per CPU but the server's, at least one (a
    single core still keeps the decoding off the loop's interpreter), at most
    AUTO_MAX_DECODE_PROCESSES."""
    return min(AUTO_MAX_DECODE_PROCESSES, max(1, cpus - SERVER_CPUS))
