"""The autoscaling decision: a pure function of policy, observations, pod states and time.

`decide` reads no clock and does no I/O, so the operator's timer, the unit tests and the
trace-driven simulation in `bench/autoscaler_sim.py` all run exactly the same code.

How a recommendation is formed (why each step exists is said where it happens):
1. load, in replicas: the larger of demand ((queued + running) / target per replica) and
   GPU pressure (utilisation / target, capped by how busy the engine really was);
2. averaged over a long (stable) window, or the short (burst) window when that one is at
   least `panic_threshold` times the capacity already ordered (panic); plus, on a
   significantly rising trend, what the load will have grown by when a pod ordered now is
   serving (slope x start-up time), so ramps do not run ahead of capacity (not across a
   burst's step, nor on less than half a trend window);
3. in panic, what the arrival rate needs plus the pods that drain, within
   `panic_drain_seconds`, the backlog expected when the pods on the way serve (projected
   from the oldest of them, so one burst orders once), under the generous panic rate
   limit; otherwise, while ordered pods are still starting, only a higher arrival rate,
   not the backlog the missing capacity causes, may order more (no cascade);
4. a tolerance band around the current replicas; missing metrics never lower it;
5. HPA-style stabilisation (highest recommendation over the scale-down window), remembering
   what the arrivals need rather than the pods ordered to drain a passing backlog (also for
   a stable window after a burst, while its average still holds the drained backlog); a
   scale-down waits (at most one stable window, counted from the end of a burst) until a
   falling load has settled, so it lands in one step rather than a staircase; rate limits
   per period; then min/max and the scheduled minimum.
"""

from __future__ import annotations

import datetime
import itertools
import math
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

PodPhase = Literal["starting", "ready", "unready", "terminating"]

_EPSILON = 1e-9


@dataclass(frozen=True)
class ScheduledMinimum:
    """A floor for known peaks: from `start` to `end` (seconds after UTC midnight)."""

    start_second: int
    end_second: int
    min_replicas: int
    weekdays: frozenset[int] = frozenset(range(7))
    """0 is Monday, as in `datetime.weekday()`."""
    timezone: str = "UTC"
    """IANA zone of the start and end; daylight saving comes from the tz database."""

    def applies_at(self, now: float) -> bool:
        local = datetime.datetime.fromtimestamp(now, zoneinfo.ZoneInfo(self.timezone))
        weekday = local.weekday()
        second_of_day = local.hour * 3600 + local.minute * 60 + local.second
        if self.start_second <= self.end_second:
            return weekday in self.weekdays and (
                self.start_second <= second_of_day < self.end_second
            )
        # A window across midnight belongs to the day it starts on.
        if second_of_day >= self.start_second:
            return weekday in self.weekdays
        previous_weekday = (weekday - 1) % 7
        return second_of_day < self.end_second and previous_weekday in self.weekdays


@dataclass(frozen=True)
class RateLimit:
    """At most `pods` or `percent` of the replicas per `period_seconds`, whichever is more."""

    pods: int
    percent: float
    period_seconds: float


@dataclass(frozen=True)
class Policy:
    min_replicas: int = 1
    max_replicas: int = 10
    target_queue_depth_per_replica: float = 2.0
    """(queued + running) requests one replica should hold on average."""
    target_utilization: float | None = 0.7
    """Target busy share of a replica's GPU and engine slots, 0..1; None ignores GPU
    utilisation (CPU fleets) and sizes arrivals at 100% busy."""
    tolerance: float = 0.1
    stable_window_seconds: float = 30.0
    burst_window_seconds: float = 6.0
    panic_threshold: float = 1.2
    """The burst window decides once its load reaches this multiple of the replicas."""
    startup_seconds: float = 60.0
    """How long a new pod takes to serve (scheduling, image, model load): how far ahead a
    rising trend is projected. 0 turns the look-ahead off."""
    trend_window_seconds: float = 300.0
    """The load's slope is fitted over this window; only a significant rise is used."""
    scale_up: RateLimit = RateLimit(pods=10, percent=300.0, period_seconds=15.0)
    panic_scale_up: RateLimit = RateLimit(pods=100, percent=1000.0, period_seconds=15.0)
    """The scale-up limit while the burst window decides (the larger of the two applies):
    the backlog a burst builds while pods start grows with every second they are late."""
    panic_drain_seconds: float = 30.0
    """In a burst, the backlog expected by the time ordered pods serve is sized to drain
    within this many seconds of their arrival."""
    scale_down: RateLimit = RateLimit(pods=100, percent=100.0, period_seconds=15.0)
    scale_down_stabilization_seconds: float = 180.0
    scale_up_stabilization_seconds: float = 0.0
    """Scale up only to the lowest recommendation of this trailing window (0: at once)."""
    max_startup_seconds: float = 600.0
    """A pod starting for longer than this no longer counts as capacity on the way."""
    schedule: tuple[ScheduledMinimum, ...] = ()

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(self.min_replicas, 1):
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if self.target_queue_depth_per_replica <= 0:
            raise ValueError("target_queue_depth_per_replica must be positive")
        if self.target_utilization is not None and not 0 < self.target_utilization <= 1:
            raise ValueError("target_utilization must be in (0, 1]")
        if self.burst_window_seconds > self.stable_window_seconds:
            raise ValueError("the burst window must not be longer than the stable window")
        if self.startup_seconds < 0 or self.trend_window_seconds <= 0:
            raise ValueError("startup_seconds must be >= 0 and trend_window_seconds positive")
        if self.panic_drain_seconds <= 0:
            raise ValueError("panic_drain_seconds must be positive")

    def floor_at(self, now: float) -> int:
        scheduled = [m.min_replicas for m in self.schedule if m.applies_at(now)]
        return min(self.max_replicas, max([self.min_replicas, *scheduled]))


@dataclass(frozen=True)
class PodSample:
    """What one pod's metrics said at one scrape; `ok=False` means unknown, never zero."""

    pod: str
    ok: bool
    error: str | None = None
    queued: float = 0.0
    running: float = 0.0
    concurrency: float | None = None
    gpu_utilization: float | None = None
    """0..1, the busiest GPU the pod holds; None without a GPU."""
    busy_seconds_total: float | None = None
    """Counter: slot-seconds the engine spent inferring."""
    jobs_total: float | None = None
    """Counter: engine runs finished (the real-time-factor histogram's count)."""

    @classmethod
    def failed(cls, pod: str, error: str) -> PodSample:
        return cls(pod=pod, ok=False, error=error)


@dataclass(frozen=True)
class Observation:
    time: float
    replicas: int
    """The Deployment's desired replicas when the samples were taken."""
    samples: tuple[PodSample, ...]
    recommendation: int | None = None
    """What `decide` recommended for this observation; set by the caller afterwards."""
    burst: bool = False
    """Whether pods were ordered to drain a burst's backlog; set with the recommendation."""

    def with_recommendation(self, decision: Decision) -> Observation:
        return replace(self, recommendation=decision.lasting_recommendation, burst=decision.burst)


@dataclass(frozen=True)
class PodState:
    name: str
    phase: PodPhase
    since: float
    """Creation time: how long a starting pod has been on the way."""


@dataclass(frozen=True)
class Decision:
    desired: int
    current: int
    reason: str
    recommendation: int
    """Before stabilisation and rate limits."""
    lasting_recommendation: int
    """What later scale-down stabilisation remembers (stored in the history): the
    recommendation without the pods ordered only to drain a backlog, which are not needed
    again once it is gone."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    held_for_missing_data: bool = False
    panic: bool = False
    """The burst window decided, and the panic scale-up limit applied."""
    burst: bool = False
    """In panic, the backlog expected when new pods serve was worth at least one more pod:
    a real burst rather than a noisy queue. The next stable window remembers what the
    arrivals need, and the trend ignores the climb while the pods it ordered come up."""

    @property
    def scales(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True)
class _Load:
    demand: float
    gpu: float | None

    @property
    def replicas(self) -> float:
        return max(self.demand, self.gpu or 0.0)


def _ok_samples(observation: Observation) -> dict[str, PodSample]:
    return {s.pod: s for s in observation.samples if s.ok}


def _busy_ratio(sample: PodSample, before: PodSample | None, seconds: float) -> float | None:
    """Share of the engine's slots that were busy between two scrapes."""
    if (
        before is None
        or seconds <= 0
        or sample.busy_seconds_total is None
        or before.busy_seconds_total is None
        or not sample.concurrency
    ):
        return None
    busy = sample.busy_seconds_total - before.busy_seconds_total
    if busy < 0:  # the pod restarted; its counter began again
        return None
    return min(1.0, busy / seconds / sample.concurrency)


def _gpu_pressure(
    policy: Policy,
    samples: Mapping[str, PodSample],
    before: Mapping[str, PodSample],
    seconds: float,
) -> float | None:
    """GPU load in replicas. NVML reports a GPU as 100% busy while any kernel runs, however
    little of the chip it uses, so a pod's utilisation is trusted only as far as its engine
    was busy: min(utilisation, busy slots / slots). An idle engine adds no GPU pressure,
    whatever else runs on the card."""
    if policy.target_utilization is None:
        return None
    pressure = 0.0
    seen = False
    for name, sample in samples.items():
        if sample.gpu_utilization is None:
            continue
        seen = True
        busy = _busy_ratio(sample, before.get(name), seconds)
        if busy is None:  # no earlier scrape: the slots in use now are the best guess
            slots = sample.concurrency or 1.0
            busy = min(1.0, sample.running / slots)
        pressure += min(sample.gpu_utilization, busy) / policy.target_utilization
    return pressure if seen else None


def _load(policy: Policy, observation: Observation, before: Observation | None) -> _Load:
    samples = _ok_samples(observation)
    in_system = sum(s.queued + s.running for s in samples.values())
    demand = in_system / policy.target_queue_depth_per_replica
    previous = _ok_samples(before) if before is not None else {}
    seconds = observation.time - before.time if before is not None else 0.0
    gpu = _gpu_pressure(policy, samples, previous, seconds)
    return _Load(demand=demand, gpu=gpu)


def _window(history: Sequence[Observation], now: float, seconds: float) -> list[Observation]:
    """The observations newer than `now - seconds`, oldest first (at least the newest)."""
    selected: list[Observation] = []
    for observation in reversed(history):
        if selected and observation.time <= now - seconds:
            break
        selected.append(observation)
    selected.reverse()
    return selected


def _loads(
    policy: Policy, history: Sequence[Observation], now: float, seconds: float
) -> list[tuple[float, _Load]]:
    window = _window(history, now, seconds)
    first_index = len(history) - len(window)
    loads = []
    for offset, observation in enumerate(window):
        index = first_index + offset
        before = history[index - 1] if index > 0 else None
        loads.append((observation.time, _load(policy, observation, before)))
    return loads


def _rising_slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of load (replicas) per second, when it is significantly positive
    (more than two standard errors); else 0. Noise alone rarely passes, so the look-ahead
    does not turn random fluctuations into pods."""
    count = len(points)
    if count < 6:
        return 0.0
    mean_time = _mean(t for t, _ in points)
    mean_load = _mean(y for _, y in points)
    spread_of_time = sum((t - mean_time) ** 2 for t, _ in points)
    if spread_of_time <= 0:
        return 0.0
    slope = sum((t - mean_time) * (y - mean_load) for t, y in points) / spread_of_time
    residuals = sum((y - mean_load - slope * (t - mean_time)) ** 2 for t, y in points)
    standard_error = math.sqrt(residuals / (count - 2) / spread_of_time)
    return slope if slope > 2 * standard_error else 0.0


@dataclass(frozen=True)
class _Flow:
    work_rate: float
    """Slot-seconds of work arriving per second."""
    service_seconds: float
    """Mean engine time per request."""


def _arrival_flow(policy: Policy, history: Sequence[Observation], now: float) -> _Flow | None:
    """Work arriving per second: the engine time spent plus the growth of the backlog priced
    at the measured service time. Unlike the backlog level, this does not grow while
    capacity is merely late, which is what stops scale-up cascades. None when the counters
    cannot tell yet (no request finished within the stable window)."""
    window = _window(history, now, policy.stable_window_seconds)
    if len(window) < 2:
        return None
    busy = 0.0
    jobs = 0.0
    for older, newer in itertools.pairwise(window):
        before = _ok_samples(older)
        for name, sample in _ok_samples(newer).items():
            busy_delta, jobs_delta = _counter_deltas(sample, before.get(name))
            if busy_delta is not None and jobs_delta is not None:
                busy += busy_delta
                jobs += jobs_delta
    if jobs <= 0:
        return None
    service_seconds = busy / jobs
    burst = _window(history, now, policy.burst_window_seconds)
    oldest, newest = (burst[0], burst[-1]) if len(burst) >= 2 else (window[-2], window[-1])
    seconds = newest.time - oldest.time
    engine_seconds = 0.0
    before = _ok_samples(oldest)
    after = _ok_samples(newest)
    for name, sample in after.items():
        busy_delta, _ = _counter_deltas(sample, before.get(name))
        engine_seconds += busy_delta or 0.0
    # Only pods seen at both ends: a pod that just became ready did not grow the backlog.
    common = before.keys() & after.keys()
    backlog_growth = sum(after[n].queued + after[n].running for n in common) - sum(
        before[n].queued + before[n].running for n in common
    )
    work_rate = (engine_seconds + backlog_growth * service_seconds) / seconds
    return _Flow(work_rate=max(0.0, work_rate), service_seconds=service_seconds)


def _counter_deltas(
    sample: PodSample, before: PodSample | None
) -> tuple[float | None, float | None]:
    """Busy seconds and finished jobs between two scrapes of one pod; None after a restart."""
    if before is None:
        return None, None
    busy: float | None = None
    jobs: float | None = None
    if sample.busy_seconds_total is not None and before.busy_seconds_total is not None:
        busy = sample.busy_seconds_total - before.busy_seconds_total
    if sample.jobs_total is not None and before.jobs_total is not None:
        jobs = sample.jobs_total - before.jobs_total
    if (busy is not None and busy < 0) or (jobs is not None and jobs < 0):
        return None, None
    return busy, jobs


def _backlog_at_relief(
    policy: Policy,
    measured: Mapping[str, PodSample],
    pods: Sequence[PodState],
    flow: _Flow,
    now: float,
) -> float:
    """Slot-seconds of work expected to wait when the pods on the way start serving: the
    queue now plus what the shortfall of the ready slots adds until then. Counted from the
    oldest pod on the way, so each tick of one burst projects the same backlog; a pod later
    than `startup_seconds` does not make the estimate grow, and no cascade follows."""
    queued = sum(s.queued for s in measured.values()) * flow.service_seconds
    ready_slots = sum(s.concurrency or 1.0 for s in measured.values())
    shortfall = max(0.0, flow.work_rate - ready_slots)
    starting = [
        now - p.since
        for p in pods
        if p.phase == "starting" and now - p.since <= policy.max_startup_seconds
    ]
    until_relief = policy.startup_seconds - max(starting, default=0.0)
    return max(0.0, queued + shortfall * until_relief)


def _ceil(value: float) -> int:
    return math.ceil(value - _EPSILON)


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def _on_the_way(policy: Policy, pods: Sequence[PodState], current: int, now: float) -> int:
    """Pods ordered but not serving yet: fresh starting pods plus pods not created yet."""
    alive = [p for p in pods if p.phase != "terminating"]
    fresh = sum(
        1 for p in alive if p.phase == "starting" and now - p.since <= policy.max_startup_seconds
    )
    return fresh + max(0, current - len(alive))


def _scale_up_ceiling(
    limit: RateLimit, history: Sequence[Observation], now: float
) -> tuple[int, str]:
    period = _window(history, now, limit.period_seconds)
    base = min(o.replicas for o in period)
    ceiling = max(_ceil(base * (1 + limit.percent / 100)), base + limit.pods)
    return ceiling, f"{limit.pods} pods or {limit.percent:g}% per {limit.period_seconds:g}s"


def _limit_by_rate(
    policy: Policy,
    history: Sequence[Observation],
    now: float,
    current: int,
    desired: int,
    panic: bool,
) -> tuple[int, str | None]:
    if desired > current:
        ceiling, rule = _scale_up_ceiling(policy.scale_up, history, now)
        kind = "scale-up"
        if panic:
            panic_ceiling, panic_rule = _scale_up_ceiling(policy.panic_scale_up, history, now)
            if panic_ceiling > ceiling:
                ceiling, rule, kind = panic_ceiling, panic_rule, "panic scale-up"
        if desired > ceiling:
            return max(ceiling, current), f"{kind} rate limit ({rule})"
    elif desired < current:
        period = _window(history, now, policy.scale_down.period_seconds)
        base = max(o.replicas for o in period)
        floor = min(
            math.floor(base * (1 - policy.scale_down.percent / 100) + _EPSILON),
            base - policy.scale_down.pods,
        )
        if desired < floor:
            return min(floor, current), (
                f"scale-down rate limit ({policy.scale_down.pods} pods or "
                f"{policy.scale_down.percent:g}% per {policy.scale_down.period_seconds:g}s)"
            )
    return desired, None


def _served_replicas(
    policy: Policy, observation: Observation, before: Observation | None
) -> float | None:
    """Work the engines did per second since the previous scrape, in replicas at target.
    Unlike the backlog, it grows only as fast as real arrivals, never because capacity is
    late: the signal the trend is fitted on."""
    if before is None or observation.time <= before.time:
        return None
    previous = _ok_samples(before)
    seconds = observation.time - before.time
    total = 0.0
    seen = False
    for name, sample in _ok_samples(observation).items():
        busy, _ = _counter_deltas(sample, previous.get(name))
        if busy is None:
            continue
        seen = True
        slots = sample.concurrency or 1.0
        total += busy / seconds / (slots * (policy.target_utilization or 1.0))
    return total if seen else None


def _trend_ahead(policy: Policy, history: Sequence[Observation], now: float) -> tuple[float, float]:
    """(slope in replicas per second, replicas to add): where a significantly rising load
    will be once a pod ordered now serves; the stable mean lags by half its window."""
    if policy.startup_seconds <= 0:
        return 0.0, 0.0
    window = _window(history, now, policy.trend_window_seconds)
    if window[0].time > now - policy.trend_window_seconds / 2:
        # Too short a history to tell a trend from a fleet warming up (after a restart).
        return 0.0, 0.0
    if any(o.burst for o in window):
        # A burst is a step, not a trend: while the pods it ordered come up one by one, the
        # work served climbs, and projecting that climb would order pods nobody needs.
        return 0.0, 0.0
    first_index = len(history) - len(window)
    points = []
    for offset, observation in enumerate(window):
        index = first_index + offset
        served = _served_replicas(policy, observation, history[index - 1] if index else None)
        if served is not None:
            points.append((observation.time, served))
    # Both the whole window and its newer half must rise: after a step (a burst met by
    # new pods) the served load is flat again, and the step is no trend to extrapolate.
    newer_half = [p for p in points if p[0] > now - policy.trend_window_seconds / 2]
    slope = min(_rising_slope(points), _rising_slope(newer_half))
    return slope, slope * (policy.startup_seconds + policy.stable_window_seconds / 2)


def _stabilised(
    policy: Policy,
    history: Sequence[Observation],
    now: float,
    current: int,
    recommendation: int,
    lasting_recommendation: int,
) -> tuple[int, str | None]:
    """Scale down only to the highest recommendation of the stabilisation window; and while
    the recommendations about to leave it are higher than the rest (a falling load that has
    not settled), or a drained backlog still lifts the current one, hold, unless the
    scale-down has been due for a whole stable window: one step instead of a staircase, and
    never a scale-down that does not come."""
    span = policy.scale_down_stabilization_seconds
    if history[0].time > now - span:
        # Just started (or restarted): the window's earlier recommendations are unknown,
        # and one quiet scrape is no reason to remove pods.
        return current, f"no scale-down before {span:g}s of observations (stabilisation window)"
    window = _window(history, now, span)
    remembered = [(o.time, o.recommendation) for o in window[:-1] if o.recommendation is not None]
    remembered.append((now, recommendation))
    highest = max(r for _, r in remembered)
    if highest >= current:
        return current, (
            f"stabilised at the highest recommendation ({highest}) of the last {span:g}s"
        )
    settle = policy.stable_window_seconds
    settled = max(r for t, r in remembered if t > now - span + settle or t == now)
    unsettled = settled < highest or lasting_recommendation < recommendation
    # While the burst window decided, the pods it ordered were never meant to last: the
    # scale-down they leave becomes due only once the burst is a stable window old.
    bursting = any(o.burst for o in _window(history, now, settle))
    due = not bursting and _due_since(policy, history, now - settle, current)
    if unsettled and not due:
        return current, (
            f"scale-down to {highest} waits up to {settle:g}s for the falling load to settle "
            f"(recent recommendations: {settled}; without the drained backlog: "
            f"{lasting_recommendation})"
        )
    note = None
    if highest > recommendation:
        note = f"stabilised at the highest recommendation ({highest}) of the last {span:g}s"
    return highest, note


def _due_since(policy: Policy, history: Sequence[Observation], then: float, current: int) -> bool:
    """Whether, at time `then`, the fleet already had `current` replicas and every
    recommendation of the stabilisation window before it was lower."""
    earlier = [o for o in history if o.time <= then]
    if not earlier or earlier[-1].replicas != current:
        return False
    window = _window(earlier, then, policy.scale_down_stabilization_seconds)
    remembered = [o.recommendation for o in window if o.recommendation is not None]
    return bool(remembered) and max(remembered) < current


def decide(
    policy: Policy,
    history: Sequence[Observation],
    pods: Sequence[PodState],
    now: float,
) -> Decision:
    """Desired replicas for the newest observation (`history[-1]`), and why.

    `history` is oldest first; earlier observations carry the recommendation `decide`
    returned for them (see `Observation.with_recommendation`).
    """
    if not history:
        raise ValueError("decide needs at least the newest observation")
    newest = history[-1]
    current = newest.replicas
    floor = policy.floor_at(now)
    notes: list[str] = []

    ready_names = {p.name for p in pods if p.phase == "ready"}
    measured = _ok_samples(newest)
    unmeasured = sorted(ready_names - measured.keys())
    failures = {s.pod: s.error or "no data" for s in newest.samples if not s.ok}
    on_the_way = _on_the_way(policy, pods, current, now)

    loads = _loads(policy, history, now, policy.stable_window_seconds)
    burst_loads = [load for t, load in loads if t > now - policy.burst_window_seconds]
    stable_load = _mean(load.replicas for _, load in loads)
    burst_load = _mean(load.replicas for load in burst_loads or [loads[-1][1]])
    latest = loads[-1][1]
    slope, ahead = _trend_ahead(policy, history, now)
    metrics: dict[str, float] = {
        "queuedAndRunning": sum(s.queued + s.running for s in measured.values()),
        "demandReplicas": round(latest.demand, 3),
        "stableLoadReplicas": round(stable_load, 3),
        "burstLoadReplicas": round(burst_load, 3),
        "readyPods": len(ready_names),
        "scrapedPods": len(measured),
        "podsOnTheWay": on_the_way,
    }
    if latest.gpu is not None:
        metrics["gpuPressureReplicas"] = round(latest.gpu, 3)
    driver = "GPU pressure" if (latest.gpu or 0.0) > latest.demand else "queue demand"

    capacity = max(current, 1)
    panic = burst_load >= policy.panic_threshold * capacity
    if panic:
        wanted = max(burst_load, stable_load)
        notes.append(f"burst: {driver} {burst_load:.2f} replicas over the short window")
    else:
        wanted = stable_load
        notes.append(f"{driver} {stable_load:.2f} replicas over the stable window")
    if ahead > 0:
        metrics["trendReplicasPerMinute"] = round(slope * 60, 3)
        wanted += ahead
        notes.append(
            f"rising {slope * 60:.2f} replicas/min: +{ahead:.2f} by the time a new pod serves"
        )

    lasting: float | None = None
    # A burst lasts while the burst window keeps deciding.
    burst = panic and len(history) >= 2 and history[-2].burst
    # Right after a burst the stable window still averages the backlog that has just
    # drained: what later scale-downs remember is what the arrivals need.
    after_burst = any(o.burst for o in _window(history, now, policy.stable_window_seconds))
    flow = _arrival_flow(policy, history, now) if wanted > current or after_burst else None
    if flow is None:
        if wanted > current and on_the_way:
            wanted = float(current)
            notes.append(f"{on_the_way} pods on the way, no arrival rate yet: wait for them")
    else:
        slots = max((s.concurrency or 1.0 for s in measured.values()), default=1.0)
        per_replica = slots * (policy.target_utilization or 1.0)
        arrivals = flow.work_rate / per_replica + ahead
        lasting = arrivals
        metrics["arrivalReplicas"] = round(arrivals, 3)
        if wanted > current and panic:
            backlog = _backlog_at_relief(policy, measured, pods, flow, now)
            needed = arrivals + backlog / (slots * policy.panic_drain_seconds)
            # A backlog worth a pod makes a real burst; a smaller one is a noisy queue.
            burst = burst or needed - arrivals >= 1.0
            metrics["backlogAtReliefSlotSeconds"] = round(backlog, 3)
            notes.append(
                f"arrivals need {arrivals:.2f} replicas, and the {backlog:.0f} slot-seconds "
                f"of backlog expected when new pods serve drain in "
                f"{policy.panic_drain_seconds:g}s with {needed - arrivals:.2f} more"
            )
            # A noisy queue orders no more than the burst window's own load; a real burst
            # orders in one step what its first scrapes cannot show yet.
            wanted = max(needed if burst else min(needed, wanted), float(current))
        elif wanted > current:
            # The backlog is worth new pods only as far as it must drain within the stable
            # window; beyond that, pods ordered now would start after it is gone.
            in_system = metrics["queuedAndRunning"]
            excess = max(0.0, in_system - current * policy.target_queue_depth_per_replica)
            drain_rate = excess * flow.service_seconds / policy.stable_window_seconds
            needed = arrivals + drain_rate / per_replica
            if needed < wanted:
                wanted = max(needed, float(current))
                notes.append(
                    f"arrivals need {needed:.2f} replicas: the backlog alone, which "
                    f"{on_the_way} pods on the way will drain, orders no more"
                )

    def recommend(load: float) -> int:
        band = max(policy.tolerance * capacity, 0.25 if policy.tolerance else 0.0)
        return current if abs(load - current) <= band else _ceil(load)

    recommendation = recommend(wanted)
    lasting_recommendation = min(recommendation, recommend(wanted if lasting is None else lasting))

    held = False
    if unmeasured or not measured:
        held = recommendation < current
        recommendation = max(recommendation, current)
        lasting_recommendation = max(lasting_recommendation, current)
        if unmeasured:
            detail = ", ".join(f"{n}: {failures.get(n, 'not scraped')}" for n in unmeasured)
            notes.append(f"no scale-down: {len(unmeasured)} ready pods without metrics ({detail})")
        else:
            notes.append("no scale-down: no pod has reported metrics")

    def bounded(replicas: int) -> int:
        return min(max(replicas, policy.min_replicas), policy.max_replicas)

    recommendation = bounded(recommendation)
    lasting_recommendation = bounded(lasting_recommendation)

    desired = recommendation
    if desired < current:
        desired, note = _stabilised(
            policy, history, now, current, recommendation, lasting_recommendation
        )
        if note:
            notes.append(note)
    elif desired > current and policy.scale_up_stabilization_seconds > 0:
        window = _window(history, now, policy.scale_up_stabilization_seconds)
        lowest = min(
            [recommendation]
            + [o.recommendation for o in window[:-1] if o.recommendation is not None]
        )
        if lowest < desired:
            desired = max(lowest, current)
            notes.append(
                f"scale-up stabilised at the lowest recommendation ({lowest}) of the last "
                f"{policy.scale_up_stabilization_seconds:g}s"
            )
    desired, limit_note = _limit_by_rate(policy, history, now, current, desired, panic)
    if limit_note:
        notes.append(f"limited by the {limit_note}")

    clamped = min(max(desired, floor), policy.max_replicas)
    if clamped != desired:
        notes.append(f"clamped to [{floor}, {policy.max_replicas}]")
    desired = clamped

    verb = "scale up" if desired > current else "scale down" if desired < current else "hold"
    reason = f"{verb} {current}->{desired}: " + "; ".join(notes)
    return Decision(
        desired=desired,
        current=current,
        reason=reason,
        recommendation=recommendation,
        lasting_recommendation=lasting_recommendation,
        metrics=metrics,
        held_for_missing_data=held,
        panic=panic,
        burst=burst,
    )


def deletion_costs(pods: Sequence[PodState], samples: Sequence[PodSample]) -> dict[str, int]:
    """`controller.kubernetes.io/pod-deletion-cost` per pod: the ReplicaSet removes the
    cheapest first, so pods that are still starting go before idle ones, and idle ones
    before those holding requests (each request in the pod adds to its cost)."""
    by_pod = {s.pod: s for s in samples if s.ok}
    costs: dict[str, int] = {}
    for pod in pods:
        if pod.phase == "terminating":
            continue
        if pod.phase in ("starting", "unready"):
            costs[pod.name] = -1000
            continue
        sample = by_pod.get(pod.name)
        # A pod we could not read might be busy: do not make it the first to go.
        costs[pod.name] = 1000 if sample is None else int(100 * (sample.queued + sample.running))
    return costs
