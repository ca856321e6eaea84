"""The VoiceService's `spec.replicas` and `spec.autoscaling` as a decision `Policy`."""

from __future__ import annotations

from voicefleet_operator.autoscaler.policy import Policy, RateLimit, ScheduledMinimum
from voicefleet_operator.crd.models import ScalingRate, ScheduleWindow, VoiceService


class UnsupportedScheduleError(ValueError):
    pass


def _days(field: str) -> frozenset[int]:
    """Cron day-of-week (0 or 7 is Sunday) as `datetime.weekday()` numbers (0 is Monday)."""
    if field == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for part in field.split(","):
        low, _, high = part.partition("-")
        for cron_day in range(int(low), int(high or low) + 1):
            days.add((cron_day - 1) % 7)
    return frozenset(days)


def _second_of_day(expression: str) -> tuple[int, frozenset[int]]:
    fields = expression.split()
    if len(fields) != 5 or fields[2] != "*" or fields[3] != "*":
        raise UnsupportedScheduleError(f"only 'M H * * DOW' windows are supported: {expression!r}")
    minute, hour = int(fields[0]), int(fields[1])
    return hour * 3600 + minute * 60, _days(fields[4])


def scheduled_minimum(window: ScheduleWindow) -> ScheduledMinimum:
    start, days = _second_of_day(window.start)
    end, _ = _second_of_day(window.end)
    return ScheduledMinimum(start, end, window.min_replicas, days, window.timezone)


def _rate(rate: ScalingRate) -> RateLimit:
    return RateLimit(pods=rate.pods, percent=rate.percent, period_seconds=rate.period_seconds)


def policy_from_spec(vs: VoiceService) -> Policy:
    spec = vs.spec.autoscaling
    stable = float(spec.stable_window_seconds)
    return Policy(
        min_replicas=vs.spec.replicas.min,
        max_replicas=vs.spec.replicas.max,
        target_queue_depth_per_replica=spec.target_queue_depth_per_replica,
        target_utilization=spec.target_gpu_utilization / 100,
        tolerance=spec.tolerance,
        stable_window_seconds=stable,
        burst_window_seconds=min(float(spec.burst_window_seconds), stable),
        panic_threshold=spec.panic_threshold,
        startup_seconds=float(spec.startup_seconds),
        scale_up_stabilization_seconds=float(spec.scale_up_stabilization_seconds),
        scale_up=_rate(spec.scale_up_rate),
        panic_scale_up=_rate(spec.panic_scale_up_rate),
        panic_drain_seconds=float(spec.panic_drain_seconds),
        scale_down=_rate(spec.scale_down_rate),
        scale_down_stabilization_seconds=float(spec.scale_down_stabilization_seconds),
        schedule=tuple(scheduled_minimum(w) for w in spec.schedule),
    )
