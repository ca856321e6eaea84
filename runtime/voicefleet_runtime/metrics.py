"""The runtime's Prometheus series, in a registry of its own per app (two apps never collide)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from voicefleet_runtime import metric_names as names
from voicefleet_runtime.admission import AdmissionSnapshot
from voicefleet_runtime.batch_metrics import BatchCollector
from voicefleet_runtime.engine.base import BatchStats
from voicefleet_runtime.gpu_metrics import register_gpu_collector

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
QUEUE_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
FIRST_AUDIO_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)


class SharedSeries(Collector):
    """Every API process's series from prometheus_client's files. The engine's waiting requests
    move from in flight to the queue depth, as `track_batching` does in a single process."""

    def __init__(self, path: str) -> None:
        self._files = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        self.engine_waiting: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[Metric]:
        waiting = self.engine_waiting()
        for metric in self._files.collect():  # type: ignore[no-untyped-call]
            if metric.name == names.QUEUE_DEPTH:
                metric.samples = [_shifted(sample, waiting) for sample in metric.samples]
            elif metric.name == names.REQUESTS_IN_FLIGHT:
                metric.samples = [_shifted(sample, -waiting) for sample in metric.samples]
            yield metric


def _shifted(sample: Sample, by: float) -> Sample:
    return sample._replace(value=max(sample.value + by, 0.0))


class RuntimeMetrics:
    def __init__(self, concurrency: int, queue_size: int, *, gpu: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            names.QUEUE_DEPTH,
            "Accepted requests waiting for an engine slot.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            names.REQUESTS_IN_FLIGHT,
            "Requests running on the engine.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Several API processes share one engine: its slots once, not once per process.
        self.concurrency_limit = Gauge(
            names.CONCURRENCY_LIMIT, "Engine slots.", registry=r, multiprocess_mode="livemax"
        )
        self.queue_capacity = Gauge(
            names.QUEUE_CAPACITY, "Waiting places.", registry=r, multiprocess_mode="livesum"
        )
        self.requests = Counter(
            names.REQUESTS_TOTAL, "Finished HTTP requests.", ["endpoint", "status"], registry=r
        )
        self.request_duration = Histogram(
            names.REQUEST_DURATION,
            "Wall time of a request, queue wait included.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            names.QUEUE_WAIT,
            "Time from admission to an engine slot.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            names.AUDIO_SECONDS, "Seconds of audio transcribed.", registry=r
        )
        self.real_time_factor = Histogram(
            names.REAL_TIME_FACTOR,
            "Processing seconds per audio second.",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            names.BATCH_SIZE, "Chunks per engine call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.engine_busy = Counter(
            names.ENGINE_BUSY_SECONDS, "Slot-seconds spent inferring.", registry=r
        )
        self._add_protection_series(r)
        self.model_load_seconds = Gauge(
            names.MODEL_LOAD_SECONDS, "Model load time.", registry=r, multiprocess_mode="max"
        )
        self.model_info = Gauge(
            names.MODEL_INFO,
            "The loaded model.",
            ["model", "backend", "device", "compute_type"],
            registry=r,
            multiprocess_mode="max",
        )
        self.ready = Gauge(
            names.READY,
            "1 when loaded, warmed up and not draining.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.draining = Gauge(
            names.DRAINING, "1 after SIGTERM.", registry=r, multiprocess_mode="livemax"
        )
        self.tts_characters = Counter(
            names.TTS_CHARACTERS, "Characters of text accepted for speech.", registry=r
        )
        self.tts_audio_seconds = Counter(
            names.TTS_AUDIO_SECONDS, "Seconds of speech synthesised.", registry=r
        )
        self.tts_time_to_first_audio = Histogram(
            names.TTS_TIME_TO_FIRST_AUDIO,
            "From a speech request's admission to its first audio bytes.",
            buckets=FIRST_AUDIO_BUCKETS,
            registry=r,
        )
        self.tts_real_time_factor = Histogram(
            names.TTS_REAL_TIME_FACTOR,
            "Synthesis seconds per second of speech.",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.cache_requests = Counter(
            names.CACHE_REQUESTS,
            "Result-cache look-ups.",
            ["direction", "result"],
            registry=r,
        )
        self.cache_evictions = Counter(
            names.CACHE_EVICTIONS, "Cache entries dropped.", ["reason"], registry=r
        )
        self.cache_bytes = Gauge(
            names.CACHE_BYTES,
            "Bytes held by the result cache.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_backend_errors = Counter(
            names.CACHE_BACKEND_ERRORS,
            "Shared-cache calls that failed and were skipped.",
            ["backend"],
            registry=r,
        )
        self.concurrency_limit.set(concurrency)
        self.queue_capacity.set(queue_size)
        self._shared: SharedSeries | None = None
        self.exposed = r
        """What /metrics shows: this registry, or every API process's series (below)."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            # Several API processes (api_processes.py): prometheus_client keeps each one's
            # values in files there, and a scrape of any of them sums them all.
            self._shared = SharedSeries(os.environ["PROMETHEUS_MULTIPROC_DIR"])
            self.exposed = CollectorRegistry()
            self.exposed.register(self._shared)
        self.gpu_available = register_gpu_collector(self.exposed) if gpu else False

    def exposition(self) -> bytes:
        return generate_latest(self.exposed)

    def _add_protection_series(self, r: CollectorRegistry) -> None:
        """What hostile or vanished clients cost: uploads in progress, refusals, disconnects."""
        self.uploads_in_progress = Gauge(
            names.UPLOADS_IN_PROGRESS,
            "Request bodies being received.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.upload_capacity = Gauge(
            names.UPLOAD_CAPACITY, "Upload places.", registry=r, multiprocess_mode="livesum"
        )
        self.refusals = Counter(
            names.REFUSALS_TOTAL, "Requests refused to protect the server.", ["reason"], registry=r
        )
        self.client_disconnects = Counter(
            names.CLIENT_DISCONNECTS_TOTAL,
            "Accepted requests whose client left before the answer.",
            ["stage"],
            registry=r,
        )

    def track_batching(
        self, stats: Callable[[], BatchStats], admission: Callable[[], AdmissionSnapshot]
    ) -> None:
        """An engine that batches admits many requests at once, so a request can be "running"
        for admission yet wait inside the engine for a decoder slot: queue depth counts it as
        waiting, which keeps the autoscaler's signal true under batching."""
        self.exposed.register(BatchCollector(stats))
        if self._shared is not None:
            self._shared.engine_waiting = lambda: stats().waiting_requests
            return
        self.queue_depth.set_function(lambda: admission().waiting + stats().waiting_requests)
        self.in_flight.set_function(lambda: max(admission().running - stats().waiting_requests, 0))

    def observe_admission(self, snapshot: AdmissionSnapshot) -> None:
        self.queue_depth.set(snapshot.waiting)
        self.in_flight.set(snapshot.running)

    def observe_inference(
        self, audio_seconds: float, processing_seconds: float, batch_size: int
    ) -> None:
        self.audio_seconds.inc(audio_seconds)
        self.engine_busy.inc(processing_seconds)
        self.batch_size.observe(batch_size)
        if audio_seconds > 0:
            self.real_time_factor.observe(processing_seconds / audio_seconds)

    def observe_speech(
        self, characters: int, audio_seconds: float, processing_seconds: float
    ) -> None:
        self.tts_characters.inc(characters)
        self.tts_audio_seconds.inc(audio_seconds)
        self.engine_busy.inc(processing_seconds)
        if audio_seconds > 0:
            self.tts_real_time_factor.observe(processing_seconds / audio_seconds)
