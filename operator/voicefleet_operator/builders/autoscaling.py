"""KEDA ScaledObject or autoscaling/v2 HPA for teams that already run those autoscalers.

Both carry the builtin policy's targets: (queued + running) per replica and GPU
utilisation, with the same stabilisation windows and rate limits as HPA `behavior`.
`build_children` adds whatever this returns; the builtin and off modes return nothing.
"""

from __future__ import annotations

from typing import Any

from voicefleet_operator.builders.labels import child_metadata
from voicefleet_operator.builders.metrics_queries import fleet_queries
from voicefleet_operator.crd.models import AutoscalingSpec, ScalingRate, VoiceService
from voicefleet_runtime import metric_names as names


def _policies(rate: ScalingRate) -> list[dict[str, Any]]:
    return [
        {"type": "Pods", "value": rate.pods, "periodSeconds": rate.period_seconds},
        {"type": "Percent", "value": rate.percent, "periodSeconds": rate.period_seconds},
    ]


def build_behavior(spec: AutoscalingSpec) -> dict[str, Any]:
    """HPA `behavior` from our windows and rates; `Max` picks the larger step, as ours does."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": spec.scale_up_stabilization_seconds,
            "selectPolicy": "Max",
            "policies": _policies(spec.scale_up_rate),
        },
        "scaleDown": {
            "stabilizationWindowSeconds": spec.scale_down_stabilization_seconds,
            "selectPolicy": "Max",
            "policies": _policies(spec.scale_down_rate),
        },
    }


def build_scaled_object(vs: VoiceService) -> dict[str, Any]:
    """Assumes a valid spec: mode keda comes with metrics.prometheus (cel.KEDA_NEEDS_PROMETHEUS)."""
    spec = vs.spec.autoscaling
    prometheus = spec.metrics.prometheus
    assert prometheus is not None, "the models refuse mode keda without metrics.prometheus"
    queries = fleet_queries(vs)

    def trigger(name: str, query: str, threshold: float, metric_type: str) -> dict[str, Any]:
        return {
            "type": "prometheus",
            "name": name,
            "metricType": metric_type,
            "metadata": {
                "serverAddress": prometheus.url,
                "query": query,
                "threshold": f"{threshold:g}",
            },
        }

    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": child_metadata(vs),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": vs.name},
            "pollingInterval": spec.metrics.poll_interval_seconds,
            "minReplicaCount": vs.spec.replicas.min,
            "maxReplicaCount": vs.spec.replicas.max,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": build_behavior(spec)}},
            "triggers": [
                # Requests per replica: the fleet's total, averaged by the HPA over replicas.
                trigger(
                    "demand",
                    queries.demand_total,
                    spec.target_queue_depth_per_replica,
                    "AverageValue",
                ),
                # A utilisation is already a mean: compared with the target as it is.
                trigger("gpu", queries.gpu_mean, spec.target_gpu_utilization / 100, "Value"),
            ],
        },
    }


def build_hpa(vs: VoiceService) -> dict[str, Any]:
    """Pods metrics served by a metrics adapter (prometheus-adapter) under the runtime's names.
    HPA takes the largest of its metrics, so queue depth and in-flight requests are two
    metrics here rather than one sum: each at the whole per-replica target."""
    spec = vs.spec.autoscaling

    def pods_metric(name: str, average: str) -> dict[str, Any]:
        return {
            "type": "Pods",
            "pods": {
                "metric": {"name": name},
                "target": {"type": "AverageValue", "averageValue": average},
            },
        }

    target = f"{spec.target_queue_depth_per_replica:g}"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(vs),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": vs.name},
            "minReplicas": vs.spec.replicas.min,
            "maxReplicas": vs.spec.replicas.max,
            "metrics": [
                pods_metric(names.QUEUE_DEPTH, target),
                pods_metric(names.REQUESTS_IN_FLIGHT, target),
                pods_metric(names.GPU_UTILIZATION, f"{spec.target_gpu_utilization * 10}m"),
            ],
            "behavior": build_behavior(spec),
        },
    }


def build_autoscaling_children(vs: VoiceService) -> list[dict[str, Any]]:
    mode = vs.spec.autoscaling.mode
    if mode == "keda":
        return [build_scaled_object(vs)]
    if mode == "hpa":
        return [build_hpa(vs)]
    return []
