"""The `pods` metrics source: scrape each ready pod's /metrics, all at once, briefly.

A pod that does not answer, answers an error, or lacks the load series becomes a failed
`PodSample` that says why: the decision treats it as unknown, never as idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from voicefleet_operator.autoscaler.policy import PodSample
from voicefleet_runtime import metric_names as names
from voicefleet_runtime.routes import METRICS_PATH

PORT_ANNOTATION = "prometheus.io/port"
PATH_ANNOTATION = "prometheus.io/path"
SCHEME_ANNOTATION = "prometheus.io/scheme"
DEFAULT_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class ScrapeTarget:
    pod: str
    url: str


def scrape_target(pod: Mapping[str, Any]) -> ScrapeTarget | None:
    """Where a pod serves its metrics: its own IP, and the port of its `prometheus.io/port`
    annotation or else its first container port, so each pod may use its own port."""
    metadata = pod.get("metadata", {})
    ip = pod.get("status", {}).get("podIP")
    if not ip:
        return None
    annotations = metadata.get("annotations") or {}
    port = annotations.get(PORT_ANNOTATION)
    if port is None:
        for container in pod.get("spec", {}).get("containers", []):
            ports = container.get("ports") or []
            if ports:
                port = ports[0].get("containerPort")
                break
    if port is None:
        return None
    path = annotations.get(PATH_ANNOTATION, METRICS_PATH)
    scheme = annotations.get(SCHEME_ANNOTATION, "http")
    host = f"[{ip}]" if ":" in ip else ip
    return ScrapeTarget(pod=metadata["name"], url=f"{scheme}://{host}:{port}{path}")


def parse_metrics(pod: str, text: str) -> PodSample:
    """One pod's exposition text as a sample; the load gauges must be there."""
    values: dict[str, float] = {}
    gpu: list[float] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == names.GPU_UTILIZATION:
                gpu.append(sample.value)
            elif not sample.labels or sample.name not in values:
                values[sample.name] = sample.value
    missing = [n for n in (names.QUEUE_DEPTH, names.REQUESTS_IN_FLIGHT) if n not in values]
    if missing:
        return PodSample.failed(pod, f"metrics lack {', '.join(missing)}")
    return PodSample(
        pod=pod,
        ok=True,
        queued=values[names.QUEUE_DEPTH],
        running=values[names.REQUESTS_IN_FLIGHT],
        concurrency=values.get(names.CONCURRENCY_LIMIT),
        gpu_utilization=max(gpu) if gpu else None,
        busy_seconds_total=values.get(names.ENGINE_BUSY_SECONDS),
        jobs_total=values.get(f"{names.REAL_TIME_FACTOR}_count"),
    )


async def scrape_one(
    client: httpx.AsyncClient, target: ScrapeTarget, timeout_seconds: float
) -> PodSample:
    try:
        response = await client.get(target.url, timeout=timeout_seconds)
    except httpx.HTTPError as error:
        return PodSample.failed(target.pod, type(error).__name__)
    if response.status_code != httpx.codes.OK:
        return PodSample.failed(target.pod, f"HTTP {response.status_code}")
    try:
        return parse_metrics(target.pod, response.text)
    except ValueError as error:  # the parser's complaint about malformed exposition text
        return PodSample.failed(target.pod, f"unparsable metrics: {error}")


async def scrape_pods(
    client: httpx.AsyncClient,
    targets: Iterable[ScrapeTarget],
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> tuple[PodSample, ...]:
    """Every target concurrently; one slow pod costs at most `timeout_seconds`, not a loop stall."""
    return tuple(
        await asyncio.gather(*(scrape_one(client, target, timeout_seconds) for target in targets))
    )
