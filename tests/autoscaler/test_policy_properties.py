"""Properties of `decide` over generated policies, histories and pods (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.autoscaler.autoscaler_observations import ready_pods, spread
from voicefleet_operator.autoscaler.policy import (
    Observation,
    PodPhase,
    PodSample,
    PodState,
    Policy,
    RateLimit,
    decide,
)

TICK = 5.0
PHASES: tuple[PodPhase, ...] = ("ready", "ready", "starting", "unready")
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    minimum = draw(st.integers(0, 5))
    return Policy(
        min_replicas=minimum,
        max_replicas=draw(st.integers(max(minimum, 1), 12)),
        target_queue_depth_per_replica=draw(st.floats(0.5, 8.0)),
        target_utilization=draw(st.none() | st.floats(0.3, 1.0)),
        tolerance=draw(st.floats(0.0, 0.3)),
        stable_window_seconds=draw(st.sampled_from([30.0, 60.0])),
        burst_window_seconds=draw(st.sampled_from([6.0, 10.0])),
        panic_threshold=draw(st.floats(1.0, 3.0)),
        scale_up=RateLimit(
            draw(st.integers(1, 10)), draw(st.floats(10, 300)), draw(st.sampled_from([15.0, 30.0]))
        ),
        panic_scale_up=RateLimit(
            draw(st.integers(1, 100)), draw(st.floats(10, 1000)), draw(st.sampled_from([5.0, 15.0]))
        ),
        panic_drain_seconds=draw(st.sampled_from([10.0, 30.0, 120.0])),
        startup_seconds=draw(st.sampled_from([0.0, 30.0, 60.0])),
        scale_down=RateLimit(
            draw(st.integers(1, 10)), draw(st.floats(10, 100)), draw(st.sampled_from([15.0, 60.0]))
        ),
        scale_down_stabilization_seconds=draw(st.sampled_from([0.0, 60.0, 300.0])),
    )


@st.composite
def pod_samples(draw: st.DrawFn, name: str, tick: int) -> PodSample:
    if draw(st.integers(0, 9)) == 0:
        return PodSample.failed(name, "ConnectError")
    busy_rate = draw(st.floats(0, 4))
    return PodSample(
        pod=name,
        ok=True,
        queued=draw(st.integers(0, 40)),
        running=draw(st.integers(0, 4)),
        concurrency=draw(st.sampled_from([1.0, 2.0, 4.0])),
        gpu_utilization=draw(st.none() | st.floats(0, 1)),
        busy_seconds_total=busy_rate * TICK * tick,
        jobs_total=float(tick * draw(st.integers(0, 3))),
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[Policy, list[Observation], list[PodState], float]:
    """A policy, a random history within its bounds, and the pods as they are now."""
    policy = draw(policies())
    length = draw(st.integers(1, 12))
    history: list[Observation] = []
    for tick in range(length):
        replicas = draw(st.integers(policy.min_replicas, policy.max_replicas))
        names = [f"pod-{i}" for i in range(replicas)]
        samples = tuple(draw(pod_samples(name, tick)) for name in names)
        recommendation = draw(st.none() | st.integers(policy.min_replicas, policy.max_replicas))
        burst = draw(st.booleans())
        history.append(Observation(tick * TICK, replicas, samples, recommendation, burst))
    current = history[-1].replicas
    phases = draw(
        st.lists(
            st.sampled_from(PHASES),
            min_size=current,
            max_size=current,
        )
    )
    pods = [PodState(f"pod-{i}", phase, 0.0) for i, phase in enumerate(phases)]
    return policy, history, pods, history[-1].time


@FAST
@given(situations())
def test_bounds_always_hold(
    situation: tuple[Policy, list[Observation], list[PodState], float],
) -> None:
    policy, history, pods, now = situation
    decision = decide(policy, history, pods, now)
    assert policy.floor_at(now) <= decision.desired <= policy.max_replicas
    assert decision.current == history[-1].replicas
    assert decision.reason


@FAST
@given(situations())
def test_rates_are_respected(
    situation: tuple[Policy, list[Observation], list[PodState], float],
) -> None:
    policy, history, pods, now = situation
    decision = decide(policy, history, pods, now)
    current = decision.current

    def ceiling(limit: RateLimit) -> int:
        period = [o.replicas for o in history if o.time > now - limit.period_seconds]
        base = min([*period, current])
        return max(math.ceil(base * (1 + limit.percent / 100) - 1e-9), base + limit.pods)

    if decision.desired > max(current, policy.floor_at(now)):
        # The panic limit is a rate too: it applies only while the burst window decides.
        allowed = ceiling(policy.scale_up)
        if decision.panic:
            allowed = max(allowed, ceiling(policy.panic_scale_up))
        assert decision.desired <= max(allowed, current)
    if decision.desired < min(current, policy.max_replicas):
        period = [o.replicas for o in history if o.time > now - policy.scale_down.period_seconds]
        base = max([*period, current])
        floor = min(
            math.floor(base * (1 - policy.scale_down.percent / 100) + 1e-9),
            base - policy.scale_down.pods,
        )
        assert decision.desired >= floor


@FAST
@given(situations())
def test_panic_only_when_the_burst_window_reaches_the_threshold(
    situation: tuple[Policy, list[Observation], list[PodState], float],
) -> None:
    policy, history, pods, now = situation
    decision = decide(policy, history, pods, now)
    if decision.panic:
        capacity = max(decision.current, 1)
        # The metric is rounded to 3 decimals.
        assert decision.metrics["burstLoadReplicas"] >= policy.panic_threshold * capacity - 1e-3
    assert decision.panic or not decision.burst


@FAST
@given(situations(), st.data())
def test_no_scale_down_on_missing_data(
    situation: tuple[Policy, list[Observation], list[PodState], float], data: st.DataObject
) -> None:
    policy, history, pods, now = situation
    newest = history[-1]
    ready = [p.name for p in pods if p.phase == "ready"]
    if not ready:
        return
    silent = data.draw(st.sampled_from(ready))
    samples = tuple(
        PodSample.failed(s.pod, "ReadTimeout") if s.pod == silent else s for s in newest.samples
    )
    history = [*history[:-1], Observation(newest.time, newest.replicas, samples)]
    decision = decide(policy, history, pods, now)
    assert decision.desired >= min(newest.replicas, policy.max_replicas)
    assert silent in decision.reason


def closed_loop(policy: Policy, in_system: float, start: int, ticks: int) -> list[int]:
    """Constant load on a fleet whose pods are ready at once: the replicas, tick by tick."""
    history: list[Observation] = []
    replicas = start
    trajectory = []
    for tick in range(ticks):
        now = tick * TICK
        history.append(spread(now, replicas, replicas, in_system))
        decision = decide(policy, history, ready_pods(replicas), now)
        history[-1] = history[-1].with_recommendation(decision)
        replicas = decision.desired
        trajectory.append(replicas)
        del history[:-100]  # the timer keeps a bounded history too
    return trajectory


@settings(max_examples=40, deadline=None)
@given(policies(), st.floats(0.0, 120.0), st.integers(1, 30))
def test_constant_load_settles_and_never_flaps(
    policy: Policy, in_system: float, start: int
) -> None:
    start = min(max(start, policy.min_replicas, 1), policy.max_replicas)
    # Long enough to wait out the stabilisation window and walk down at the slowest rate.
    slowest_steps = math.ceil(policy.max_replicas / policy.scale_down.pods) + 1
    walk = slowest_steps * policy.scale_down.period_seconds
    ticks = int((policy.scale_down_stabilization_seconds + walk) / TICK) + 30
    trajectory = closed_loop(policy, in_system, start, ticks)
    # Monotone: it moves one way towards its level, never up then down (or back).
    steps = [b - a for a, b in zip([start, *trajectory], trajectory, strict=False) if b != a]
    assert all(s > 0 for s in steps) or all(s < 0 for s in steps)
    # And it has arrived: the last 20 ticks (100 s) hold one value.
    assert len(set(trajectory[-20:])) == 1
