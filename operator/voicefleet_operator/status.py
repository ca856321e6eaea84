"""A VoiceService's status, derived purely from typed inputs.

The handlers pass in what they decided and observed: the previous status (parsed once), what
the pods are built to run (`Serving`, from the spec and the placement decision), the rollout
as the Deployment controller reports it (`Rollout`), and any problem that stopped the
reconcile. Nothing here reads the cluster or the clock, parses a body, or reads settings back
from a child. `status.autoscaler` belongs to the autoscaler and passes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from voicefleet_operator.crd.models import Condition, FallbackStatus, VoiceServiceStatus

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

INVALID_SPEC = "InvalidSpec"
"""Degraded reason: the spec breaks the API's rules, or no valid child can be built from it."""
CHILD_REJECTED = "ChildRejected"
"""Degraded reason: the API server refused a child as invalid."""


def format_time(moment: datetime) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Serving:
    """What the pods are built to run: the spec's model and the chosen placement."""

    selector: str
    endpoint: str
    model: str
    precision: str
    gpu: str
    """A GPU product, any, or cpu."""
    fallback: FallbackStatus


@dataclass(frozen=True)
class Rollout:
    """The Deployment's progress, as its controller reports it."""

    desired: int
    current: int
    ready: int
    complete: bool
    progress_message: str = ""
    stalled: bool = False
    """Progressing=False with reason ProgressDeadlineExceeded."""
    failure_reason: str | None = None
    """The reason of a ReplicaFailure=True condition (quota, admission webhooks, ...)."""
    failure_message: str = ""


@dataclass(frozen=True)
class Problem:
    """Why the reconcile stopped for good at this generation (Degraded=True)."""

    reason: str
    message: str


def _deployment_condition(deployment: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in deployment.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def rollout_of(deployment: Mapping[str, Any]) -> Rollout:
    """Read the Deployment controller's report (its status and generation) as a `Rollout`."""
    status = deployment.get("status", {}) or {}
    spec = deployment.get("spec", {}) or {}
    current = int(status.get("replicas", 0) or 0)
    desired = int(spec["replicas"]) if spec.get("replicas") is not None else current
    updated = int(status.get("updatedReplicas", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    generation = deployment.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    seen = generation is None or (observed is not None and observed >= generation)
    progress = _deployment_condition(deployment, "Progressing")
    failure = _deployment_condition(deployment, "ReplicaFailure")
    failed = failure.get("status") == "True"
    return Rollout(
        desired=desired,
        current=current,
        ready=int(status.get("readyReplicas", 0) or 0),
        complete=seen and updated >= desired and current == updated and available >= desired,
        progress_message=str(progress.get("message", "")),
        stalled=progress.get("reason") == "ProgressDeadlineExceeded",
        failure_reason=str(failure.get("reason") or "ReplicaFailure") if failed else None,
        failure_message=str(failure.get("message", "")) if failed else "",
    )


def _condition(kind: str, status: bool, reason: str, message: str) -> tuple[str, bool, str, str]:
    return (kind, status, reason, message)


def _conditions_from(
    rollout: Rollout | None, problem: Problem | None
) -> list[tuple[str, bool, str, str]]:
    if rollout is None:
        ready = _condition(READY, False, "DeploymentMissing", "no Deployment yet")
        progressing = _condition(PROGRESSING, problem is None, "Creating", "creating the children")
        degraded = _condition(DEGRADED, False, "AsExpected", "")
    else:
        if rollout.ready >= 1:
            reason = "AllReplicasReady" if rollout.ready >= rollout.desired else "PartiallyReady"
            ready = _condition(READY, True, reason, f"{rollout.ready}/{rollout.desired} pods ready")
        elif rollout.desired == 0:
            ready = _condition(READY, False, "ScaledToZero", "no pods requested")
        else:
            ready = _condition(READY, False, "NoReadyReplicas", f"0/{rollout.desired} pods ready")
        if rollout.stalled:
            progressing = _condition(
                PROGRESSING, False, "ProgressDeadlineExceeded", rollout.progress_message
            )
            degraded = _condition(
                DEGRADED,
                True,
                "ProgressDeadlineExceeded",
                "pods did not become ready in time: " + rollout.progress_message,
            )
        else:
            if rollout.complete:
                progressing = _condition(PROGRESSING, False, "RolloutComplete", "")
            else:
                message = rollout.progress_message or "pods are updating"
                progressing = _condition(PROGRESSING, True, "RollingOut", message)
            if rollout.failure_reason is not None:
                degraded = _condition(
                    DEGRADED, True, rollout.failure_reason, rollout.failure_message
                )
            else:
                degraded = _condition(DEGRADED, False, "AsExpected", "")
    if problem is not None:
        degraded = _condition(DEGRADED, True, problem.reason, problem.message)
    return [ready, progressing, degraded]


def _stamped(
    new: list[tuple[str, bool, str, str]],
    previous: list[Condition],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """lastTransitionTime moves only when a condition's status flips (metav1 convention)."""
    before = {c.type: c for c in previous}
    stamped = []
    for kind, status, reason, message in new:
        text = "True" if status else "False"
        old = before.get(kind)
        moment = old.last_transition_time if old is not None and old.status == text else now
        condition: dict[str, Any] = {"type": kind, "status": text, "reason": reason}
        condition["message"] = message
        if generation is not None:
            condition["observedGeneration"] = generation
        condition["lastTransitionTime"] = format_time(moment)
        stamped.append(condition)
    return stamped


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
    *,
    generation: int | None,
    previous: VoiceServiceStatus,
    serving: Serving | None,
    rollout: Rollout | None,
    now: datetime,
    problem: Problem | None = None,
) -> dict[str, Any]:
    """The whole status to write (camelCase JSON): conditions, counts, endpoint, placement.

    `serving` is None when the spec could not be read (then `problem` says why): what the
    pods run is then what the previous status said, since their children were left alone.
    Never put secrets into `problem`.
    """
    conditions = _stamped(_conditions_from(rollout, problem), previous.conditions, generation, now)
    status: dict[str, Any] = {"phase": _phase(conditions), "conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    if serving is not None:
        status.update(
            selector=serving.selector,
            endpoint=serving.endpoint,
            model=serving.model,
            precision=serving.precision,
            gpu=serving.gpu,
            fallback=serving.fallback.model_dump(mode="json", exclude_none=True),
        )
    else:
        kept = previous.model_dump(
            mode="json",
            include={"selector", "endpoint", "model", "precision", "gpu", "fallback"},
            exclude_none=True,
        )
        status.update(kept)
    if rollout is not None:
        status["replicas"] = rollout.current
        status["readyReplicas"] = rollout.ready
        status["ready"] = f"{rollout.ready}/{rollout.desired}"
    if previous.autoscaler is not None:
        status["autoscaler"] = previous.autoscaler
    return status


def previous_status(body: Mapping[str, Any]) -> VoiceServiceStatus:
    """The status a body carries, for a body whose spec may be invalid; empty if unreadable."""
    try:
        return VoiceServiceStatus.model_validate(body.get("status") or {})
    except ValueError:
        return VoiceServiceStatus()
