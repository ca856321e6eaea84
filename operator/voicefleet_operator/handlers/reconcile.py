"""One reconcile of a VoiceService: read, build (pure), apply idempotently, write status."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from voicefleet_operator.builders.children import build_children
from voicefleet_operator.builders.placement import choose_fallback
from voicefleet_operator.crd.models import VoiceService, parse_voiceservice
from voicefleet_operator.k8s.apply import Applied, Outcome, apply_child, merge_patch_between
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.resources import DEPLOYMENTS, VOICESERVICES
from voicefleet_operator.status import derive_status, format_time


@dataclass(frozen=True)
class Reconciled:
    applied: tuple[Applied, ...]
    status_written: bool
    replicas_before: int | None
    replicas_after: int | None

    @property
    def changed(self) -> tuple[Applied, ...]:
        return tuple(a for a in self.applied if a.outcome is not Outcome.UNCHANGED)


def desired_replicas(vs: VoiceService) -> int | None:
    """The count the operator owns; None leaves it to the autoscaler (builtin, KEDA or HPA).

    `kubectl scale` writes spec.replicas.fixed (the scale subresource's specReplicasPath).
    """
    if vs.spec.replicas.fixed is not None:
        return vs.spec.replicas.fixed
    if vs.spec.autoscaling.mode == "off":
        return vs.spec.replicas.min
    return None


def with_default_image(body: Mapping[str, Any], image: str) -> dict[str, Any]:
    """Fill runtime.image from the operator's settings where the stored spec names none."""
    copied = copy.deepcopy(dict(body))
    runtime = copied.setdefault("spec", {}).setdefault("runtime", {})
    runtime.setdefault("image", image)
    return copied


def _unschedulable(deployment: Mapping[str, Any] | None) -> bool:
    """Pods asked for, none ready, the controller reporting the Deployment unavailable."""
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    wanted = int((deployment.get("spec") or {}).get("replicas", 1) or 0)
    available = any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return wanted > 0 and not status.get("readyReplicas") and not available


def placement_decision(
    vs: VoiceService, old_status: Mapping[str, Any], live: Mapping[str, Any] | None, now: datetime
) -> tuple[int, str | None]:
    """(candidate index, unschedulable-since) after looking at the live Deployment."""
    fallback = old_status.get("fallback") or {}
    current = int(fallback.get("index", 0) or 0)
    since_text = fallback.get("unschedulableSince")
    if not _unschedulable(live):
        return current, None
    since = datetime.fromisoformat(since_text.replace("Z", "+00:00")) if since_text else now
    chosen = choose_fallback(vs.spec, current=current, unschedulable_since=since, now=now)
    if chosen != current:
        return chosen, None  # a new candidate starts its own wait
    return current, format_time(since)


async def write_status(api: KubeApi, body: Mapping[str, Any], status: dict[str, Any]) -> bool:
    """Patch /status with only what differs; no request at all when nothing does."""
    meta = body["metadata"]
    patch = merge_patch_between(dict(body.get("status") or {}), status)
    if not patch:
        return False
    path = VOICESERVICES.path(meta["namespace"], meta["name"], "status")
    await api.merge_patch(path, {"status": patch})
    return True


async def reconcile(
    api: KubeApi,
    body: Mapping[str, Any],
    *,
    servicemonitor_api: bool,
    default_image: str,
    now: datetime,
) -> Reconciled:
    """Raises InvalidVoiceServiceError for a bad spec and ApiError for a refused request."""
    vs = parse_voiceservice(with_default_image(body, default_image))
    old_status = dict(body.get("status") or {})
    deployment_path = DEPLOYMENTS.path(vs.namespace, vs.name)
    live_deployment = await api.get_or_none(deployment_path)
    before = (live_deployment or {}).get("spec", {}).get("replicas")
    index, unschedulable_since = placement_decision(vs, old_status, live_deployment, now)
    replicas = desired_replicas(vs)
    children = build_children(
        vs, servicemonitor_api=servicemonitor_api, replicas=replicas, placement_index=index
    )
    applied: list[Applied] = []
    for child in children:
        if child["kind"] == "Deployment" and replicas is None and live_deployment is None:
            # A new Deployment starts at the lower bound; afterwards the autoscaler owns it.
            child = copy.deepcopy(child)
            child["spec"]["replicas"] = vs.spec.replicas.min
        applied.append(await apply_child(api, child))
    deployment = next((a.live for a in applied if a.kind == "Deployment"), None)
    status = derive_status(body, deployment, now=now)
    if unschedulable_since is not None:
        status["fallback"] = {
            **status.get("fallback", {}),
            "unschedulableSince": unschedulable_since,
        }
    elif "fallback" in status:
        status["fallback"] = {
            k: v for k, v in status["fallback"].items() if k != "unschedulableSince"
        }
    written = await write_status(api, body, status)
    after = (deployment or {}).get("spec", {}).get("replicas")
    return Reconciled(tuple(applied), written, before, after)


async def report_invalid(
    api: KubeApi, body: Mapping[str, Any], message: str, *, now: datetime
) -> bool:
    """Degraded=True with a readable message; the children stay as they are."""
    deployment = await api.get_or_none(
        DEPLOYMENTS.path(body["metadata"]["namespace"], body["metadata"]["name"])
    )
    return await write_status(api, body, derive_status(body, deployment, now=now, error=message))
