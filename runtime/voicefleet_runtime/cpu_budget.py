"""How many cores the torch engine's continuous batching keeps busy: one for the server, one per
upload-decoding process. What `decode_processes=auto` starts, and what the operator sizes a GPU
pod's CPU request and its VOICEFLEET_DECODE_PROCESSES from.

Pure (no imports beyond the standard library) so the operator can use it.
"""

from __future__ import annotations

AUTO_MAX_DECODE_PROCESSES = 8
"""The most upload-decoding processes `decode_processes=auto` starts (audio_workers.py): 8
decode about 3,900 audio seconds a second of the GPU benchmark's uploads (488 per core in
bench/decode_cost.py), near the 4,600 an H200 transcribes with tiny.en in-process."""
SERVER_CPUS = 1
"""The HTTP server and every GPU's batching loop run in one process and share its interpreter
lock: together they keep about one core busy, however many GPUs there are."""


def decode_processes_for(cpus: int) -> int:
    """`decode_processes=auto` on `cpus` CPUs: one per CPU but the server's, at least one (a
    single core still keeps the decoding off the loop's interpreter), at most 8."""
    return min(AUTO_MAX_DECODE_PROCESSES, max(1, cpus - SERVER_CPUS))
