"""Prometheus series of an engine that batches across requests, read at scrape time.

The engine counts (its loop thread must not wait on a metrics lock); this collector turns a
`BatchStats` snapshot into gauges, counters and the per-step batch-size histogram.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from voicefleet_runtime import metric_names as names
from voicefleet_runtime.engine.base import BatchStats

STEP_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def batch_size_buckets(sizes: dict[int, int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, +Inf last, from steps counted per exact batch size."""
    buckets = [
        (str(bound), float(sum(count for size, count in sizes.items() if size <= bound)))
        for bound in STEP_BATCH_BUCKETS
    ]
    buckets.append(("+Inf", float(sum(sizes.values()))))
    return buckets


class BatchCollector(Collector):
    def __init__(self, stats: Callable[[], BatchStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily(
            names.BATCH_ACTIVE_SEQUENCES, "Windows being decoded now.", stats.active_sequences
        )
        yield GaugeMetricFamily(
            names.BATCH_WAITING_WINDOWS,
            "Windows waiting for a decoder slot.",
            stats.waiting_windows,
        )
        yield GaugeMetricFamily(names.BATCH_SLOTS, "Decoder slots (all GPUs).", stats.slots)
        yield CounterMetricFamily(names.DECODE_STEPS, "Decoder steps.", stats.steps)
        yield CounterMetricFamily(names.DECODE_TOKENS, "Tokens decoded.", stats.tokens)
        yield CounterMetricFamily(
            names.DECODE_STEP_SECONDS, "Seconds spent in decoder steps.", stats.step_seconds
        )
        sizes = stats.step_batch_sizes
        yield HistogramMetricFamily(
            names.DECODE_BATCH_SIZE,
            "Windows per decoder step.",
            buckets=batch_size_buckets(sizes),
            sum_value=float(sum(size * count for size, count in sizes.items())),
        )
