"""Server-side apply of the children, and only when something changed.

The API server merges, and records which field manager owns which field: fields the operator
never lists (a user's annotations, the replica count an HPA or KEDA sets) stay theirs, and a
field the operator stops listing goes. A child is applied only when it is missing, its
`voicefleet.io/spec-hash` annotation differs from the desired one, or a field we set no longer
has our value: an idle operator sends no write at all (even an apply that changes nothing is a
request, and an audited one). When someone else took one of our fields (`kubectl edit`), the
apply is refused with a conflict naming them; the operator takes the field back and says so.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from voicefleet_operator.builders.labels import SPEC_HASH_ANNOTATION
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.errors import ApiError
from voicefleet_operator.k8s.resources import Resource, resource_of

FIELD_MANAGER = "voicefleet-operator"
REPLICAS_MANAGER = "voicefleet-operator-replicas"
"""Owns a Deployment's spec.replicas apart from the rest, so that applying the rest never
takes the count from an autoscaler, nor drops it (which would reset it to 1)."""
AUTOSCALER_MANAGER = "voicefleet-autoscaler"
"""The builtin autoscaler: a Deployment's count (through its scale subresource, as an HPA
writes it), the pods' deletion cost and `status.autoscaler`."""
OPERATOR_MANAGERS = frozenset({FIELD_MANAGER, REPLICAS_MANAGER})
OWNED_SECTIONS = ("spec",)
"""Top-level sections the operator sets: every child it builds keeps its content in `spec`
(metadata is compared field by field instead, since others add to it)."""


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    outcome: Outcome
    live: dict[str, Any]
    took_back: str | None = None
    """The API server's conflict message when another manager had changed our fields."""
    scaled_from: int | None = None
    """The count this apply replaced with the operator's own (None: it wrote no count). A count
    that changed meanwhile by another hand (an autoscaler's) is theirs to report, not ours."""


def contains(live: Any, desired: Any) -> bool:
    """Whether every field of `desired` has the same value in `live` (extra live fields ok)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def _hash(obj: dict[str, Any]) -> str | None:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(SPEC_HASH_ANNOTATION)
    return str(value) if value is not None else None


def is_up_to_date(desired: dict[str, Any], live: dict[str, Any]) -> bool:
    """No write needed: same hash, and every field we set still has our value (server
    defaults and fields others added are not drift)."""
    if _hash(live) is None or _hash(live) != _hash(desired):
        return False
    meta = desired.get("metadata", {})
    live_meta = live.get("metadata", {})
    return (
        contains(live_meta.get("labels") or {}, meta.get("labels") or {})
        and contains(live_meta.get("annotations") or {}, meta.get("annotations") or {})
        and contains(live_meta.get("ownerReferences") or [], meta.get("ownerReferences") or [])
        and all(
            contains(live.get(section), desired[section])
            for section in OWNED_SECTIONS
            if section in desired
        )
    )


def conflicting_managers(message: str) -> frozenset[str]:
    """The field managers a server-side apply conflict names ('conflict with "kubectl"...')."""
    return frozenset(re.findall(r'conflicts? with "([^"]+)"', message))


async def apply_as(
    api: KubeApi, path: str, body: dict[str, Any], *, field_manager: str
) -> tuple[dict[str, Any], str | None]:
    """Apply; on a conflict take the fields back and return the conflict's message too."""
    try:
        return await api.apply(path, body, field_manager=field_manager), None
    except ApiError as error:
        if not error.conflict:
            raise
        conflict = error.message
    forced = await api.apply(path, body, field_manager=field_manager, force=True)
    return forced, conflict


async def _apply_over(
    api: KubeApi, path: str, desired: dict[str, Any], live: dict[str, Any] | None
) -> Applied:
    kind, name = str(desired["kind"]), str(desired["metadata"]["name"])
    if live is not None and is_up_to_date(desired, live):
        return Applied(kind, name, Outcome.UNCHANGED, live)
    applied, took_back = await apply_as(api, path, desired, field_manager=FIELD_MANAGER)
    return Applied(
        kind, name, Outcome.CREATED if live is None else Outcome.UPDATED, applied, took_back
    )


def _path_of(desired: dict[str, Any]) -> str:
    meta = desired["metadata"]
    return resource_of(desired).path(meta.get("namespace"), str(meta["name"]))


async def apply_child(api: KubeApi, desired: dict[str, Any], *, read: bool = True) -> Applied:
    """Apply `desired` unless the live child has it already; `read=False` applies without
    reading it first (a child to create: the apply creates it, or updates one that exists)."""
    path = _path_of(desired)
    live = await api.get_or_none(path) if read else None
    return await _apply_over(api, path, desired, live)


def apply_document(
    resource: Resource,
    namespace: str,
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """An apply body that names the object and lists only the given fields."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
        **sections,
    }


def _replicas_only(desired: dict[str, Any], replicas: int) -> dict[str, Any]:
    meta = desired["metadata"]
    return apply_document(
        resource_of(desired), meta.get("namespace"), meta["name"], spec={"replicas": replicas}
    )


async def apply_scalable(
    api: KubeApi,
    desired: dict[str, Any],
    *,
    replicas: int | None,
    initial: int,
    live: dict[str, Any] | None,
) -> Applied:
    """Apply a Deployment whose count the operator owns (`replicas`) or leaves to an
    autoscaler (None: `initial` when the Deployment is created, then never set again).

    The count is applied apart, as REPLICAS_MANAGER. At creation the first apply carries it
    too, so the Deployment never starts at the default of 1; the second makes it
    REPLICAS_MANAGER's, so later applies of the rest, which leave it out, keep it.
    `live` is the Deployment as the caller just read it (None: there is none)."""
    path = _path_of(desired)
    rest = copy.deepcopy(desired)
    rest.get("spec", {}).pop("replicas", None)
    if live is None:
        count = replicas if replicas is not None else initial
        created = await _apply_over(
            api, path, {**rest, "spec": {"replicas": count, **rest["spec"]}}, None
        )
        scaled, _ = await apply_as(
            api, path, _replicas_only(desired, count), field_manager=REPLICAS_MANAGER
        )
        return Applied(created.kind, created.name, Outcome.CREATED, scaled, created.took_back)
    result = await _apply_over(api, path, rest, live)
    current = (result.live.get("spec") or {}).get("replicas")
    if replicas is None or current == replicas:
        return result
    scaled, took_back = await apply_as(
        api, path, _replicas_only(desired, replicas), field_manager=REPLICAS_MANAGER
    )
    return Applied(
        result.kind,
        result.name,
        Outcome.UPDATED,
        scaled,
        result.took_back or took_back,
        scaled_from=current,
    )
