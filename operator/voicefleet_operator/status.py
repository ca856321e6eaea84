"""A VoiceService's status, derived purely from its body and its Deployment as last read.

The handlers pass in what they observed and write back what this returns; nothing here reads
the cluster or the clock. `status.autoscaler` belongs to the autoscaler and passes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from voicefleet_operator.builders.deployment import CONTAINER_NAME, GPU_PRODUCT_LABEL
from voicefleet_operator.builders.labels import PLACEMENT_ANNOTATION, selector_string
from voicefleet_operator.builders.placement import ANY_GPU, CPU
from voicefleet_operator.builders.service import endpoint_url
from voicefleet_operator.crd.models import (
    InvalidVoiceServiceError,
    VoiceService,
    parse_voiceservice,
)

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


def format_time(moment: datetime) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    kind: str, status: bool, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def _keep_transition_times(
    new: list[dict[str, Any]], old: list[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    """lastTransitionTime moves only when a condition's status flips (metav1 convention)."""
    previous = {c.get("type"): c for c in old}
    stamped = []
    for condition in new:
        before = previous.get(condition["type"])
        same = before is not None and before.get("status") == condition["status"]
        moment = before.get("lastTransitionTime") if same and before else None
        stamped.append({**condition, "lastTransitionTime": moment or now})
    return stamped


def _deployment_condition(deployment: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in deployment.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def _runtime_container(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for container in containers or []:
        if container.get("name") == CONTAINER_NAME:
            return dict(container)
    return {}


def _env_value(container: Mapping[str, Any], name: str) -> str | None:
    for variable in container.get("env", []) or []:
        if variable.get("name") == name:
            value = variable.get("value")
            return str(value) if value is not None else None
    return None


def scheduled_gpu(deployment: Mapping[str, Any]) -> str:
    """The GPU the Deployment's pods ask for: a product, any (no product selector), or cpu."""
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
    limits = _runtime_container(deployment).get("resources", {}).get("limits", {}) or {}
    asks_gpu = any("gpu" in name for name in limits)
    if not asks_gpu:
        return CPU
    product = (pod.get("nodeSelector") or {}).get(GPU_PRODUCT_LABEL)
    return str(product) if product else ANY_GPU


def _rollout(deployment: Mapping[str, Any]) -> tuple[int, int, int, bool]:
    """(desired, current, ready, complete) as the Deployment controller reports them."""
    status = deployment.get("status", {}) or {}
    spec = deployment.get("spec", {}) or {}
    current = int(status.get("replicas", 0) or 0)
    desired = int(spec.get("replicas", current) if spec.get("replicas") is not None else current)
    ready = int(status.get("readyReplicas", 0) or 0)
    updated = int(status.get("updatedReplicas", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    generation = deployment.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    seen = generation is None or (observed is not None and observed >= generation)
    complete = seen and updated >= desired and current == updated and available >= desired
    return desired, current, ready, complete


def _conditions_from(
    deployment: Mapping[str, Any] | None, error: str | None, generation: int | None
) -> list[dict[str, Any]]:
    if deployment is None:
        ready = _condition(READY, False, "DeploymentMissing", "no Deployment yet", generation)
        progressing = _condition(
            PROGRESSING, error is None, "Creating", "creating the children", generation
        )
        degraded = _condition(DEGRADED, False, "AsExpected", "", generation)
    else:
        desired, _, ready_count, complete = _rollout(deployment)
        progress = _deployment_condition(deployment, "Progressing")
        failure = _deployment_condition(deployment, "ReplicaFailure")
        stalled = progress.get("reason") == "ProgressDeadlineExceeded"
        if ready_count >= 1:
            reason = "AllReplicasReady" if ready_count >= desired else "PartiallyReady"
            ready = _condition(
                READY, True, reason, f"{ready_count}/{desired} pods ready", generation
            )
        elif desired == 0:
            ready = _condition(READY, False, "ScaledToZero", "no pods requested", generation)
        else:
            ready = _condition(
                READY, False, "NoReadyReplicas", f"0/{desired} pods ready", generation
            )
        if stalled:
            progressing = _condition(
                PROGRESSING,
                False,
                "ProgressDeadlineExceeded",
                progress.get("message", ""),
                generation,
            )
        elif complete:
            progressing = _condition(PROGRESSING, False, "RolloutComplete", "", generation)
        else:
            progressing = _condition(
                PROGRESSING,
                True,
                "RollingOut",
                progress.get("message", "pods are updating"),
                generation,
            )
        if stalled:
            degraded = _condition(
                DEGRADED,
                True,
                "ProgressDeadlineExceeded",
                "pods did not become ready in time: " + str(progress.get("message", "")),
                generation,
            )
        elif failure.get("status") == "True":
            degraded = _condition(
                DEGRADED,
                True,
                str(failure.get("reason") or "ReplicaFailure"),
                str(failure.get("message", "")),
                generation,
            )
        else:
            degraded = _condition(DEGRADED, False, "AsExpected", "", generation)
    if error is not None:
        degraded = _condition(DEGRADED, True, "ReconcileFailed", error, generation)
    return [ready, progressing, degraded]


def _phase(conditions: list[dict[str, Any]]) -> str:
    by_type = {c["type"]: c["status"] == "True" for c in conditions}
    if by_type.get(DEGRADED):
        return "Degraded"
    if by_type.get(PROGRESSING):
        return "Progressing"
    if by_type.get(READY):
        return "Ready"
    return "Pending"


def derive_status(
    vs: VoiceService | Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    *,
    now: datetime,
    error: str | None = None,
) -> dict[str, Any]:
    """The whole status to write: conditions, counts, endpoint and what the pods really run.

    `vs` may be a body that fails validation (then pass `error`): what can be read from it
    still is. `error` sets Degraded=True with that message; never put secrets into it.
    """
    body: Mapping[str, Any] = (
        vs.model_dump(mode="json", exclude_none=True) if isinstance(vs, VoiceService) else vs
    )
    metadata = body.get("metadata", {}) or {}
    old_status = body.get("status", {}) or {}
    generation = metadata.get("generation")
    try:
        parsed: VoiceService | None = (
            vs if isinstance(vs, VoiceService) else parse_voiceservice(body)
        )
    except InvalidVoiceServiceError:
        parsed = None

    conditions = _keep_transition_times(
        _conditions_from(deployment, error, generation),
        old_status.get("conditions", []) or [],
        format_time(now),
    )
    status: dict[str, Any] = {
        "phase": _phase(conditions),
        "conditions": conditions,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if parsed is not None:
        status["selector"] = selector_string(parsed)
        status["endpoint"] = endpoint_url(parsed)
        status["model"] = parsed.spec.model.name
        status["precision"] = parsed.spec.precision
    if deployment is not None:
        desired, current, ready_count, _ = _rollout(deployment)
        status["replicas"] = current
        status["readyReplicas"] = ready_count
        status["ready"] = f"{ready_count}/{desired}"
        container = _runtime_container(deployment)
        status["model"] = _env_value(container, "VOICEFLEET_MODEL") or status.get("model")
        status["precision"] = _env_value(container, "VOICEFLEET_PRECISION") or status.get(
            "precision"
        )
        status["gpu"] = scheduled_gpu(deployment)
        annotations = deployment.get("metadata", {}).get("annotations", {}) or {}
        fallback = dict(old_status.get("fallback", {}) or {})
        fallback["index"] = int(annotations.get(PLACEMENT_ANNOTATION, 0) or 0)
        status["fallback"] = fallback
    elif old_status.get("fallback"):
        status["fallback"] = dict(old_status["fallback"])
    if old_status.get("autoscaler") is not None:
        status["autoscaler"] = old_status["autoscaler"]
    return {key: value for key, value in status.items() if value is not None}
