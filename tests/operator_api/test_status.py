"""derive_status: conditions, counts and placement from a real built Deployment, with the
status block the Deployment controller would report added by each test."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema

from voicefleet_operator.builders.deployment import build_deployment
from voicefleet_operator.crd.models import FallbackStatus, VoiceServiceStatus, parse_voiceservice
from voicefleet_operator.handlers.reconcile import placement_decision, serving
from voicefleet_operator.status import (
    INVALID_SPEC,
    Problem,
    derive_status,
    previous_status,
    rollout_of,
)

Json = dict[str, Any]
NOW = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
SPEC = {
    "model": {"name": "large-v3"},
    "precision": "float16",
    "gpu": {"type": "NVIDIA-L4", "fallbacks": [{"cpu": {"precision": "int8"}}]},
}


def body(status: Json | None = None, generation: int = 3) -> Json:
    result: Json = {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {
            "name": "whisper",
            "namespace": "speech",
            "uid": "u-1",
            "generation": generation,
        },
        "spec": SPEC,
    }
    if status is not None:
        result["status"] = status
    return result


def deployment(
    *, desired: int, current: int, updated: int, ready: int, index: int = 0, **extra: Any
) -> Json:
    built = build_deployment(parse_voiceservice(body()), replicas=desired, placement_index=index)
    built["metadata"]["generation"] = 2
    built["status"] = {
        "observedGeneration": 2,
        "replicas": current,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        **extra,
    }
    return built


def derived(
    source: Json,
    live: Json | None,
    *,
    now: datetime = NOW,
    fallback: FallbackStatus | None = None,
) -> Json:
    """derive_status over the typed inputs the reconcile gives it for `source` and `live`."""
    vs = parse_voiceservice(source)
    chosen = fallback or FallbackStatus(
        index=int(live["metadata"]["annotations"]["voicefleet.io/placement-candidate"])
        if live is not None
        else 0
    )
    return derive_status(
        generation=vs.metadata.generation,
        previous=vs.status or VoiceServiceStatus(),
        serving=serving(vs, chosen),
        rollout=rollout_of(live) if live is not None else None,
        now=now,
    )


def conditions(status: Json) -> dict[str, Json]:
    return {c["type"]: c for c in status["conditions"]}


def status_schema(openapi_schema: Json) -> Json:
    schema: Json = openapi_schema["properties"]["status"]
    return schema


def test_without_a_deployment_the_service_is_pending(openapi_schema: Json) -> None:
    status = derived(body(), None, now=NOW)
    jsonschema.Draft4Validator(status_schema(openapi_schema)).validate(status)
    assert status["phase"] == "Progressing"
    assert status["observedGeneration"] == 3
    by_type = conditions(status)
    assert by_type["Ready"]["status"] == "False"
    assert by_type["Progressing"]["reason"] == "Creating"
    assert status["endpoint"] == "http://whisper.speech.svc"
    assert (
        status["selector"] == "app.kubernetes.io/instance=whisper,app.kubernetes.io/name=voicefleet"
    )


def test_rolling_out(openapi_schema: Json) -> None:
    status = derived(body(), deployment(desired=2, current=2, updated=1, ready=1), now=NOW)
    jsonschema.Draft4Validator(status_schema(openapi_schema)).validate(status)
    by_type = conditions(status)
    assert status["phase"] == "Progressing"
    assert by_type["Ready"]["status"] == "True"
    assert by_type["Ready"]["reason"] == "PartiallyReady"
    assert by_type["Progressing"]["status"] == "True"
    assert status["ready"] == "1/2"
    assert by_type["Ready"]["observedGeneration"] == 3
    assert by_type["Ready"]["lastTransitionTime"] == "2025-03-01T09:30:00Z"


def test_ready_reports_what_the_pods_run(openapi_schema: Json) -> None:
    status = derived(body(), deployment(desired=2, current=2, updated=2, ready=2), now=NOW)
    jsonschema.Draft4Validator(status_schema(openapi_schema)).validate(status)
    assert status["phase"] == "Ready"
    assert conditions(status)["Ready"]["reason"] == "AllReplicasReady"
    assert conditions(status)["Degraded"]["status"] == "False"
    assert (status["model"], status["precision"], status["gpu"]) == (
        "large-v3",
        "float16",
        "NVIDIA-L4",
    )
    assert (status["replicas"], status["readyReplicas"], status["ready"]) == (2, 2, "2/2")
    assert status["fallback"]["index"] == 0


def test_cpu_fallback_is_reported_as_cpu() -> None:
    status = derived(body(), deployment(desired=1, current=1, updated=1, ready=1, index=1), now=NOW)
    assert status["gpu"] == "cpu"
    assert status["precision"] == "int8"
    assert status["fallback"]["index"] == 1


def test_stalled_rollout_is_degraded() -> None:
    stalled = deployment(
        desired=1,
        current=1,
        updated=1,
        ready=0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "whisper-abc" has timed out progressing.',
            }
        ],
    )
    status = derived(body(), stalled, now=NOW)
    assert status["phase"] == "Degraded"
    degraded = conditions(status)["Degraded"]
    assert degraded["reason"] == "ProgressDeadlineExceeded"
    assert "timed out" in degraded["message"]


def test_replica_failure_is_degraded() -> None:
    failing = deployment(
        desired=1,
        current=0,
        updated=0,
        ready=0,
        conditions=[
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": "quota",
            }
        ],
    )
    status = derived(body(), failing, now=NOW)
    assert conditions(status)["Degraded"]["reason"] == "FailedCreate"


def test_an_error_is_degraded_even_for_an_invalid_body() -> None:
    invalid = body()
    invalid["spec"] = {**SPEC, "replicas": {"min": 9, "max": 1}}
    status = derive_status(
        generation=3,
        previous=previous_status(invalid),
        serving=None,
        rollout=None,
        now=NOW,
        problem=Problem(INVALID_SPEC, "replicas.min must not exceed replicas.max"),
    )
    assert status["phase"] == "Degraded"
    degraded = conditions(status)["Degraded"]
    assert degraded["status"] == "True"
    assert degraded["message"] == "replicas.min must not exceed replicas.max"
    assert degraded["reason"] == "InvalidSpec"
    assert "endpoint" not in status


def test_transition_time_moves_only_when_status_flips() -> None:
    first = derived(body(), deployment(desired=2, current=2, updated=1, ready=1), now=NOW)
    later = NOW + timedelta(minutes=5)
    second = derived(
        body(status=first), deployment(desired=2, current=2, updated=2, ready=2), now=later
    )
    before, after = conditions(first), conditions(second)
    assert after["Ready"]["lastTransitionTime"] == before["Ready"]["lastTransitionTime"]
    assert after["Ready"]["reason"] == "AllReplicasReady"
    assert after["Progressing"]["status"] == "False"
    assert after["Progressing"]["lastTransitionTime"] == "2025-03-01T09:35:00Z"


def test_autoscaler_subtree_is_kept_and_the_fallback_clock_is_the_decisions(
    defaulted: Callable[[Json], Json],
) -> None:
    since = "2025-03-01T09:00:00Z"
    old = {
        "autoscaler": {"desiredReplicas": 3, "reason": "queue depth"},
        "fallback": {"index": 0},
    }
    decided = FallbackStatus(index=0, unschedulable_since=datetime(2025, 3, 1, 9, tzinfo=UTC))
    status = derived(
        body(status=old),
        deployment(desired=1, current=1, updated=1, ready=0),
        fallback=decided,
    )
    assert status["autoscaler"] == old["autoscaler"]
    assert status["fallback"] == {"index": 0, "unschedulableSince": since}
    stored = defaulted({**body(), "status": status})
    assert stored["status"]["autoscaler"] == old["autoscaler"]


def unschedulable_pod(candidate: int) -> Json:
    return {
        "metadata": {
            "name": f"whisper-abc-{candidate}",
            "annotations": {"voicefleet.io/placement-candidate": str(candidate)},
        },
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }


def test_the_placement_decision_is_a_typed_fallback_status() -> None:
    vs = parse_voiceservice(body())
    fresh = placement_decision(vs, FallbackStatus(), [unschedulable_pod(0)], NOW)
    assert fresh == FallbackStatus(index=0, unschedulable_since=NOW)
    waited = NOW + timedelta(seconds=vs.spec.gpu.fallback_after_seconds if vs.spec.gpu else 0)
    moved = placement_decision(vs, fresh, [unschedulable_pod(0)], waited)
    assert moved == FallbackStatus(index=1)  # the CPU fallback starts its own wait
    assert placement_decision(vs, fresh, [], waited) == FallbackStatus(index=0)
    shortened = parse_voiceservice(body() | {"spec": {**SPEC, "gpu": {"type": "NVIDIA-L4"}}})
    assert placement_decision(shortened, FallbackStatus(index=1), [], NOW).index == 0
    status = derived(body(), None, fallback=moved)
    assert (status["gpu"], status["precision"], status["fallback"]) == ("cpu", "int8", {"index": 1})
