"""The VoiceService's `spec.replicas` and `spec.autoscaling` as a decision `Policy`."""

from __future__ import annotations

from voicefleet_operator.autoscaler.policy import Policy, RateLimit, ScheduledMinimum
from voicefleet_operator.crd.cron import parse_daily_cron
from voicefleet_operator.crd.models import ScalingRate, ScheduleWindow, VoiceService


def scheduled_minimum(window: ScheduleWindow) -> ScheduledMinimum:
    """A valid window (the models checked its cron form, days and time zone) as a floor."""
    start, end = parse_daily_cron(window.start), parse_daily_cron(window.end)
    return ScheduledMinimum(
        start.second_of_day, end.second_of_day, window.min_replicas, start.weekdays, window.timezone
    )


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
        burst_window_seconds=float(spec.burst_window_seconds),
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
