"""Idempotent apply: write a child only when it is missing, outdated, or was edited.

A child is up to date when its `voicefleet.io/spec-hash` annotation equals the desired one
AND every field we set still has the value we set (the API server may add defaults; those
are not drift). Anything else is repaired with one merge patch that also nulls the fields
we no longer set, guarded by the live resourceVersion so a concurrent writer wins a 409
instead of being overwritten.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from voicefleet_operator.builders.labels import SPEC_HASH_ANNOTATION
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.resources import resource_of

OWNED_SECTIONS = ("spec",)
"""Top-level sections the operator owns entirely: every child it builds keeps its content in
`spec` (metadata is compared field by field instead, since others add to it)."""
SERVER_OWNED_SPEC_FIELDS = {
    "Service": ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"),
}
"""Fields the API server allocates: never nulled by a patch, never drift."""


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


def merge_patch_between(live: Any, desired: Any) -> Any:
    """The RFC 7386 merge patch that turns `live` into `desired` (null removes a key)."""
    if not isinstance(desired, dict) or not isinstance(live, dict):
        return copy.deepcopy(desired)
    patch: dict[str, Any] = {}
    for key in live.keys() - desired.keys():
        patch[key] = None
    for key, value in desired.items():
        if key not in live:
            patch[key] = copy.deepcopy(value)
        elif live[key] != value:
            sub = merge_patch_between(live[key], value)
            if sub != {}:
                patch[key] = sub
    return patch


def _hash(obj: dict[str, Any]) -> str | None:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(SPEC_HASH_ANNOTATION)
    return str(value) if value is not None else None


def _kept_from_live(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """Desired plus the live fields we deliberately leave to others (replicas, allocations)."""
    merged = copy.deepcopy(desired)
    live_spec = live.get("spec") or {}
    spec = merged.setdefault("spec", {})
    keep = SERVER_OWNED_SPEC_FIELDS.get(str(desired.get("kind")), ())
    if desired.get("kind") == "Deployment":
        keep = (*keep, "replicas")
    for field in keep:
        if field not in spec and field in live_spec:
            spec[field] = copy.deepcopy(live_spec[field])
    return merged


def is_up_to_date(desired: dict[str, Any], live: dict[str, Any]) -> bool:
    """No write needed: same hash, and nobody changed a field we set."""
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


def repair_patch(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that restores every field we own, fenced by the live resourceVersion."""
    target = _kept_from_live(desired, live)
    meta = target.get("metadata", {})
    live_meta = live.get("metadata", {})
    patch: dict[str, Any] = {
        "metadata": {
            "resourceVersion": live_meta.get("resourceVersion"),
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
            "ownerReferences": meta.get("ownerReferences") or [],
        }
    }
    for section in OWNED_SECTIONS:
        if section in target:
            section_patch = merge_patch_between(live.get(section), target[section])
            if section_patch != {}:
                patch[section] = section_patch
    return patch


async def apply_child(api: KubeApi, desired: dict[str, Any]) -> Applied:
    resource = resource_of(desired)
    meta = desired["metadata"]
    name = str(meta["name"])
    namespace = meta.get("namespace")
    path = resource.path(namespace, name)
    live = await api.get_or_none(path)
    if live is None:
        created = await api.create(resource.path(namespace), desired)
        return Applied(resource.kind, name, Outcome.CREATED, created)
    if is_up_to_date(desired, live):
        return Applied(resource.kind, name, Outcome.UNCHANGED, live)
    patched = await api.merge_patch(path, repair_patch(desired, live))
    return Applied(resource.kind, name, Outcome.UPDATED, patched)
