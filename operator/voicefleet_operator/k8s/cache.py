"""The children as the operator's own watches last saw them, so that a reconcile reads them from
memory instead of asking the API server: with 1,000 VoiceServices a resync of every one would
otherwise be three GETs each, every resync interval, with nothing changed.

Filled from the child watch events kopf already delivers (the operator watches its Deployments,
Services and PodDisruptionBudgets to repair drift) and from the answers to its own writes. An
entry older than `max_age` is read again from the server: a watch that was cut and re-listed
does not report what was deleted in between, and this bounds how long such a child stays
unrepaired. Only objects that carry the operator's managed-by label are kept (only those are
watched), and of each only what a reconcile reads (its identity, labels, annotations, owners,
spec, and the status of the kinds whose status it reads): managedFields alone are about half of
a Deployment. `remember` also tells whether an event changed any of that, so that the events
a reconcile has nothing to learn from (a PodDisruptionBudget's status, the echo of the
operator's own write, a re-listing) start none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from voicefleet_operator.builders.labels import MANAGED_BY, MANAGED_BY_LABEL
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.resources import Resource

KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
)


def is_newer(incoming: Mapping[str, Any], known: Mapping[str, Any]) -> bool:
    """Whether `incoming` is not older than `known` (the same object). Resource versions are
    etcd revisions; the API conventions call them opaque, so anything that is not a number
    counts as newer."""
    new = str(incoming.get("metadata", {}).get("resourceVersion", ""))
    old = str(known.get("metadata", {}).get("resourceVersion", ""))
    if new.isdigit() and old.isdigit():
        return int(new) >= int(old)
    return True


def _same_apart_from_version(one: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    def unversioned(view: Mapping[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in view["metadata"].items() if k != "resourceVersion"}
        return {**view, "metadata": meta}

    return unversioned(one) == unversioned(other)


class ChildCache:
    def __init__(
        self,
        resources: Iterable[Resource],
        *,
        max_age: float,
        with_status: Iterable[Resource] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`with_status`: the resources whose status is kept too (the others' is dropped)."""
        self._resources = {(r.api_version, r.kind): r for r in resources}
        self._with_status = {(r.api_version, r.kind) for r in with_status}
        # (the URL before /namespaces/, plural) of each resource, to recognise its object paths
        self._collections = {(r.path().rsplit("/", 1)[0], r.plural) for r in resources}
        self._max_age = max_age
        self._clock = clock
        self._objects: dict[str, tuple[float, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def _path_of(self, obj: Mapping[str, Any]) -> str | None:
        resource = self._resources.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
        meta = obj.get("metadata") or {}
        if resource is None or not meta.get("name") or not meta.get("namespace"):
            return None
        return resource.path(meta["namespace"], meta["name"])

    def covers(self, path: str) -> bool:
        """Whether `path` names one object (no subresource) of a cached resource."""
        prefix, sep, rest = path.partition("/namespaces/")
        parts = rest.split("/")
        return bool(sep) and len(parts) == 3 and (prefix, parts[1]) in self._collections

    def get(self, path: str) -> dict[str, Any] | None:
        """The cached object (read-only), or None when unknown or too old to trust."""
        entry = self._objects.get(path)
        if entry is None:
            return None
        stored_at, obj = entry
        if self._clock() - stored_at > self._max_age:
            del self._objects[path]
            return None
        return obj

    def _view(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """What a reconcile reads of `obj`."""
        meta = obj["metadata"]
        view: dict[str, Any] = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "metadata": {key: meta[key] for key in KEPT_METADATA if key in meta},
        }
        if "spec" in obj:
            view["spec"] = obj["spec"]
        if "status" in obj and (view["apiVersion"], view["kind"]) in self._with_status:
            view["status"] = obj["status"]
        return view

    def remember(self, obj: Mapping[str, Any]) -> bool:
        """Keep what a reconcile reads of `obj`. True when that differs from what was kept
        (its resourceVersion apart), or nothing was: only then has a reconcile news to read."""
        path = self._path_of(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if path is None or labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            return False
        current = self._objects.get(path)
        if current is not None and not is_newer(obj, current[1]):
            return False  # a watch event older than the answer to our own write
        view = self._view(obj)
        self._objects[path] = (self._clock(), view)
        return current is None or not _same_apart_from_version(view, current[1])

    def forget(self, path: str) -> None:
        self._objects.pop(path, None)

    def forget_object(self, obj: Mapping[str, Any]) -> None:
        path = self._path_of(obj)
        if path is not None:
            self.forget(path)


class CachedKubeApi(KubeApi):
    """KubeApi whose single-object GETs of cached resources come from `cache` when it has
    them, and whose writes and deletes of those keep the cache current."""

    def __init__(self, *args: Any, cache: ChildCache, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache = cache

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        if self.cache.covers(path):
            cached = self.cache.get(path)
            if cached is not None:
                return cached
        found = await super().get_or_none(path)
        if found is not None and self.cache.covers(path):
            self.cache.remember(found)
        return found

    def _written(self, path: str, answer: dict[str, Any]) -> None:
        if self.cache.covers(path):
            self.cache.remember(answer)
            return
        parent = path.rsplit("/", 1)[0]
        if self.cache.covers(parent):  # a subresource (scale): the answer is not the object
            self.cache.forget(parent)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        patched = await super().merge_patch(path, patch)
        self._written(path, patched)
        return patched

    async def apply(
        self, path: str, body: dict[str, Any], *, field_manager: str, force: bool = False
    ) -> dict[str, Any]:
        applied = await super().apply(path, body, field_manager=field_manager, force=force)
        self._written(path, applied)
        return applied

    async def delete(self, path: str, *, uid: str | None = None) -> None:
        self.cache.forget(path)
        await super().delete(path, uid=uid)
