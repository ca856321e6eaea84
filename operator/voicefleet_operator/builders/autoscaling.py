"""KEDA ScaledObject or autoscaling/v2 HPA for teams that already run those autoscalers.

Both carry the builtin policy's targets: (queued + running) per replica and GPU
utilisation, with the same stabilisation windows and rate limits as HPA `behavior`.
`build_children` adds whatever this returns; the builtin and off modes return nothing.
"""

from __future__ import annotations

from typing import Any

from voicefleet_operator.builders.labels import child_metadata
from voicefleet_operator.crd.models import AutoscalingSpec, ScalingRate, VoiceService
from voicefleet_runtime import metric_names as names


def _selector(vs: VoiceService) -> str:
    return f'namespace="{vs.namespace}",pod=~"{vs.name}-[a-z0-9]+-[a-z0-9]+"'


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


def demand_query(vs: VoiceService) -> str:
    prometheus = vs.spec.autoscaling.metrics.prometheus
    if prometheus is not None and prometheus.queue_depth_query:
        return prometheus.queue_depth_query
    selector = _selector(vs)
    return f"sum({names.QUEUE_DEPTH}{{{selector}}}) + sum({names.REQUESTS_IN_FLIGHT}{{{selector}}})"


def gpu_query(vs: VoiceService) -> str:
    prometheus = vs.spec.autoscaling.metrics.prometheus
    if prometheus is not None and prometheus.gpu_utilization_query:
        return prometheus.gpu_utilization_query
    return f"sum({names.GPU_UTILIZATION}{{{_selector(vs)}}})"


def build_scaled_object(vs: VoiceService) -> dict[str, Any]:
    spec = vs.spec.autoscaling
    prometheus = spec.metrics.prometheus
    if prometheus is None:
        raise ValueError("autoscaling.mode keda needs autoscaling.metrics.prometheus")

    def trigger(name: str, query: str, threshold: float) -> dict[str, Any]:
        return {
            "type": "prometheus",
            "name": name,
            "metricType": "AverageValue",
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
                trigger("demand", demand_query(vs), spec.target_queue_depth_per_replica),
                trigger("gpu", gpu_query(vs), spec.target_gpu_utilization / 100),
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
            "minReplicas": max(vs.spec.replicas.min, 1),
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
