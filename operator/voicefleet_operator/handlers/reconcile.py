"""One reconcile of a VoiceService: read, build (pure), apply idempotently, write status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from voicefleet_operator.builders.children import build_children
from voicefleet_operator.builders.deployment import initial_replicas
from voicefleet_operator.builders.labels import PLACEMENT_ANNOTATION, selector_string
from voicefleet_operator.builders.placement import (
    choose_fallback,
    placement_candidates,
    placement_for,
)
from voicefleet_operator.builders.service import endpoint_url
from voicefleet_operator.crd.models import (
    FallbackStatus,
    VoiceService,
    VoiceServiceStatus,
    parse_voiceservice,
)
from voicefleet_operator.k8s.apply import (
    FIELD_MANAGER,
    Applied,
    Outcome,
    apply_child,
    apply_document,
    apply_scalable,
)
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.prune import Pruned, prune_children
from voicefleet_operator.k8s.resources import DEPLOYMENTS, PODS, VOICESERVICES, Resource
from voicefleet_operator.status import (
    Problem,
    Serving,
    derive_status,
    previous_status,
    rollout_of,
)

T = TypeVar("T")
WriteObserver = Callable[[str, str], None]
"""Called with (kind, action) after each child write: action is create, apply or delete."""

AUTOSCALER_STATUS = frozenset({"autoscaler"})
"""Status fields the builtin autoscaler applies as its own field manager: left out of the
operator's status apply, which would otherwise take them over with a stale value."""

WRITE_ACTIONS = {Outcome.CREATED: "create", Outcome.UPDATED: "apply"}


@dataclass(frozen=True)
class Reconciled:
    applied: tuple[Applied, ...]
    written: dict[str, Any] | None
    """The VoiceService as stored after the status write; None when status was current."""
    pruned: tuple[Pruned, ...] = ()

    @property
    def status_written(self) -> bool:
        return self.written is not None

    @property
    def changed(self) -> tuple[Applied, ...]:
        return tuple(a for a in self.applied if a.outcome is not Outcome.UNCHANGED)

    @property
    def scaled(self) -> tuple[Applied, ...]:
        """The children whose count this reconcile set itself (fixed, or autoscaling off)."""
        return tuple(a for a in self.applied if a.scaled_from is not None)


def never_reconciled(body: Mapping[str, Any]) -> bool:
    """No operator has reconciled this VoiceService yet (no observedGeneration) and its spec
    never changed (generation 1): any child it owns was built from this very spec (by an
    operator that stopped before its status write)."""
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed is None and body["metadata"].get("generation") == 1


def may_own_unwanted_children(body: Mapping[str, Any]) -> bool:
    """A first reconcile lists no prunable kinds (a request per VoiceService created)."""
    return not never_reconciled(body)


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
    """Fill runtime.image from the operator's settings where the stored spec names none.
    Copies only the path it writes: `body` is the watch's (or the cache's) object."""
    spec = dict(body.get("spec") or {})
    spec["runtime"] = {"image": image, **(spec.get("runtime") or {})}
    return {**body, "spec": spec}


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


def has_fallback_left(vs: VoiceService, previous: FallbackStatus) -> bool:
    return vs.spec.gpu is not None and previous.index < len(placement_candidates(vs.spec)) - 1


def placement_decision(
    vs: VoiceService,
    previous: FallbackStatus,
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
) -> FallbackStatus:
    """The placement candidate to build, and since when its pods are unschedulable (if so).

    A candidate beyond a shortened fallback list becomes the last one there is."""
    current = min(previous.index, len(placement_candidates(vs.spec)) - 1)
    if not pods_unschedulable(pods, current):
        return FallbackStatus(index=current)
    since = previous.unschedulable_since or now.replace(microsecond=0)
    chosen = choose_fallback(vs.spec, current=current, unschedulable_since=since, now=now)
    if chosen != current:
        return FallbackStatus(index=chosen)  # a new candidate starts its own wait
    return FallbackStatus(index=current, unschedulable_since=since)


def serving(vs: VoiceService, fallback: FallbackStatus) -> Serving:
    """What the children built for `fallback` make the pods run."""
    placement = placement_for(vs.spec, fallback.index)
    return Serving(
        selector=selector_string(vs),
        endpoint=endpoint_url(vs),
        model=vs.spec.served_models(),
        precision=placement.precision,
        gpu=placement.label,
        fallback=fallback,
    )


def status_fields_owned(body: Mapping[str, Any]) -> set[str]:
    """The top-level status fields the operator's last status apply set."""
    owned: set[str] = set()
    for entry in body.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("subresource") == "status":
            fields = (entry.get("fieldsV1") or {}).get("f:status") or {}
            owned.update(key[2:] for key in fields if key.startswith("f:"))
    return owned


def status_is_stale(body: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """A field differs, or one the operator set is no longer wanted."""
    old = body.get("status") or {}
    return any(old.get(key) != value for key, value in status.items()) or bool(
        status_fields_owned(body) - status.keys()
    )


async def write_status(
    api: KubeApi, body: Mapping[str, Any], status: dict[str, Any]
) -> dict[str, Any] | None:
    """Apply the status through /status when it is stale; no request at all when it is not.
    Returns the VoiceService as stored after the write (None: nothing was written).

    Forced: status is the operator's to write (an older operator wrote it by merge patch,
    which left another owner behind)."""
    status = {key: value for key, value in status.items() if key not in AUTOSCALER_STATUS}
    if not status_is_stale(body, status):
        return None
    meta = body["metadata"]
    path = VOICESERVICES.path(meta["namespace"], meta["name"], "status")
    document = apply_document(VOICESERVICES, meta["namespace"], meta["name"], status=status)
    return await api.apply(path, document, field_manager=FIELD_MANAGER, force=True)


async def list_pods(api: KubeApi, vs: VoiceService) -> list[dict[str, Any]]:
    listing = await api.get(PODS.path(vs.namespace), params={"labelSelector": selector_string(vs)})
    return list(listing.get("items") or [])


async def concurrently(steps: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run `steps` at once; their results in order. The first failure cancels the others and
    is raised as itself (the callers map ApiError, not an ExceptionGroup)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(step) for step in steps]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


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
    previous = vs.status or VoiceServiceStatus()
    previous_fallback = previous.fallback or FallbackStatus()
    replicas = desired_replicas(vs)
    # A first reconcile creates the children: reading each before (three GETs answered 404 for
    # every new VoiceService) tells nothing its apply's answer does not. Only an autoscaled
    # Deployment is read, so that a count an autoscaler set is kept.
    read_children = not never_reconciled(body)
    deployment_path = DEPLOYMENTS.path(vs.namespace, vs.name)
    live_deployment = (
        await api.get_or_none(deployment_path) if read_children or replicas is None else None
    )
    # Pods are read only while a fallback is left to move to.
    pods = await list_pods(api, vs) if has_fallback_left(vs, previous_fallback) else []
    fallback = placement_decision(vs, previous_fallback, pods, now)
    children = build_children(
        vs, servicemonitor_api=servicemonitor_api, replicas=replicas, placement_index=fallback.index
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

    async def apply_one(child: dict[str, Any]) -> Applied:
        if child["kind"] == "Deployment":
            initial = initial_replicas(vs.spec)
            result = await apply_scalable(
                api, child, replicas=replicas, initial=initial, live=live_deployment
            )
        else:
            result = await apply_child(api, child, read=read_children)
        if result.outcome in WRITE_ACTIONS:
            on_write(result.kind, WRITE_ACTIONS[result.outcome])
        return result

    # Side by side: no child needs another to exist, and a VoiceService's first reconcile
    # then waits for three round trips instead of seven.
    applied = await concurrently(apply_one(child) for child in children)
    deployment = next((a.live for a in applied if a.kind == "Deployment"), None)
    status = derive_status(
        generation=vs.metadata.generation,
        previous=previous,
        serving=serving(vs, fallback),
        rollout=rollout_of(deployment) if deployment is not None else None,
        now=now,
    )
    written = await write_status(api, body, status)
    return Reconciled(tuple(applied), written, tuple(pruned))


async def report_problem(
    api: KubeApi, body: Mapping[str, Any], problem: Problem, *, now: datetime
) -> bool:
    """Degraded=True with the problem's reason and message; the children stay as they are."""
    meta = body["metadata"]
    deployment = await api.get_or_none(DEPLOYMENTS.path(meta["namespace"], meta["name"]))
    status = derive_status(
        generation=meta.get("generation"),
        previous=previous_status(body),
        serving=None,
        rollout=rollout_of(deployment) if deployment is not None else None,
        now=now,
        problem=problem,
    )
    return await write_status(api, body, status) is not None
