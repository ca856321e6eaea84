"""The `prometheus` metrics source: the same per-pod load, read through PromQL.

Each query is an instant query on `/api/v1/query`. A result labelled by `pod` maps to that
pod; an unlabelled result (a fleet-wide custom query, for example the mean of DCGM's
`DCGM_FI_DEV_GPU_UTIL / 100`) is shared evenly over the ready pods. A query that fails
fails every pod with its reason; a pod missing from the load queries fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from voicefleet_operator.autoscaler.policy import PodSample
from voicefleet_operator.builders.metrics_queries import POD_LABEL, FleetQueries


@dataclass(frozen=True)
class PrometheusSource:
    url: str
    queries: FleetQueries
    """What to ask, from `metrics_queries.fleet_queries` (the same queries KEDA gets)."""
    timeout_seconds: float = 5.0


class QueryFailedError(Exception):
    pass


async def instant_query(
    client: httpx.AsyncClient, base_url: str, query: str, timeout_seconds: float
) -> dict[str | None, float]:
    """Values by pod label (None for an unlabelled result)."""
    try:
        response = await client.get(
            f"{base_url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=timeout_seconds
        )
    except httpx.HTTPError as error:
        raise QueryFailedError(type(error).__name__) from error
    if response.status_code != httpx.codes.OK:
        raise QueryFailedError(f"HTTP {response.status_code}")
    body = response.json()
    if body.get("status") != "success":
        raise QueryFailedError(str(body.get("error", "query failed")))
    data = body["data"]
    if data["resultType"] == "scalar":
        return {None: float(data["result"][1])}
    if data["resultType"] != "vector":
        raise QueryFailedError(f"unexpected result type {data['resultType']}")
    return {item["metric"].get(POD_LABEL): float(item["value"][1]) for item in data["result"]}


async def query_pods(
    client: httpx.AsyncClient, source: PrometheusSource, pods: Sequence[str]
) -> tuple[PodSample, ...]:
    queries = source.queries.by_field()
    keys = list(queries)
    results = await asyncio.gather(
        *(instant_query(client, source.url, queries[k], source.timeout_seconds) for k in keys),
        return_exceptions=True,
    )
    by_key = dict(zip(keys, results, strict=True))
    for required in ("queued", "running"):
        outcome = by_key[required]
        if isinstance(outcome, BaseException):
            reason = f"prometheus {required} query: {outcome}"
            return tuple(PodSample.failed(pod, reason) for pod in pods)

    def value(key: str, pod: str) -> float | None:
        outcome = by_key.get(key)
        if outcome is None or isinstance(outcome, BaseException):
            return None
        if pod in outcome:
            return outcome[pod]
        if None in outcome and pods:
            shared = outcome[None]
            # Totals are shared out; ratios and limits are the same on every pod.
            return shared / len(pods) if key in ("queued", "running") else shared
        return None

    samples = []
    for pod in pods:
        queued = value("queued", pod)
        running = value("running", pod)
        if queued is None or running is None:
            samples.append(PodSample.failed(pod, "no series in Prometheus"))
            continue
        samples.append(
            PodSample(
                pod=pod,
                ok=True,
                queued=queued,
                running=running,
                concurrency=value("concurrency", pod),
                gpu_utilization=value("gpu_utilization", pod),
                busy_seconds_total=value("busy_seconds_total", pod),
                jobs_total=value("jobs_total", pod),
            )
        )
    return tuple(samples)
