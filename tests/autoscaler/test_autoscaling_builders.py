"""KEDA/HPA children and the spec-to-policy mapping, from real VoiceService bodies."""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
import kubernetes_validate
import pytest

from voicefleet_operator.autoscaler.from_spec import policy_from_spec
from voicefleet_operator.autoscaler.timer import run_once
from voicefleet_operator.builders.autoscaling import build_autoscaling_children
from voicefleet_operator.builders.children import build_children
from voicefleet_operator.builders.metrics_queries import fleet_queries
from voicefleet_operator.crd.models import (
    InvalidVoiceServiceError,
    VoiceService,
    parse_voiceservice,
)
from voicefleet_operator.k8s.client import KubeApi

UID = "0b5a7f5e-6a8e-4d8c-9d4f-3b7e2f1a0c11"
PROMETHEUS = {"url": "http://prometheus-operated.monitoring:9090"}


def make(
    autoscaling: dict[str, Any], replicas: dict[str, Any] | None = None, name: str = "whisper"
) -> VoiceService:
    return parse_voiceservice(
        {
            "metadata": {"name": name, "namespace": "speech", "uid": UID, "generation": 1},
            "spec": {
                "model": {"name": "tiny.en"},
                "replicas": replicas or {"min": 1, "max": 8},
                "autoscaling": autoscaling,
            },
        }
    )


def test_builtin_and_off_render_no_autoscaler_object() -> None:
    assert build_autoscaling_children(make({"mode": "builtin"})) == []
    assert build_autoscaling_children(make({"mode": "off"})) == []


def test_hpa_is_a_valid_autoscaling_v2_object_with_our_behaviour() -> None:
    vs = make(
        {
            "mode": "hpa",
            "targetQueueDepthPerReplica": 3,
            "targetGpuUtilization": 75,
            "scaleDownStabilizationSeconds": 120,
            "scaleUpRate": {"pods": 2, "percent": 50, "periodSeconds": 30},
        }
    )
    [hpa] = build_autoscaling_children(vs)
    kubernetes_validate.validate(hpa, "1.33", strict=True)
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["name"] == "whisper"
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 8)
    targets = {
        m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"] for m in spec["metrics"]
    }
    assert targets == {
        "voicefleet_queue_depth": "3",
        "voicefleet_requests_in_flight": "3",
        "voicefleet_gpu_utilization_ratio": "750m",
    }
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    scale_up = spec["behavior"]["scaleUp"]["policies"]
    assert {"type": "Pods", "value": 2, "periodSeconds": 30} in scale_up


def test_keda_scaled_object_queries_prometheus_with_our_targets() -> None:
    vs = make(
        {
            "mode": "keda",
            "metrics": {
                "source": "prometheus",
                "prometheus": {
                    **PROMETHEUS,
                    "gpuUtilizationQuery": "DCGM_FI_DEV_GPU_UTIL{namespace='speech'} / 100",
                },
            },
        }
    )
    [scaled] = build_autoscaling_children(vs)
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
    demand, gpu = triggers["demand"]["metadata"], triggers["gpu"]["metadata"]
    assert demand["serverAddress"] == PROMETHEUS["url"]
    assert "voicefleet_queue_depth" in demand["query"]
    assert "voicefleet_requests_in_flight" in demand["query"]
    assert demand["threshold"] == "2"
    assert triggers["demand"]["metricType"] == "AverageValue"
    # The custom GPU query, averaged: a utilisation is compared with the target as it is.
    assert gpu["query"] == "avg(DCGM_FI_DEV_GPU_UTIL{namespace='speech'} / 100)"
    assert triggers["gpu"]["metricType"] == "Value"
    assert gpu["threshold"] == "0.7"
    # build_children adopts it: same owner as every other child.
    children = build_children(vs, servicemonitor_api=False, replicas=None)
    [adopted] = [c for c in children if c["kind"] == "ScaledObject"]
    assert adopted["metadata"]["ownerReferences"][0]["uid"] == UID


def test_keda_and_builtin_read_the_same_queries_selected_by_label() -> None:
    """One MetricsSpec -> queries function: the queue-depth query the builtin autoscaler reads
    is the one KEDA sums, and pods are matched by label, whatever the name's length."""
    custom = "max by (pod) (my_queue{team='speech'})"
    prometheus = {"source": "prometheus", "prometheus": {**PROMETHEUS, "queueDepthQuery": custom}}
    long_name = "w" * 63
    keda = make({"mode": "keda", "metrics": prometheus}, name=long_name)
    builtin = make({"mode": "builtin", "metrics": prometheus}, name=long_name)
    assert fleet_queries(keda) == fleet_queries(builtin)
    queries = fleet_queries(builtin)
    assert queries.queued == custom
    [scaled] = build_autoscaling_children(keda)
    demand = next(t for t in scaled["spec"]["triggers"] if t["name"] == "demand")
    assert demand["metadata"]["query"] == queries.demand_total
    assert demand["metadata"]["query"].startswith(f"sum({custom})")
    matcher = f'voicefleet_io_voiceservice="{long_name}"'
    for query in (queries.running, queries.gpu_utilization, queries.concurrency):
        assert matcher in query
        assert "pod=~" not in query
    [monitor] = [
        c
        for c in build_children(keda, servicemonitor_api=True, replicas=None)
        if c["kind"] == "ServiceMonitor"
    ]
    assert monitor["spec"]["podTargetLabels"] == ["voicefleet.io/voiceservice"]


def test_policy_from_spec_maps_every_field() -> None:
    vs = make(
        {
            "targetQueueDepthPerReplica": 1.5,
            "targetGpuUtilization": 60,
            "tolerance": 0.2,
            "burstWindowSeconds": 10,
            "stableWindowSeconds": 90,
            "scaleDownStabilizationSeconds": 200,
            "scaleDownRate": {"pods": 3, "percent": 20, "periodSeconds": 45},
            "panicScaleUpRate": {"pods": 40, "percent": 500, "periodSeconds": 10},
            "panicDrainSeconds": 45,
            "schedule": [
                {
                    "start": "30 8 * * 1-5",
                    "end": "0 18 * * 1-5",
                    "timezone": "Europe/Berlin",
                    "minReplicas": 4,
                }
            ],
        },
        replicas={"min": 2, "max": 9},
    )
    policy = policy_from_spec(vs)
    assert (policy.min_replicas, policy.max_replicas) == (2, 9)
    assert policy.target_queue_depth_per_replica == 1.5
    assert policy.target_utilization == pytest.approx(0.6)
    assert (policy.burst_window_seconds, policy.stable_window_seconds) == (10, 90)
    assert policy.scale_down.pods == 3
    assert (policy.panic_scale_up.pods, policy.panic_scale_up.percent) == (40, 500)
    assert policy.panic_scale_up.period_seconds == 10
    assert policy.panic_drain_seconds == 45
    [window] = policy.schedule
    assert (window.start_second, window.end_second) == (8 * 3600 + 1800, 18 * 3600)
    assert window.weekdays == frozenset(range(5))
    # Monday 1970-01-05 09:00 in Berlin (UTC+1 in winter) is 08:00 UTC.
    assert window.applies_at(4 * 86_400 + 8 * 3600)
    assert not window.applies_at(4 * 86_400 + 7 * 3600)


def test_day_of_month_schedules_are_refused_at_admission_not_misread() -> None:
    with pytest.raises(InvalidVoiceServiceError, match=r"autoscaling\.schedule\.0\.start"):
        make({"schedule": [{"start": "0 8 1 * *", "end": "0 18 1 * *", "minReplicas": 2}]})


async def test_the_timer_leaves_an_invalid_spec_to_the_reconcile_handler() -> None:
    """A stored spec the models refuse (a CRD installed without its CEL rules) is reported as
    Degraded by the reconcile handler; the autoscaler's timer skips it before any request,
    instead of failing on every tick."""
    body = kopf.Body(
        {
            "metadata": {"name": "whisper", "namespace": "speech", "uid": UID},
            "spec": {"model": {"name": "tiny.en"}, "replicas": {"min": 5, "max": 2}},
        }
    )
    no_api = cast(KubeApi, None)  # any request would fail: none may be made
    assert await run_once(no_api, body, kopf.Memo(), 5.0, logging.getLogger("test")) is None
