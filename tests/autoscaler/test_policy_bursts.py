"""Bursts: the panic target, its rate limit, and what is left once the backlog is gone."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from tests.autoscaler.autoscaler_observations import ready_pods, sample, spread
from voicefleet_operator.autoscaler.policy import (
    Observation,
    PodState,
    Policy,
    RateLimit,
    decide,
)

TICK = 5.0
SLOTS = 2
POLICY = Policy(max_replicas=50, target_queue_depth_per_replica=2.0)


def _rush(ticks: int, replicas: int, arrivals: float) -> list[Observation]:
    """2 ready pods, both slots busy (4 slot-seconds/s of 1 s jobs), `arrivals` slot-seconds
    arriving per second: the backlog grows by the rest."""
    history = []
    for t in range(ticks):
        seconds = t * TICK
        backlog = 4.0 + (arrivals - 4.0) * seconds
        samples = tuple(
            sample(
                f"pod-{i}",
                queued=(backlog - 4.0) / 2,
                running=2,
                concurrency=SLOTS,
                busy=2.0 * seconds,
                jobs=2.0 * seconds,
            )
            for i in range(2)
        )
        history.append(Observation(seconds, replicas, samples, replicas))
    return history


def _starting(count: int, since: float, prefix: str = "new") -> list[PodState]:
    return [PodState(f"{prefix}-{i}", "starting", since) for i in range(count)]


def test_a_burst_orders_for_arrivals_and_the_backlog_expected_when_pods_serve() -> None:
    # At 30 s: 14 slot-seconds/s arrive, 4 are served, 300 requests of 1 s wait, and the 4
    # pods ordered at 0 s serve at 60 s (startupSeconds): 300 + 10 * 30 = 600 slot-seconds
    # will wait then. Arrivals need 14 / (2 * 0.7) = 10 replicas; draining 600 slot-seconds
    # in 30 s takes 600 / (2 * 30) = 10 more.
    history = _rush(7, replicas=6, arrivals=14.0)
    decision = decide(POLICY, history, [*ready_pods(2), *_starting(4, 0.0)], 30.0)
    assert decision.panic
    assert decision.burst
    assert decision.metrics["arrivalReplicas"] == pytest.approx(10.0)
    assert decision.metrics["backlogAtReliefSlotSeconds"] == pytest.approx(600.0)
    assert decision.desired == 20
    assert decision.lasting_recommendation == 10  # what the arrivals need, not the drain


@pytest.mark.parametrize("now", [35.0, 50.0, 80.0], ids=["on-time", "later", "overdue"])
def test_the_same_burst_projects_the_same_backlog_on_every_tick(now: float) -> None:
    # The 20 ordered at 30 s have not served yet (the first 4 are even overdue at 80 s): the
    # backlog has grown, the wait left has shrunk as much, and nothing more is ordered.
    ticks = int(now / TICK) + 1
    history = [replace(o, replicas=20 if o.time > 30 else 6) for o in _rush(ticks, 6, 14.0)]
    pods = [*ready_pods(2), *_starting(4, 0.0), *_starting(14, 30.0, "later")]
    decision = decide(POLICY, history, pods, now)
    assert decision.metrics["backlogAtReliefSlotSeconds"] == pytest.approx(600.0)
    assert decision.desired == 20


def test_the_panic_limit_replaces_the_normal_one_only_in_a_burst() -> None:
    policy = Policy(
        max_replicas=100,
        target_queue_depth_per_replica=1.0,
        scale_up=RateLimit(pods=2, percent=50, period_seconds=15),
        panic_scale_up=RateLimit(pods=5, percent=100, period_seconds=15),
    )
    history = [spread(t * TICK, 4, 4, in_system=80.0, recommendation=4) for t in range(8)]
    decision = decide(policy, history, ready_pods(4), history[-1].time)
    assert decision.panic
    assert decision.desired == 9  # max(4 * 2, 4 + 5)
    assert "panic scale-up rate limit (5 pods or 100% per 15s)" in decision.reason
    calm = replace(policy, panic_threshold=100.0)
    decision = decide(calm, history, ready_pods(4), history[-1].time)
    assert not decision.panic
    assert decision.desired == 6  # max(4 * 1.5, 4 + 2)


def test_a_noisy_queue_on_one_pod_orders_no_more_than_it_shows() -> None:
    # One pod, 1.85 slot-seconds/s of 1 s jobs (1.32 replicas at 70%), half a request
    # waiting: the burst window (2.5 in system = 1.25 replicas) panics, but no backlog worth
    # a pod is coming, so the load it shows, within tolerance of 1, is what counts.
    history = [
        Observation(
            t * TICK,
            1,
            (sample("pod-0", queued=0.5, running=2, busy=1.85 * t * TICK, jobs=1.85 * t * TICK),),
            1,
        )
        for t in range(40)
    ]
    decision = decide(POLICY, history, ready_pods(1), history[-1].time)
    assert decision.panic
    assert not decision.burst
    assert decision.metrics["arrivalReplicas"] > 1.25
    assert decision.desired == 1


class _Fleet:
    """A fluid fleet for closed-loop tests: 1 s jobs, 2 slots per pod, the GPU as busy as
    the slots, new pods serve `startup` seconds after they are ordered, removed pods go at
    once."""

    def __init__(self, replicas: int, startup: float) -> None:
        self.startup = startup
        self.ordered: list[float] = [-math.inf] * replicas
        self.backlog = 0.0
        self.served = 0.0

    def ready(self, now: float) -> int:
        return sum(1 for t in self.ordered if now - t >= self.startup)

    def pods(self, now: float) -> list[PodState]:
        return [
            PodState(f"pod-{i}", "ready" if now - t >= self.startup else "starting", t)
            for i, t in enumerate(self.ordered)
        ]

    def tick(self, now: float, arrivals: float) -> Observation:
        ready = self.ready(now)
        self.backlog += arrivals * TICK
        done = min(self.backlog, ready * SLOTS * TICK)
        self.backlog -= done
        self.served += done
        samples = tuple(
            sample(
                f"pod-{i}",
                queued=self.backlog / ready,
                running=done / TICK / ready,
                gpu=done / TICK / ready / SLOTS,
                concurrency=SLOTS,
                busy=self.served / ready,
                jobs=self.served / ready,
            )
            for i in range(ready)
        )
        return Observation(now, len(self.ordered), samples)

    def resize(self, now: float, replicas: int) -> None:
        if replicas > len(self.ordered):
            self.ordered += [now] * (replicas - len(self.ordered))
        else:
            del self.ordered[replicas:]


def test_a_burst_is_met_in_one_step_up_and_left_in_one_step_down() -> None:
    # 4 slot-seconds/s, then 14 from 300 s to 900 s; pods serve 60 s after the order.
    fleet = _Fleet(replicas=3, startup=60.0)
    history: list[Observation] = []
    trajectory = []
    for tick in range(int(1400 / TICK)):
        now = tick * TICK
        arrivals = 14.0 if 300 <= now < 900 else 4.0
        history.append(fleet.tick(now, arrivals))
        decision = decide(POLICY, history, fleet.pods(now), now)
        history[-1] = history[-1].with_recommendation(decision)
        fleet.resize(now, decision.desired)
        trajectory.append((now, decision.desired))
    replicas = [r for _, r in trajectory]
    steps = [(a, b) for a, b in itertools.pairwise([3, *replicas]) if a != b]
    # Up once for arrivals plus the backlog; down once to what the arrivals need (14 / 1.4
    # = 10; the first tick of the burst, half old load, half new, reads a little more),
    # once the backlog is gone; down once more after the burst.
    assert len(steps) == 3, steps
    (before, peak), (_, during), (_, after) = steps
    assert before == 3
    assert peak > 14  # more than the arrivals need: the backlog drains too
    assert during in (10, 11)
    assert after == 3
    assert fleet.backlog == pytest.approx(0.0)


def _rising(ticks: int, burst_at: int | None = None) -> list[Observation]:
    """Served work rising steadily on 4 pods with 2 slots, no backlog."""
    history = []
    busy_total = 0.0
    for tick in range(ticks):
        slots_busy = 2.0 + 0.02 * tick * TICK
        busy_total += slots_busy * TICK
        samples = tuple(
            sample(
                f"pod-{i}",
                running=slots_busy / 4,
                concurrency=SLOTS,
                busy=busy_total / 4,
                jobs=busy_total / 4,
            )
            for i in range(4)
        )
        history.append(Observation(tick * TICK, 4, samples, 4, burst=tick == burst_at))
    return history


def test_the_climb_after_a_burst_is_no_trend() -> None:
    policy = Policy(max_replicas=30, startup_seconds=60)
    plain = _rising(60)
    assert "trendReplicasPerMinute" in decide(policy, plain, ready_pods(4), 295.0).metrics
    after_burst = _rising(60, burst_at=40)
    decision = decide(policy, after_burst, ready_pods(4), 295.0)
    assert "trendReplicasPerMinute" not in decision.metrics


def test_a_trend_needs_half_its_window_of_history() -> None:
    # 100 s of a rising load after a restart: too short for a 300 s trend window, enough
    # for a 120 s one.
    history = _rising(20)
    now = history[-1].time
    short = decide(Policy(max_replicas=30), history, ready_pods(4), now)
    assert "trendReplicasPerMinute" not in short.metrics
    window = Policy(max_replicas=30, trend_window_seconds=120)
    assert "trendReplicasPerMinute" in decide(window, history, ready_pods(4), now).metrics
