"""The decision function, case by case: each row is one behaviour the issue asks for."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from tests.autoscaler.autoscaler_observations import ready_pods, sample, spread
from voicefleet_operator.autoscaler.policy import (
    Observation,
    PodSample,
    PodState,
    Policy,
    RateLimit,
    ScheduledMinimum,
    decide,
    deletion_costs,
)

POLICY = Policy(min_replicas=1, max_replicas=20, target_queue_depth_per_replica=2.0)
TICK = 5.0


def steady_history(replicas: int, in_system: float, ticks: int = 12) -> list[Observation]:
    return [spread(i * TICK, replicas, replicas, in_system, replicas) for i in range(ticks)]


def test_load_within_tolerance_holds() -> None:
    history = steady_history(4, in_system=8.5)  # 4.25 replicas of demand: within 10% of 4
    decision = decide(POLICY, history, ready_pods(4), history[-1].time)
    assert (decision.desired, decision.scales) == (4, False)
    assert decision.reason.startswith("hold 4->4")


def test_queue_demand_scales_up_to_the_target_per_replica() -> None:
    history = steady_history(2, in_system=12.0)  # 12 requests, 2 per replica: 6 replicas
    decision = decide(POLICY, history, ready_pods(2), history[-1].time)
    assert decision.desired == 6
    assert "queue demand 6.00" in decision.reason
    assert decision.metrics["queuedAndRunning"] == 12


def test_gpu_reading_full_while_one_slot_of_four_runs_is_not_pressure() -> None:
    # NVML says 100% on every pod although each runs 1 request in 4 slots: HPA on GPU
    # utilisation would ask for ceil(4 * 1.0 / 0.7) = 6 replicas here.
    history = [
        Observation(
            t * TICK,
            4,
            tuple(sample(f"pod-{i}", running=1, concurrency=4, gpu=1.0) for i in range(4)),
            4,
        )
        for t in range(8)
    ]
    decision = decide(POLICY, history, ready_pods(4), history[-1].time)
    assert decision.recommendation == 2  # 4 requests at 2 per replica; the GPU adds nothing
    assert decision.desired <= 4
    assert decision.metrics["gpuPressureReplicas"] == pytest.approx(4 * 0.25 / 0.7, abs=1e-3)


def test_gpu_pressure_wins_when_the_engine_is_busy_and_the_gpu_saturated() -> None:
    # Slots busy all the time (busy counter grows 2 slot-seconds per second) on a full GPU,
    # but few requests: GPU pressure, not queue demand, must drive the decision.
    history = [
        Observation(
            t * TICK,
            3,
            tuple(
                sample(f"pod-{i}", running=2, concurrency=2, gpu=1.0, busy=2 * TICK * t)
                for i in range(3)
            ),
            3,
        )
        for t in range(8)
    ]
    decision = decide(POLICY, history, ready_pods(3), history[-1].time)
    assert decision.desired == 5  # 3 pods at 100% / 0.7 target = 4.29 -> 5
    assert "GPU pressure" in decision.reason


def test_a_failed_scrape_never_lowers_replicas_and_says_which_pod() -> None:
    history = steady_history(4, in_system=0.0)
    failed = Observation(
        history[-1].time + TICK,
        4,
        (
            *(sample(f"pod-{i}") for i in range(3)),
            PodSample.failed("pod-3", "ConnectTimeout"),
        ),
    )
    decision = decide(POLICY, [*history, failed], ready_pods(4), failed.time)
    assert decision.desired == 4
    assert decision.held_for_missing_data
    assert "pod-3: ConnectTimeout" in decision.reason


def test_no_metrics_at_all_holds() -> None:
    observation = Observation(0.0, 3, tuple(PodSample.failed(f"pod-{i}", "500") for i in range(3)))
    decision = decide(POLICY, [observation], ready_pods(3), 0.0)
    assert decision.desired == 3
    assert decision.held_for_missing_data


def test_pods_all_starting_without_metrics_is_no_reason_to_scale_down() -> None:
    pods = [PodState(f"pod-{i}", "starting", 0.0) for i in range(3)]
    decision = decide(POLICY, [Observation(10.0, 3, ())], pods, 10.0)
    assert decision.desired == 3
    assert "no pod has reported metrics" in decision.reason


def test_one_failed_scrape_does_not_stall_a_scale_up() -> None:
    samples = (
        sample("pod-0", queued=8, running=2),
        sample("pod-1", queued=8, running=2),
        PodSample.failed("pod-2", "ReadTimeout"),
    )
    history = [Observation(t * TICK, 3, samples, 3) for t in range(8)]
    decision = decide(POLICY, history, ready_pods(3), history[-1].time)
    assert decision.desired == 10  # 20 requests seen on the pods that answered: 10 replicas
    assert "pod-2: ReadTimeout" in decision.reason


def test_pods_on_the_way_without_an_arrival_rate_order_nothing_more() -> None:
    # 2 ready pods with a growing backlog, 4 more ordered and starting: no cascade.
    pods = [*ready_pods(2), *(PodState(f"new-{i}", "starting", 0.0) for i in range(4))]
    history = [spread(t * TICK, 6, 2, in_system=10.0 + 10 * t) for t in range(6)]
    decision = decide(POLICY, history, pods, history[-1].time)
    assert decision.desired == 6
    assert "4 pods on the way" in decision.reason


def _backlog_growing(arrival_slots_per_second: float) -> list[Observation]:
    """2 ready pods, both slots busy (4 slot-seconds/s), 1 s per job, a backlog growing by
    what arrives beyond that."""
    growth = arrival_slots_per_second - 4.0
    history = []
    for t in range(7):
        seconds = t * TICK
        backlog = 4.0 + growth * seconds
        samples = tuple(
            sample(
                f"pod-{i}",
                queued=(backlog - 4.0) / 2,
                running=2,
                concurrency=2,
                busy=2.0 * seconds,
                jobs=2.0 * seconds,
            )
            for i in range(2)
        )
        history.append(Observation(seconds, 6, samples, 6))
    return history


def test_backlog_while_pods_start_orders_only_what_arrivals_need() -> None:
    pods = [*ready_pods(2), *(PodState(f"new-{i}", "starting", 0.0) for i in range(4))]
    # 6 slot-seconds of work arrive per second: 6 / (2 slots * 0.7) = 4.3 replicas, fewer
    # than the 6 already ordered, although the backlog level alone asks for 17.
    calm = _backlog_growing(6.0)
    decision = decide(POLICY, calm, pods, calm[-1].time)
    assert decision.desired == 6
    assert decision.metrics["demandReplicas"] > 10
    # 14 slot-seconds per second outgrow even the ordered capacity: order more (how many,
    # test_policy_bursts works out), far fewer than the backlog level asks for.
    rush = _backlog_growing(14.0)
    decision = decide(POLICY, rush, pods, rush[-1].time)
    assert 6 < decision.desired < decision.metrics["demandReplicas"]
    assert decision.metrics["arrivalReplicas"] == pytest.approx(14.0 / 1.4)


def test_scale_down_waits_for_the_highest_recommendation_in_the_window() -> None:
    busy = steady_history(6, in_system=12.0, ticks=40)  # longer than the window
    quiet_start = busy[-1].time + TICK
    quiet = [spread(quiet_start + i * TICK, 6, 6, 0.0, 1) for i in range(8)]
    history = [*busy, *quiet]
    now = history[-1].time
    decision = decide(POLICY, history, ready_pods(6), now)
    assert decision.desired == 6
    assert "stabilised at the highest recommendation (6)" in decision.reason
    # Once the busy recommendations are older than the window, the quiet ones rule.
    later = now + POLICY.scale_down_stabilization_seconds
    tail = [spread(t, 6, 6, 0.0, 1) for t in range(int(now), int(later) + 1, 5)]
    decision = decide(POLICY, [*history, *tail], ready_pods(6), tail[-1].time)
    assert decision.desired == 1


def test_no_scale_down_before_a_stabilisation_window_of_observations() -> None:
    # A (re)started operator has seen one idle scrape: not enough to remove pods.
    decision = decide(POLICY, [spread(0.0, 6, 6, 0.0)], ready_pods(6), 0.0)
    assert (decision.recommendation, decision.desired) == (1, 6)
    assert "no scale-down before 180s of observations" in decision.reason


def _falling_then_quiet(policy: Policy) -> list[int]:
    """6 pods busy, then a load falling linearly to nothing over 30 s, then quiet: the
    replicas decided tick by tick."""
    history: list[Observation] = []
    replicas = 6
    trajectory = []
    for tick in range(120):
        now = tick * TICK
        fall = min(1.0, max(0.0, (now - 300.0) / 30.0))
        history.append(spread(now, replicas, replicas, in_system=12.0 * (1 - fall)))
        decision = decide(policy, history, ready_pods(replicas), now)
        history[-1] = history[-1].with_recommendation(decision)
        replicas = decision.desired
        trajectory.append(replicas)
    return trajectory


def test_a_falling_load_is_followed_down_in_one_step() -> None:
    trajectory = _falling_then_quiet(POLICY)
    steps = [(a, b) for a, b in itertools.pairwise(trajectory) if a != b]
    assert steps == [(6, 1)]
    # It came, within the stabilisation window plus one stable window of the fall.
    assert trajectory.index(1) * TICK <= 330 + POLICY.scale_down_stabilization_seconds + 30


def test_a_significant_rising_trend_orders_ahead_of_the_stable_mean() -> None:
    # Served work (busy slot-seconds) rises steadily on 4 pods with 2 slots, no backlog:
    # the stable mean alone waits; the trend projects where the load will be.
    policy = Policy(max_replicas=30, target_queue_depth_per_replica=2.0, startup_seconds=60)
    history = []
    busy_total = 0.0
    for tick in range(60):
        slots_busy = 2.0 + 0.02 * tick * TICK  # + 0.02 slots per second over 4 pods
        busy_total += slots_busy * TICK
        samples = tuple(
            sample(
                f"pod-{i}",
                running=slots_busy / 4,
                concurrency=2,
                busy=busy_total / 4,
                jobs=busy_total / 4,
            )
            for i in range(4)
        )
        history.append(Observation(tick * TICK, 4, samples, 4))
    now = history[-1].time
    with_trend = decide(policy, history, ready_pods(4), now)
    without = decide(replace(policy, startup_seconds=0), history, ready_pods(4), now)
    assert with_trend.metrics["trendReplicasPerMinute"] > 0
    assert "rising" in with_trend.reason
    assert with_trend.desired > without.desired


def test_pods_ordered_to_drain_a_backlog_are_not_remembered_for_stabilisation() -> None:
    pods = ready_pods(2)
    rush = _backlog_growing(14.0)
    rush = [replace(o, replicas=2) for o in rush]
    decision = decide(POLICY, rush, pods, rush[-1].time)
    assert decision.recommendation > decision.lasting_recommendation
    remembered = rush[-1].with_recommendation(decision).recommendation
    assert remembered == decision.lasting_recommendation


def test_scale_up_rate_limit_per_period() -> None:
    policy = Policy(
        max_replicas=100,
        target_queue_depth_per_replica=1.0,
        scale_up=RateLimit(pods=2, percent=50, period_seconds=15),
        panic_threshold=100.0,  # the stable window decides: the normal limit applies
    )
    history = [spread(t * TICK, 4, 4, in_system=80.0, recommendation=4) for t in range(8)]
    decision = decide(policy, history, ready_pods(4), history[-1].time)
    assert decision.desired == 6  # max(4 * 1.5, 4 + 2)
    assert "scale-up rate limit" in decision.reason
    # The period still holds the 4 it started from: no second step inside it.
    stepped = [*history, spread(history[-1].time + TICK, 6, 4, 80.0)]
    decision = decide(policy, stepped, ready_pods(4), stepped[-1].time)
    assert decision.desired == 6


def test_scale_down_rate_limit_per_period() -> None:
    policy = Policy(
        scale_down=RateLimit(pods=1, percent=10, period_seconds=30),
        scale_down_stabilization_seconds=0,
    )
    history = [spread(t * TICK, 8, 8, in_system=0.0, recommendation=1) for t in range(8)]
    decision = decide(policy, history, ready_pods(8), history[-1].time)
    assert decision.desired == 7
    assert "scale-down rate limit" in decision.reason


@pytest.mark.parametrize(
    ("in_system", "expected"),
    [(0.0, 2), (400.0, 5)],
    ids=["min", "max"],
)
def test_bounds(in_system: float, expected: int) -> None:
    policy = Policy(min_replicas=2, max_replicas=5, scale_down_stabilization_seconds=0)
    history = steady_history(3, in_system)
    assert decide(policy, history, ready_pods(3), history[-1].time).desired == expected


MONDAY_0900 = 4 * 86_400 + 9 * 3600  # 1970-01-05 was a Monday


@pytest.mark.parametrize(
    ("window", "now", "applies"),
    [
        (ScheduledMinimum(8 * 3600, 18 * 3600, 5), MONDAY_0900, True),
        (ScheduledMinimum(8 * 3600, 18 * 3600, 5), MONDAY_0900 + 10 * 3600, False),
        (ScheduledMinimum(8 * 3600, 18 * 3600, 5, frozenset({5, 6})), MONDAY_0900, False),
        # 22:00 to 02:00 starting on Sunday covers Monday 01:00 but not Monday 23:00.
        (ScheduledMinimum(22 * 3600, 2 * 3600, 5, frozenset({6})), MONDAY_0900 - 8 * 3600, True),
        (ScheduledMinimum(22 * 3600, 2 * 3600, 5, frozenset({6})), MONDAY_0900 + 14 * 3600, False),
    ],
)
def test_scheduled_minimum(window: ScheduledMinimum, now: float, applies: bool) -> None:
    assert window.applies_at(now) is applies
    policy = Policy(min_replicas=1, schedule=(window,))
    history = [spread(now, 2, 2, in_system=4.0)]  # load for exactly 2
    assert decide(policy, history, ready_pods(2), now).desired == (5 if applies else 2)


def test_short_burst_reacts_before_the_stable_window_catches_up() -> None:
    calm = steady_history(2, in_system=4.0)
    spike_time = calm[-1].time + TICK
    history = [*calm, spread(spike_time, 2, 2, in_system=20.0)]
    decision = decide(POLICY, history, ready_pods(2), spike_time)
    assert decision.desired > 2
    assert decision.reason.startswith("scale up")
    assert "burst" in decision.reason


def test_a_pod_stuck_starting_is_not_capacity_on_the_way() -> None:
    stuck = PodState("stuck", "starting", 0.0)
    history = [spread(1000.0 + t * TICK, 3, 2, in_system=12.0) for t in range(8)]
    now = history[-1].time
    decision = decide(POLICY, history, [*ready_pods(2), stuck], now)
    assert decision.metrics["podsOnTheWay"] == 0
    assert decision.desired == 6


def test_decide_needs_an_observation() -> None:
    with pytest.raises(ValueError, match="newest observation"):
        decide(POLICY, [], [], 0.0)


def test_deletion_costs_send_starting_then_idle_pods_first() -> None:
    pods = [
        PodState("busy", "ready", 0.0),
        PodState("idle", "ready", 0.0),
        PodState("starting", "starting", 0.0),
        PodState("unknown", "ready", 0.0),
        PodState("leaving", "terminating", 0.0),
    ]
    samples = [sample("busy", queued=3, running=2), sample("idle")]
    costs = deletion_costs(pods, samples)
    assert sorted(costs, key=costs.__getitem__) == ["starting", "idle", "busy", "unknown"]
