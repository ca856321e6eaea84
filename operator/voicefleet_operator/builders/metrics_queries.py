"""The PromQL every autoscaling mode reads a VoiceService's load with: one source of truth.

The builtin autoscaler (metrics.source prometheus) and the KEDA ScaledObject both call
`fleet_queries`, so `metrics.prometheus.queueDepthQuery` and `gpuUtilizationQuery` mean the
same in both. Pods are matched by the `voicefleet.io/voiceservice` pod label, never by a name
prefix (generated pod names are truncated, and another service's name may share the prefix).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from voicefleet_operator.builders.labels import VOICESERVICE_LABEL
from voicefleet_operator.crd.models import VoiceService
from voicefleet_runtime import metric_names as names

POD_LABEL = "pod"
"""The series label naming the pod (ServiceMonitor, PodMonitor and the usual kubernetes-pods
scrape configuration all set it)."""


def prometheus_label_name(label_key: str) -> str:
    """How Prometheus names a Kubernetes label it copies (podTargetLabels, labelmap)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label_key)


VOICESERVICE_SERIES_LABEL = prometheus_label_name(VOICESERVICE_LABEL)
"""voicefleet_io_voiceservice: the ServiceMonitor copies the pod label under this name."""


@dataclass(frozen=True)
class FleetQueries:
    """PromQL instant vectors, each by pod (a `pod` label) or one value for the whole fleet."""

    queued: str
    running: str
    concurrency: str
    gpu_utilization: str
    busy_seconds_total: str
    jobs_total: str

    def by_field(self) -> dict[str, str]:
        return asdict(self)

    @property
    def demand_total(self) -> str:
        """Waiting plus running requests of the whole fleet (KEDA divides it per replica)."""
        return f"sum({self.queued}) + sum({self.running})"

    @property
    def gpu_mean(self) -> str:
        """The mean GPU utilisation (0..1), whether the query gives it by pod or as one value."""
        return f"avg({self.gpu_utilization})"


def pod_matchers(namespace: str, name: str) -> str:
    """PromQL label matchers for the pods of one VoiceService."""
    return f'namespace="{namespace}",{VOICESERVICE_SERIES_LABEL}="{name}"'


def default_queries(matchers: str) -> FleetQueries:
    """Per-pod queries on the runtime's own series, for pods matched by `matchers`."""

    def per_pod(series: str) -> str:
        return f"max by ({POD_LABEL}) ({series}{{{matchers}}})"

    return FleetQueries(
        queued=per_pod(names.QUEUE_DEPTH),
        running=per_pod(names.REQUESTS_IN_FLIGHT),
        concurrency=per_pod(names.CONCURRENCY_LIMIT),
        gpu_utilization=per_pod(names.GPU_UTILIZATION),
        busy_seconds_total=per_pod(names.ENGINE_BUSY_SECONDS),
        jobs_total=per_pod(f"{names.REAL_TIME_FACTOR}_count"),
    )


def fleet_queries(vs: VoiceService) -> FleetQueries:
    """The queries of `vs`: the defaults, with the spec's own queue-depth and GPU queries."""
    queries = default_queries(pod_matchers(vs.namespace, vs.name))
    prometheus = vs.spec.autoscaling.metrics.prometheus
    if prometheus is None:
        return queries
    return FleetQueries(
        **{
            **queries.by_field(),
            "queued": prometheus.queue_depth_query or queries.queued,
            "gpu_utilization": prometheus.gpu_utilization_query or queries.gpu_utilization,
        }
    )
