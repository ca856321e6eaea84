"""Small constructors for observations, so each test states only what matters to it."""

from __future__ import annotations

from voicefleet_operator.autoscaler.policy import Observation, PodSample, PodState


def ready_pods(count: int, since: float = 0.0) -> list[PodState]:
    return [PodState(f"pod-{i}", "ready", since) for i in range(count)]


def sample(
    pod: str,
    queued: float = 0.0,
    running: float = 0.0,
    concurrency: float = 2.0,
    gpu: float | None = None,
    busy: float | None = None,
    jobs: float | None = None,
) -> PodSample:
    return PodSample(
        pod=pod,
        ok=True,
        queued=queued,
        running=running,
        concurrency=concurrency,
        gpu_utilization=gpu,
        busy_seconds_total=busy,
        jobs_total=jobs,
    )


def spread(
    time: float, replicas: int, pods: int, in_system: float, recommendation: int | None = None
) -> Observation:
    """`in_system` requests spread evenly over `pods` ready pods, running before queueing."""
    each = in_system / pods if pods else 0.0
    samples = tuple(
        sample(f"pod-{i}", queued=max(0.0, each - 2.0), running=min(each, 2.0)) for i in range(pods)
    )
    return Observation(time, replicas, samples, recommendation)
