"""Delete the children a VoiceService no longer wants, and nothing else.

A child is the VoiceService's only when it carries our managed-by and voiceservice labels AND
an ownerReference with the VoiceService's uid: an object someone else labelled alike, or one
left by an earlier VoiceService of the same name, is never touched. Each delete is fenced by
the child's uid, so an object replaced between the list and the delete survives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from voicefleet_operator.builders.labels import MANAGED_BY, MANAGED_BY_LABEL, VOICESERVICE_LABEL
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.errors import ApiError
from voicefleet_operator.k8s.resources import Resource


@dataclass(frozen=True)
class Pruned:
    kind: str
    name: str


def child_selector(owner_name: str) -> str:
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{VOICESERVICE_LABEL}={owner_name}"


def owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    references = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in references)


def unwanted(
    listed: Iterable[Mapping[str, Any]], owner_uid: str, wanted_names: set[str]
) -> list[Mapping[str, Any]]:
    """The listed objects owned by `owner_uid` whose names are not wanted any more."""
    return [
        obj
        for obj in listed
        if owned_by(obj, owner_uid)
        and obj.get("metadata", {}).get("name") not in wanted_names
        and not obj.get("metadata", {}).get("deletionTimestamp")
    ]


async def prune_children(
    api: KubeApi,
    resources: Iterable[Resource],
    *,
    namespace: str,
    owner_name: str,
    owner_uid: str,
    wanted: set[tuple[str, str]],
) -> list[Pruned]:
    """Delete owned children of these resources that are not in `wanted` ((kind, name) pairs).

    A resource whose API the cluster does not serve (404 on the list) has nothing to prune.
    """
    pruned: list[Pruned] = []
    for resource in resources:
        try:
            listing = await api.get(
                resource.path(namespace), params={"labelSelector": child_selector(owner_name)}
            )
        except ApiError as error:
            if error.not_found:
                continue
            raise
        names = {name for kind, name in wanted if kind == resource.kind}
        for obj in unwanted(listing.get("items") or [], owner_uid, names):
            metadata = obj["metadata"]
            await api.delete(resource.path(namespace, metadata["name"]), uid=metadata.get("uid"))
            pruned.append(Pruned(resource.kind, str(metadata["name"])))
    return pruned
