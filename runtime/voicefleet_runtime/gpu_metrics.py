"""GPU utilisation and memory from NVML, read when Prometheus scrapes.

Without an NVIDIA driver NVML does not initialise and the collector is never registered:
the series are absent rather than zero, so a dashboard never mistakes "no GPU" for "idle".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from voicefleet_runtime import metric_names as names

logger = logging.getLogger("voicefleet.runtime")


class NvmlCollector(Collector):
    def __init__(self, nvml: Any, device_count: int) -> None:
        self._nvml = nvml
        self._device_count = device_count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        utilization = GaugeMetricFamily(
            names.GPU_UTILIZATION, "NVML GPU utilisation, 0..1.", labels=["gpu"]
        )
        used = GaugeMetricFamily(names.GPU_MEMORY_USED, "NVML memory in use.", labels=["gpu"])
        total = GaugeMetricFamily(names.GPU_MEMORY_TOTAL, "NVML memory size.", labels=["gpu"])
        for index in range(self._device_count):
            try:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except self._nvml.NVMLError as exc:
                # A GPU that fell off the bus yields no sample rather than a made-up one.
                logger.warning("NVML could not read GPU %d: %s", index, exc)
                continue
            label = [str(index)]
            utilization.add_metric(label, rates.gpu / 100.0)
            used.add_metric(label, float(memory.used))
            total.add_metric(label, float(memory.total))
        yield utilization
        yield used
        yield total


def register_gpu_collector(registry: CollectorRegistry) -> bool:
    """Register the NVML collector when a GPU is there; False (and no series) otherwise."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception as exc:  # NVML raises NVMLError or OSError for a missing library
        logger.info("no NVIDIA GPU metrics: %s", exc)
        return False
    if count == 0:
        return False
    registry.register(NvmlCollector(pynvml, count))
    return True
