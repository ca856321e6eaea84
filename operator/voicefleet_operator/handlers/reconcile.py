"""One reconcile of a VoiceService: read, build (pure), apply idempotently, write status."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from voicefleet_operator.builders.children import build_children
from voicefleet_operator.builders.labels import PLACEMENT_ANNOTATION, selector_string
from voicefleet_operator.builders.placement import choose_fallback, placement_candidates
from voicefleet_operator.crd.models import VoiceService, parse_voiceservice
from voicefleet_operator.k8s.apply import Applied, Outcome, apply_child, merge_patch_between
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.prune import Pruned, prune_children
from voicefleet_operator.k8s.resources import DEPLOYMENTS, PODS, VOICESERVICES, Resource
from voicefleet_operator.status import derive_status, format_time

WriteObserver = Callable[[str, str], None]
"""Called with (kind, action) after each child write: action is create, patch or delete."""

WRITE_ACTIONS = {Outcome.CREATED: "create", Outcome.UPDATED: "patch"}


@dataclass(frozen=True)
class Reconciled:
    applied: tuple[Applied, ...]
    status_written: bool
    replicas_before: int | None
    replicas_after: int | None
    pruned: tuple[Pruned, ...] = ()

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


def _pod_condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def pods_unschedulable(pods: Sequence[Mapping[str, Any]], candidate: int) -> bool:
    """The scheduler found no node for any pod of this placement candidate.

    Only pods built for `candidate` count (pods of an earlier candidate may still be pending
    while they go). A pod that is scheduled but slow to start (a large model loading) is not
    unschedulable: falling back would not help it. Some pods scheduled and others not means
    capacity is short, not absent: no fallback either.
    """
    mine = [
        pod
        for pod in pods
        if (pod.get("metadata", {}).get("annotations") or {}).get(PLACEMENT_ANNOTATION)
        == str(candidate)
        and not pod.get("metadata", {}).get("deletionTimestamp")
    ]
    scheduling = [_pod_condition(pod, "PodScheduled") for pod in mine]
    if any(condition.get("status") == "True" for condition in scheduling):
        return False
    return any(
        condition.get("status") == "False" and condition.get("reason") == "Unschedulable"
        for condition in scheduling
    )


def has_fallback_left(vs: VoiceService, old_status: Mapping[str, Any]) -> bool:
    current = int((old_status.get("fallback") or {}).get("index", 0) or 0)
    return vs.spec.gpu is not None and current < len(placement_candidates(vs.spec)) - 1


def placement_decision(
    vs: VoiceService,
    old_status: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
) -> tuple[int, str | None]:
    """(candidate index, unschedulable-since) after looking at the pods of the VoiceService."""
    fallback = old_status.get("fallback") or {}
    current = int(fallback.get("index", 0) or 0)
    since_text = fallback.get("unschedulableSince")
    if not pods_unschedulable(pods, current):
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


async def list_pods(api: KubeApi, vs: VoiceService) -> list[dict[str, Any]]:
    listing = await api.get(PODS.path(vs.namespace), params={"labelSelector": selector_string(vs)})
    return list(listing.get("items") or [])


def _ignore_write(kind: str, action: str) -> None:
    return None


async def reconcile(
    api: KubeApi,
    body: Mapping[str, Any],
    *,
    servicemonitor_api: bool,
    prunable: Sequence[Resource],
    default_image: str,
    now: datetime,
    on_write: WriteObserver = _ignore_write,
) -> Reconciled:
    """Raises InvalidVoiceServiceError for a bad spec and ApiError for a refused request.

    Children of the `prunable` resources that the spec no longer asks for are deleted first,
    so two autoscalers (a ScaledObject and an HPA) never drive the Deployment at once.
    """
    vs = parse_voiceservice(with_default_image(body, default_image))
    old_status = dict(body.get("status") or {})
    deployment_path = DEPLOYMENTS.path(vs.namespace, vs.name)
    live_deployment = await api.get_or_none(deployment_path)
    before = (live_deployment or {}).get("spec", {}).get("replicas")
    # Pods are read only while a fallback is left to move to.
    pods = await list_pods(api, vs) if has_fallback_left(vs, old_status) else []
    index, unschedulable_since = placement_decision(vs, old_status, pods, now)
    replicas = desired_replicas(vs)
    children = build_children(
        vs, servicemonitor_api=servicemonitor_api, replicas=replicas, placement_index=index
    )
    pruned = await prune_children(
        api,
        prunable,
        namespace=vs.namespace,
        owner_name=vs.name,
        owner_uid=str(vs.metadata.uid),
        wanted={(child["kind"], child["metadata"]["name"]) for child in children},
    )
    for gone in pruned:
        on_write(gone.kind, "delete")
    applied: list[Applied] = []
    for child in children:
        if child["kind"] == "Deployment" and replicas is None and live_deployment is None:
            # A new Deployment starts at the lower bound; afterwards the autoscaler owns it.
            child = copy.deepcopy(child)
            child["spec"]["replicas"] = vs.spec.replicas.min
        result = await apply_child(api, child)
        if result.outcome in WRITE_ACTIONS:
            on_write(result.kind, WRITE_ACTIONS[result.outcome])
        applied.append(result)
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
    return Reconciled(tuple(applied), written, before, after, tuple(pruned))


async def report_invalid(
    api: KubeApi, body: Mapping[str, Any], message: str, *, now: datetime
) -> bool:
    """Degraded=True with a readable message; the children stay as they are."""
    deployment = await api.get_or_none(
        DEPLOYMENTS.path(body["metadata"]["namespace"], body["metadata"]["name"])
    )
    return await write_status(api, body, derive_status(body, deployment, now=now, error=message))
