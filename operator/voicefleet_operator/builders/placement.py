"""Where pods run: the primary GPU choice and its ordered fallbacks, as plain candidates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from voicefleet_operator.crd.models import VoiceServiceSpec

CPU = "cpu"
ANY_GPU = "any"


@dataclass(frozen=True)
class Placement:
    """One candidate of [spec.gpu, *spec.gpu.fallbacks] (or the CPU of a CPU service)."""

    gpu: bool
    gpu_type: str | None
    """Value of the nvidia.com/gpu.product node label, None for any GPU or CPU."""
    resource_name: str | None
    count: int
    precision: str

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    @property
    def label(self) -> str:
        """How status and printer columns name it: a product, any, or cpu."""
        if not self.gpu:
            return CPU
        return self.gpu_type or ANY_GPU


def placement_candidates(spec: VoiceServiceSpec) -> list[Placement]:
    if spec.gpu is None:
        return [Placement(False, None, None, 0, spec.precision)]
    gpu = spec.gpu
    candidates = [Placement(True, gpu.type, gpu.resource_name, gpu.count, spec.precision)]
    for fallback in gpu.fallbacks:
        if fallback.cpu is not None:
            candidates.append(Placement(False, None, None, 0, fallback.cpu.precision))
        else:
            candidates.append(
                Placement(
                    True,
                    fallback.type,
                    fallback.resource_name or gpu.resource_name,
                    gpu.count,
                    spec.precision,
                )
            )
    return candidates


def placement_for(spec: VoiceServiceSpec, candidate: int) -> Placement:
    """The candidate at `candidate`, clamped so a shortened fallback list never breaks a build."""
    candidates = placement_candidates(spec)
    return candidates[max(0, min(candidate, len(candidates) - 1))]


def choose_fallback(
    spec: VoiceServiceSpec,
    *,
    current: int,
    unschedulable_since: datetime | None,
    now: datetime,
) -> int:
    """The candidate to use next: advance one step once pods stayed unschedulable long enough.

    The operator tracks `unschedulable_since` (None while pods schedule); it never goes back to
    an earlier candidate on its own, because flapping between GPU types restarts every pod.
    Editing the spec's gpu section is how a person asks for the first choice again.
    """
    last = len(placement_candidates(spec)) - 1
    current = max(0, min(current, last))
    if spec.gpu is None or unschedulable_since is None or current == last:
        return current
    waited = (now - unschedulable_since).total_seconds()
    return current + 1 if waited >= spec.gpu.fallback_after_seconds else current
