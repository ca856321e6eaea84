"""The runtime container's cores: a GPU pod's default CPU request, and the engine threads and
upload-decoding processes that follow from the CPUs a pod gets.

On a GPU the torch engine's continuous batching runs the HTTP server and every GPU's loop in one
process, which keeps about one core busy. Uploads are decoded in worker processes next to it:
decoding them in the request threads held the interpreter lock the loop needs after every wait
on the GPU (README, continuous batching: 87 audio s/s instead of 1362 at 64 clients). Those
processes need cores of their own. The runtime's `auto` counts the CPUs the process may use,
and with no CPU limit that is every core of the node: a pod that requested no CPU started as
many decoding processes as `auto` allows on cores nobody had given it, and could be packed onto
a node with none to spare. So a GPU pod requests its cores, and its process count is rendered
from them.
"""

from __future__ import annotations

import math

from voicefleet_operator.builders.placement import Placement
from voicefleet_operator.crd.models import VoiceServiceSpec
from voicefleet_operator.crd.quantity import parse_quantity
from voicefleet_runtime.cpu_budget import (
    AUTO_MAX_DECODE_PROCESSES,
    SERVER_CPUS,
    decode_processes_for,
)

DECODE_PROCESSES_ENV = "VOICEFLEET_DECODE_PROCESSES"
CPU_THREADS_ENV = "VOICEFLEET_CPU_THREADS"
DECODE_PROCESSES_PER_GPU = 2
"""One process decodes about ten 20 s uploads a second (an H200 host): two per GPU keep up with
about 400 audio seconds a second, and the request that follows, 1 + 2 = 3 CPUs, still fits the
clouds' smallest one-GPU nodes (4 vCPUs: AWS g5.xlarge and g6.xlarge, GCP g2-standard-4) beside
their daemons. A GPU that transcribes more (an H200 with tiny.en: ~9k audio s/s) needs a larger
runtime.resources.requests.cpu; the process count follows it."""


def decodes_in_processes(spec: VoiceServiceSpec, placement: Placement) -> bool:
    """Speech-to-text by the torch engine on a GPU: its continuous batching shares the server's
    process, so the runtime decodes uploads in processes (audio_workers.py's `auto`)."""
    return placement.gpu and spec.engine == "torch" and spec.model is not None


def cpus_given(spec: VoiceServiceSpec) -> int | None:
    """Whole CPUs the spec grants the container (its limit, else its request); None: no CPU."""
    resources = spec.runtime.resources
    quantity = resources.limits.get("cpu") or resources.requests.get("cpu")
    if quantity is None:
        return None
    return max(1, math.floor(parse_quantity(quantity)))


def _env_setting(spec: VoiceServiceSpec, name: str) -> str | None:
    """The spec's own value of an env variable ("" for one from a secret or config map)."""
    for variable in spec.runtime.env:
        if variable.name == name:
            return variable.value if variable.value is not None else ""
    return None


def decode_processes(spec: VoiceServiceSpec, placement: Placement) -> int:
    """The upload-decoding processes the runtime will start: the spec's env setting where it has
    one (the most `auto` may start where it is not a number), else one per CPU the pod gets but
    the server's, else DECODE_PROCESSES_PER_GPU per GPU; none where the engine does not batch."""
    setting = _env_setting(spec, DECODE_PROCESSES_ENV)
    if setting is not None:
        return int(setting) if setting.isdigit() else AUTO_MAX_DECODE_PROCESSES
    if not decodes_in_processes(spec, placement):
        return 0
    cpus = cpus_given(spec)
    if cpus is not None:
        return decode_processes_for(cpus)
    return min(AUTO_MAX_DECODE_PROCESSES, DECODE_PROCESSES_PER_GPU * placement.count)


def default_cpu_request(spec: VoiceServiceSpec, placement: Placement) -> str | None:
    """A GPU pod's CPU request where the spec sets no CPU: the server's core plus one per
    decoding process, and one per API process where the spec asks for several (the server's
    core is then the engine process's). CPU pods get none (there the spec's CPUs set the
    engine's threads)."""
    if not placement.gpu or cpus_given(spec) is not None:
        return None
    serving = spec.api_processes()
    api_cpus = serving if serving > 1 else 0
    return str(SERVER_CPUS + api_cpus + decode_processes(spec, placement))


def cpu_env(spec: VoiceServiceSpec, placement: Placement) -> dict[str, str]:
    """The runtime settings that follow the pod's CPUs, where the spec's env does not set them:
    a CPU engine's threads, and a batching engine's decoding processes."""
    env: dict[str, str] = {}
    cpus = cpus_given(spec)
    if not placement.gpu and cpus is not None and _env_setting(spec, CPU_THREADS_ENV) is None:
        # More engine threads than whole CPUs granted only thrash.
        env[CPU_THREADS_ENV] = str(cpus)
    if decodes_in_processes(spec, placement) and _env_setting(spec, DECODE_PROCESSES_ENV) is None:
        env[DECODE_PROCESSES_ENV] = str(decode_processes(spec, placement))
    return env
