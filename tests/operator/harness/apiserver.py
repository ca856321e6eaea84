"""kmock's KubernetesEmulator plus the kube-apiserver behaviours the operator relies on.

kmock stores whatever it is sent and merges patches naively. A real API server also:
assigns uid/creationTimestamp, bumps resourceVersion on every write and refuses stale
ones (409), bumps generation only on spec changes, separates the status and scale
subresources from the main resource, garbage-collects dependents through
ownerReferences, validates custom resources against their schema, and honours
finalizers. This subclass adds exactly that, records every request (for the RBAC
check), and injects faults on demand.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

from .controller import deployment_pods, deployment_status
from .patching import (
    APPLY_PATCH,
    PatchRejected,
    apply_patch,
    labels_match,
    parse_label_selector,
)

# (new object, old object or None) -> human-readable violations; empty when valid.
Validator = Callable[[dict[str, Any], dict[str, Any] | None], list[str]]

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_MANAGED_METADATA = ("uid", "creationTimestamp", "generation", "name", "namespace")


@dataclass(frozen=True)
class ScalePaths:
    """Where the scale subresource reads and writes, as in a CRD's `subresources.scale`."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"


@dataclass(frozen=True)
class ResourceBehaviour:
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    scale: ScalePaths | None = None
    validate: Validator | None = None
    default: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as RBAC sees it: verb, API group, resource and subresource."""

    verb: str | None
    group: str | None
    version: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    method: str
    path: str
    user_agent: str
    content_type: str
    body: Any
    status: int


@dataclass
class Fault:
    """Answer the next `times` matching requests with `status` instead of serving them."""

    status: int
    times: int
    verb: str | None = None
    resource: str | None = None
    subresource: str | None = None
    name: str | None = None
    served: int = 0

    def matches(self, recorded: RecordedRequest) -> bool:
        return (
            self.served < self.times
            and (self.verb is None or self.verb == recorded.verb)
            and (self.resource is None or self.resource == recorded.resource)
            and (self.subresource is None or self.subresource == recorded.subresource)
            and (self.name is None or self.name == recorded.name)
        )


@dataclass
class DeploymentControllerKnobs:
    """What the emulated deployment controller and kubelet report for Deployments."""

    pods_become_ready: bool = True
    unschedulable_gpu_products: set[str] = field(default_factory=set)


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, causes: Iterable[str] = ()):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = list(causes)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _verb_of(request: rendering.Request) -> str | None:
    if request.resource is None or request.resource.plural is None:
        return None
    method = request.method.value if request.method is not None else ""
    named = request.name is not None
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if named else "list"
    return {
        ("POST", False): "create",
        ("PUT", True): "update",
        ("PATCH", True): "patch",
        ("DELETE", True): "delete",
        ("DELETE", False): "deletecollection",
    }.get((method, named))


def _without(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key not in keys}


def _get_path(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.strip(".").split(".")
    target = obj
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def _status_body(error: ApiError) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": error.status,
        "reason": error.reason,
        "message": error.message,
        "details": {"causes": [{"message": cause} for cause in error.causes]},
    }


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    behaviours: dict[kmock.resource, ResourceBehaviour] = attrs.field(factory=dict)
    journal: list[RecordedRequest] = attrs.field(factory=list)
    faults: list[Fault] = attrs.field(factory=list)
    deployments: DeploymentControllerKnobs = attrs.field(factory=DeploymentControllerKnobs)
    _last_resource_version: int = 0
    _background: set[asyncio.Task[None]] = attrs.field(factory=set)
    namespaces: set[str] = attrs.field(factory=set)

    # ----- configuration ------------------------------------------------------------------------

    def register(self, path: str, behaviour: ResourceBehaviour) -> kmock.resource:
        """Serve a resource (`group/version/plural` or `v1/plural`) with these semantics."""
        resource = kmock.resource(path)
        subresources = set()
        if behaviour.status_subresource:
            subresources.add("status")
        if behaviour.scale is not None:
            subresources.add("scale")
        self.resources[resource] = kmock.ResourceInfo(
            kind=behaviour.kind,
            namespaced=behaviour.namespaced,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources=subresources,
        )
        self.behaviours[resource] = behaviour
        return resource

    def inject(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    # ----- reading the state (for assertions) ---------------------------------------------------

    def alive(self, path: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """The live objects of a resource by name (deleted ones excluded)."""
        resource = kmock.resource(path)
        return {
            name: copy.deepcopy(obj.raw)
            for (res, ns, name), obj in self.objects.items()
            if res == resource and not obj.deleted and (namespace is None or ns == namespace)
        }

    def read(self, path: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.alive(path, namespace).get(name)

    # ----- request entry point ------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's URL parser reads `/api/v1/namespaces` as "a namespace named nothing" and
        # fails, so the cluster-scoped Namespace list/watch is served here instead.
        if raw_request.path != "/api/v1/namespaces":
            response: aiohttp.web.StreamResponse = await super().__call__(raw_request)
            return response
        watching = raw_request.query.get("watch") in ("true", "1")
        self.journal.append(
            RecordedRequest(
                verb="watch" if watching else "list",
                group="",
                version="v1",
                resource="namespaces",
                subresource=None,
                namespace=None,
                name=None,
                method=raw_request.method,
                path=raw_request.path,
                user_agent=raw_request.headers.get("User-Agent", ""),
                content_type="",
                body=None,
                status=200,
            )
        )
        names = sorted({ns for (_, ns, _) in self.objects if ns} | self.namespaces)
        items = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": name}}
            for name in names
        ]
        if not watching:
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "NamespaceList",
                    "metadata": {"resourceVersion": str(self._last_resource_version)},
                    "items": items,
                }
            )
        stream = aiohttp.web.StreamResponse()
        await stream.prepare(raw_request)
        for item in items:
            await stream.write(json.dumps({"type": "ADDED", "object": item}).encode() + b"\n")
        timeout = float(raw_request.query.get("timeoutSeconds", 0) or 0) or 3600.0
        await asyncio.sleep(timeout)  # namespaces never change here; end like a server timeout
        return stream

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        verb = _verb_of(request)
        recorded = RecordedRequest(
            verb=verb,
            group=request.resource.group if request.resource else None,
            version=request.resource.version if request.resource else None,
            resource=request.resource.plural if request.resource else None,
            subresource=request.subresource,
            namespace=request.namespace,
            name=request.name,
            method=request.method.value if request.method is not None else "",
            path=request.url.path,
            user_agent=request.headers.get("User-Agent", ""),
            content_type=request.headers.get("Content-Type", ""),
            body=copy.deepcopy(request.data),
            status=0,
        )
        response = await self._respond(request, recorded)
        self.journal.append(dataclasses.replace(recorded, status=response.status))
        return response

    async def _respond(
        self, request: rendering.Request, recorded: RecordedRequest
    ) -> aiohttp.web.StreamResponse:
        for fault in self.faults:
            if fault.matches(recorded):
                fault.served += 1
                return aiohttp.web.json_response(
                    _status_body(ApiError(fault.status, "InjectedFault", "injected by the test")),
                    status=fault.status,
                )
        verb = recorded.verb
        try:
            if verb in WRITE_VERBS:
                return aiohttp.web.json_response(await self._write(request, verb))
            if verb in ("get", "list") or verb is None or verb == "watch":
                return await super()._handle(request)
            raise ApiError(405, "MethodNotAllowed", f"{recorded.method} is not served here")
        except ApiError as error:
            return aiohttp.web.json_response(_status_body(error), status=error.status)
        except PatchRejected as error:
            status = ApiError(error.status, error.reason, error.message)
            return aiohttp.web.json_response(_status_body(status), status=error.status)

    @staticmethod
    def _resource(request: rendering.Request) -> kmock.resource:
        if request.resource is None:
            raise ApiError(404, "NotFound", "the request names no resource")
        return request.resource

    def _behaviour(self, request: rendering.Request) -> ResourceBehaviour:
        for resource, behaviour in self.behaviours.items():
            if resource == request.resource:
                return behaviour
        raise ApiError(
            404, "NotFound", f"the server could not find the resource {request.resource}"
        )

    # ----- reads --------------------------------------------------------------------------------

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        behaviour = self._behaviour(request)
        async with self._lock:
            current = self._current(request, behaviour)
        if request.subresource == "scale":
            return self._scale_of(current, behaviour)
        if request.subresource not in (None, "status"):
            raise ApiError(404, "NotFound", f"no subresource {request.subresource}")
        return current

    def _select(self, request: rendering.Request) -> Callable[[dict[str, Any]], bool]:
        requirements = parse_label_selector(request.params.get("labelSelector", ""))
        fields: dict[str, str] = {}
        for raw in filter(None, request.params.get("fieldSelector", "").split(",")):
            key, _, value = raw.partition("=")
            if key not in ("metadata.name", "metadata.namespace"):
                raise ApiError(400, "BadRequest", f"field selector {key!r} is not supported")
            fields[key] = value.lstrip("=")

        def selected(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            if request.namespace is not None and meta.get("namespace") != request.namespace:
                return False
            if "metadata.name" in fields and meta.get("name") != fields["metadata.name"]:
                return False
            if (
                "metadata.namespace" in fields
                and meta.get("namespace") != fields["metadata.namespace"]
            ):
                return False
            return labels_match(meta.get("labels") or {}, requirements)

        return selected

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        behaviour = self._behaviour(request)
        resource = self._resource(request)
        selected = self._select(request)
        async with self._lock:
            items = [
                copy.deepcopy(obj.raw)
                for (res, _, _), obj in self.objects.items()
                if res == request.resource and not obj.deleted and selected(obj.raw)
            ]
            version = str(self._last_resource_version)
        return {
            "apiVersion": f"{resource.group}/{resource.version}".lstrip("/"),
            "kind": f"{behaviour.kind}List",
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        self._behaviour(request)
        selected = self._select(request)
        timeout = float(request.params.get("timeoutSeconds", 0) or 0) or None
        yield b""  # send the headers now, even if nothing happens for a while
        bus = self._buses[self._resource(request)]
        async with self._lock:
            mark = await bus.mark()
            initial = [
                {"type": "ADDED", "object": copy.deepcopy(obj.raw)}
                for (res, _, _), obj in self.objects.items()
                if res == request.resource and not obj.deleted and selected(obj.raw)
            ]
        for event in initial:
            yield event
        try:
            async with asyncio.timeout(timeout):
                async for event in bus.stream(since=mark):
                    if selected(event["object"]):
                        yield event
        except TimeoutError:
            return  # the server-side timeout: the client re-lists and watches again
        finally:
            await bus.unmark(mark)

    # ----- writes -------------------------------------------------------------------------------

    def _key(self, request: rendering.Request, name: str | None) -> Any:
        if name is None:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        return (request.resource, request.namespace, name)

    def _current(self, request: rendering.Request, behaviour: ResourceBehaviour) -> dict[str, Any]:
        key = self._key(request, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise ApiError(404, "NotFound", f'{behaviour.kind} "{request.name}" not found')
        return copy.deepcopy(self.objects[key].raw)

    def _next_resource_version(self) -> str:
        self._last_resource_version += 1
        return str(self._last_resource_version)

    async def _write(self, request: rendering.Request, verb: str) -> dict[str, Any]:
        behaviour = self._behaviour(request)
        async with self._lock:
            if verb == "create":
                result = await self._create(request, behaviour)
            elif verb == "delete":
                result = await self._delete(request, behaviour)
            elif verb == "deletecollection":
                raise ApiError(405, "MethodNotAllowed", "deletecollection is not emulated")
            elif self._applies_to_a_missing_object(request, verb):
                result = await self._create(request, behaviour)
            else:
                result = await self._modify(request, behaviour, verb)
        return result

    def _applies_to_a_missing_object(self, request: rendering.Request, verb: str) -> bool:
        """Server-side apply creates what does not exist yet."""
        if verb != "patch" or request.subresource is not None:
            return False
        if not request.headers.get("Content-Type", "").startswith(APPLY_PATCH):
            return False
        key = self._key(request, request.name)
        return key not in self.objects or self.objects[key].deleted

    def _check_owner_references(self, obj: dict[str, Any]) -> None:
        for index, ref in enumerate(obj.get("metadata", {}).get("ownerReferences") or []):
            missing = [key for key in ("apiVersion", "kind", "name", "uid") if not ref.get(key)]
            if missing:
                raise ApiError(
                    422,
                    "Invalid",
                    f"metadata.ownerReferences[{index}]: missing {', '.join(missing)}",
                )

    def _validate(
        self, behaviour: ResourceBehaviour, new: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        self._check_owner_references(new)
        if behaviour.validate is not None:
            violations = behaviour.validate(new, old)
            if violations:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{behaviour.kind} "{new["metadata"].get("name")}" is invalid: '
                    + "; ".join(violations),
                    violations,
                )

    async def _create(
        self, request: rendering.Request, behaviour: ResourceBehaviour
    ) -> dict[str, Any]:
        body = request.data
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if meta.get("namespace") not in (None, request.namespace):
            raise ApiError(400, "BadRequest", "the namespace of the body does not match the URL")
        key = self._key(request, meta.get("name"))
        if key in self.objects and not self.objects[key].deleted:
            raise ApiError(409, "AlreadyExists", f'{behaviour.kind} "{key[2]}" already exists')
        if behaviour.status_subresource:
            new.pop("status", None)
        for server_owned in ("deletionTimestamp", "resourceVersion"):
            meta.pop(server_owned, None)
        if behaviour.namespaced:
            meta["namespace"] = request.namespace
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if behaviour.default is not None:
            new = behaviour.default(new)
            meta = new["metadata"]
        self._validate(behaviour, new, None)
        meta["resourceVersion"] = self._next_resource_version()
        if key in self.objects:
            self.objects[key].create(new)
        else:
            self.objects[key] = new
        resource = self._resource(request)
        await self._buses[resource].put({"type": "ADDED", "object": copy.deepcopy(new)})
        # An object whose owners are already gone is collected at once, as the GC would.
        await self._collect_garbage()
        self._after_write(resource, key, behaviour)
        return new

    async def _modify(
        self, request: rendering.Request, behaviour: ResourceBehaviour, verb: str
    ) -> dict[str, Any]:
        current = self._current(request, behaviour)
        subresource = request.subresource
        if subresource == "scale":
            if behaviour.scale is None:
                raise ApiError(404, "NotFound", "this resource has no scale subresource")
            scale = self._scale_of(current, behaviour)
            written = self._written(request, verb, scale)
            self._check_resource_version(current, written)
            new = copy.deepcopy(current)
            _set_path(new, behaviour.scale.spec_replicas, written.get("spec", {}).get("replicas"))
        elif subresource == "status":
            if not behaviour.status_subresource:
                raise ApiError(404, "NotFound", "this resource has no status subresource")
            written = self._written(request, verb, current)
            self._check_resource_version(current, written)
            new = copy.deepcopy(current)
            new["status"] = written.get("status")
            if new["status"] is None:
                new.pop("status")
        elif subresource is None:
            written = self._written(request, verb, current)
            self._check_resource_version(current, written)
            new = copy.deepcopy(written)
            meta = new.setdefault("metadata", {})
            for managed in (*_MANAGED_METADATA, "deletionTimestamp"):
                if managed in current["metadata"]:
                    meta[managed] = current["metadata"][managed]
                else:
                    meta.pop(managed, None)
            if behaviour.status_subresource:
                if "status" in current:
                    new["status"] = current["status"]
                else:
                    new.pop("status", None)
        else:
            raise ApiError(404, "NotFound", f"no subresource {subresource}")
        return await self._commit(self._resource(request), current, new, behaviour)

    def _written(
        self, request: rendering.Request, verb: str, base: dict[str, Any]
    ) -> dict[str, Any]:
        if verb == "update":
            if not isinstance(request.data, dict):
                raise ApiError(400, "BadRequest", "the body must be a JSON object")
            if not request.data.get("metadata", {}).get("resourceVersion"):
                raise ApiError(
                    422, "Invalid", "metadata.resourceVersion: must be specified for an update"
                )
            return copy.deepcopy(request.data)
        content_type = request.headers.get("Content-Type", "")
        return apply_patch(content_type, base, request.data)

    @staticmethod
    def _check_resource_version(current: dict[str, Any], written: dict[str, Any]) -> None:
        wanted = written.get("metadata", {}).get("resourceVersion")
        actual = current["metadata"]["resourceVersion"]
        if wanted is not None and wanted != actual:
            raise ApiError(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version "
                f"and try again (have {wanted}, latest {actual})",
            )

    async def _commit(
        self,
        resource: kmock.resource,
        current: dict[str, Any],
        new: dict[str, Any],
        behaviour: ResourceBehaviour,
    ) -> dict[str, Any]:
        if behaviour.default is not None:
            new = behaviour.default(new)
        meta = new["metadata"]
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return current  # a no-op write: no new resourceVersion, no watch event
        old_finalizers = set(current["metadata"].get("finalizers") or [])
        if current["metadata"].get("deletionTimestamp") and (
            set(meta.get("finalizers") or []) - old_finalizers
        ):
            raise ApiError(
                422, "Forbidden", "no new finalizers can be added if the object is being deleted"
            )
        if _without(new, "metadata", "status") != _without(current, "metadata", "status"):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        self._validate(behaviour, new, current)
        meta["resourceVersion"] = self._next_resource_version()
        key = (resource, meta.get("namespace"), meta["name"])
        self.objects[key].create(new)
        await self._buses[resource].put({"type": "MODIFIED", "object": copy.deepcopy(new)})
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            await self._remove(resource, key)
        else:
            self._after_write(resource, key, behaviour)
        return new

    async def _delete(
        self, request: rendering.Request, behaviour: ResourceBehaviour
    ) -> dict[str, Any]:
        current = self._current(request, behaviour)
        options = request.data if isinstance(request.data, dict) else {}
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            expected = preconditions.get(field_name)
            if expected is not None and expected != current["metadata"].get(field_name):
                raise ApiError(409, "Conflict", f"precondition failed: {field_name}")
        key = (request.resource, request.namespace, request.name)
        if options.get("propagationPolicy") == "Orphan":
            await self._orphan(current["metadata"]["uid"])
        if current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return current
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = _now()
            return await self._commit(self._resource(request), current, new, behaviour)
        await self._remove(self._resource(request), key)
        return current

    async def _remove(self, resource: kmock.resource, key: Any) -> None:
        last = copy.deepcopy(self.objects[key].raw)
        last["metadata"]["resourceVersion"] = self._next_resource_version()
        self.objects[key].delete()
        await self._buses[resource].put({"type": "DELETED", "object": last})
        await self._collect_garbage()

    async def _orphan(self, owner_uid: str) -> None:
        for (resource, _namespace, _name), obj in list(self.objects.items()):
            if obj.deleted:
                continue
            refs = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs):
                new = copy.deepcopy(obj.raw)
                new["metadata"]["ownerReferences"] = [r for r in refs if r["uid"] != owner_uid]
                behaviour = self.behaviours[resource]
                await self._commit(resource, copy.deepcopy(obj.raw), new, behaviour)

    async def _collect_garbage(self) -> None:
        """Delete every object whose owners are all gone, as the garbage collector does."""
        alive_uids = {
            obj.raw["metadata"]["uid"] for obj in self.objects.values() if not obj.deleted
        }
        for (resource, namespace, name), obj in list(self.objects.items()):
            if obj.deleted:
                continue
            refs = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if refs and not any(ref.get("uid") in alive_uids for ref in refs):
                key = (resource, namespace, name)
                current = copy.deepcopy(obj.raw)
                if current["metadata"].get("finalizers"):
                    if not current["metadata"].get("deletionTimestamp"):
                        new = copy.deepcopy(current)
                        new["metadata"]["deletionTimestamp"] = _now()
                        await self._commit(resource, current, new, self.behaviours[resource])
                elif not self.objects[key].deleted:
                    await self._remove(resource, key)  # recurses into grand-children

    # ----- subresources and the emulated controllers --------------------------------------------

    def _scale_of(self, obj: dict[str, Any], behaviour: ResourceBehaviour) -> dict[str, Any]:
        if behaviour.scale is None:
            raise ApiError(404, "NotFound", "this resource has no scale subresource")
        meta = obj["metadata"]
        selector_path = behaviour.scale.label_selector
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                key: meta[key]
                for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if key in meta
            },
            "spec": {"replicas": _get_path(obj, behaviour.scale.spec_replicas)},
            "status": {
                "replicas": _get_path(obj, behaviour.scale.status_replicas) or 0,
                "selector": _get_path(obj, selector_path) if selector_path else None,
            },
        }

    def _after_write(
        self, resource: kmock.resource, key: Any, behaviour: ResourceBehaviour
    ) -> None:
        if resource == kmock.resource("apps/v1/deployments"):
            task = asyncio.get_running_loop().create_task(self._run_deployment_controller(key))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _run_deployment_controller(self, key: Any) -> None:
        """Report the Deployment's pods as the deployment controller and kubelet would."""
        await asyncio.sleep(0)  # after the write's response, as a separate write
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                return
            current = copy.deepcopy(self.objects[key].raw)
            await self._sync_pods(current)
            status = deployment_status(
                current,
                pods_become_ready=self.deployments.pods_become_ready,
                unschedulable_gpu_products=self.deployments.unschedulable_gpu_products,
            )
            if current.get("status") == status:
                return
            new = copy.deepcopy(current)
            new["status"] = status
            behaviour = self.behaviours[key[0]]
            await self._commit(key[0], current, new, behaviour)

    async def _sync_pods(self, deployment: dict[str, Any]) -> None:
        """Create, update and remove the Deployment's pods (where the cluster serves pods)."""
        pods = kmock.resource("v1/pods")
        if pods not in self.behaviours:
            return
        namespace = deployment["metadata"].get("namespace")
        wanted = deployment_pods(
            deployment,
            pods_become_ready=self.deployments.pods_become_ready,
            unschedulable_gpu_products=self.deployments.unschedulable_gpu_products,
        )
        uid = deployment["metadata"]["uid"]
        for (resource, ns, name), obj in list(self.objects.items()):
            if obj.deleted or resource != pods or ns != namespace or name in wanted:
                continue
            refs = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                await self._remove(pods, (resource, ns, name))
        for name, pod in wanted.items():
            key = (pods, namespace, name)
            exists = key in self.objects and not self.objects[key].deleted
            if exists:
                live = self.objects[key].raw
                new = copy.deepcopy(live)
                new["status"] = pod["status"]
                new["metadata"]["annotations"] = pod["metadata"]["annotations"]
                await self._commit(pods, copy.deepcopy(live), new, self.behaviours[pods])
                continue
            meta = pod["metadata"]
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            meta["resourceVersion"] = self._next_resource_version()
            if key in self.objects:
                self.objects[key].create(pod)
            else:
                self.objects[key] = pod
            await self._buses[pods].put({"type": "ADDED", "object": copy.deepcopy(pod)})

    async def refresh_deployments(self) -> None:
        """Re-run the emulated deployment controller, e.g. after changing its knobs."""
        for key, obj in list(self.objects.items()):
            if key[0] == kmock.resource("apps/v1/deployments") and not obj.deleted:
                await self._run_deployment_controller(key)
