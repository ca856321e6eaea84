"""kopf handlers: VoiceService changes, child drift, periodic resync. They only read, build, apply.

Errors map to kopf's retry model. A spec the models reject, or a child the API server
refuses as invalid (400/422), is a Degraded condition plus `PermanentError`, so kopf stops
retrying until the spec changes; every trigger (resync timer, child events, kopf's
create/update/resume) then skips a VoiceService that failed permanently at its current
generation, so nothing retries it behind kopf's back (an operator restart tries once more).
Any other API failure (conflicts, throttling, 5xx, timeouts, missing permissions) is a
`TemporaryError` with exponential backoff.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

import kopf

from voicefleet_operator.builders.labels import MANAGED_BY, MANAGED_BY_LABEL
from voicefleet_operator.crd.models import InvalidVoiceServiceError
from voicefleet_operator.handlers.context import OperatorContext
from voicefleet_operator.handlers.metrics import ReconcileResult
from voicefleet_operator.handlers.reconcile import (
    Reconciled,
    may_own_unwanted_children,
    reconcile,
    report_problem,
)
from voicefleet_operator.k8s.apply import FIELD_MANAGER, Outcome
from voicefleet_operator.k8s.discovery import OptionalApis, detect_optional_apis
from voicefleet_operator.k8s.errors import ApiError, retry_delay
from voicefleet_operator.k8s.resources import (
    DEPLOYMENTS,
    PODDISRUPTIONBUDGETS,
    PRUNABLE_RESOURCES,
    SCALEDOBJECTS,
    SERVICEMONITORS,
    SERVICES,
    VOICESERVICES,
    Resource,
)
from voicefleet_operator.status import CHILD_REJECTED, INVALID_SPEC, Problem

CHILD_LABELS = {MANAGED_BY_LABEL: MANAGED_BY}


def prunable_resources(apis: OptionalApis) -> tuple[Resource, ...]:
    """Kinds a VoiceService may stop wanting; optional APIs only where the cluster serves them."""
    served = {SERVICEMONITORS: apis.servicemonitors, SCALEDOBJECTS: apis.scaledobjects}
    return tuple(r for r in PRUNABLE_RESOURCES if served.get(r, True))


def own_fields_only(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without other managers' managedFields (most of a stored VoiceService's size):
    the reconcile reads only the operator's own (status_fields_owned)."""
    meta = dict(body["metadata"])
    meta["managedFields"] = [
        entry for entry in meta.get("managedFields") or [] if entry.get("manager") == FIELD_MANAGER
    ]
    return {**body, "metadata": meta}


def _summary(result: Reconciled, outcome: Outcome) -> str:
    return ", ".join(f"{a.kind} {a.name}" for a in result.changed if a.outcome is outcome)


def _as_kopf_body(body: Mapping[str, Any]) -> kopf.Body:
    return body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, dict(body)))


def _post_events(raw: Mapping[str, Any], result: Reconciled) -> None:
    body = _as_kopf_body(raw)
    created = _summary(result, Outcome.CREATED)
    updated = _summary(result, Outcome.UPDATED)
    deleted = ", ".join(f"{p.kind} {p.name}" for p in result.pruned)
    if created:
        kopf.info(body, reason="Created", message=f"created {created}")
    if updated:
        kopf.info(body, reason="Updated", message=f"updated {updated}")
    if deleted:
        kopf.info(body, reason="Deleted", message=f"deleted {deleted}, no longer wanted")
    for applied in result.applied:
        if applied.took_back:
            kopf.warn(
                body,
                reason="FieldConflict",
                message=f"{applied.kind} {applied.name}: took back fields another field "
                f"manager had changed: {applied.took_back}"[:1000],
            )
    # Only the counts this reconcile wrote: one an autoscaler set meanwhile (a reconcile runs
    # after each of its scales) has the autoscaler's own event already.
    for scaled in result.scaled:
        count = (scaled.live.get("spec") or {}).get("replicas")
        kopf.info(
            body,
            reason="Scaled",
            message=f"{scaled.kind} {scaled.name}: replicas {scaled.scaled_from} -> {count}, "
            "as the spec sets them",
        )


async def _refresh_optional_apis(context: OperatorContext) -> None:
    async with context.discovery_lock:  # one discovery for every reconcile waiting on it
        checked = context.optional_apis_checked_at
        if checked is None or time.monotonic() - checked > context.settings.resync_interval:
            context.optional_apis = await detect_optional_apis(context.client)
            context.optional_apis_checked_at = time.monotonic()


async def reconcile_with_errors_mapped(
    context: OperatorContext,
    body: Mapping[str, Any],
    *,
    retry: int,
    coalesce: bool = False,
    follow_up: bool = False,
) -> Reconciled | None:
    """Reconcile and translate failures into kopf's retry semantics.

    None: nothing to do. This generation already failed for good (checked under the lock, so
    a reconcile queued behind the failing one, from another trigger, skips too); or a newer
    generation was reconciled while this body waited; or, with `coalesce` (child events and
    resyncs), a reconcile of this VoiceService is queued already and will see the same state.
    `follow_up`: started by a child's change (see FOLLOW_UPS_AT_ONCE).
    """
    settings = context.settings
    metrics = context.metrics
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    version = (meta.get("uid"), meta.get("generation"))
    if coalesce and context.reconcile_queued(namespace, name):
        return None
    async with context.turn(namespace, name, follow_up=follow_up):
        body = context.freshest(body)
        version = (body["metadata"].get("uid"), body["metadata"].get("generation"))
        if context.superseded(namespace, name, version) or failed_permanently(context, body):
            return None
        started = time.monotonic()

        def counted(outcome: ReconcileResult) -> None:
            metrics.count_reconcile(outcome, time.monotonic() - started)

        try:
            await _refresh_optional_apis(context)
            prunable = prunable_resources(context.optional_apis)
            prune = context.prune_due(
                namespace, name, version, prunable
            ) and may_own_unwanted_children(body)
            result = await reconcile(
                context.client,
                body,
                servicemonitor_api=context.optional_apis.servicemonitors,
                prunable=prunable if prune else (),
                default_image=settings.default_runtime_image,
                now=context.clock(),
                on_write=metrics.count_child_write,
            )
            context.mark_pruned(namespace, name, version, prunable)
        except InvalidVoiceServiceError as error:
            counted(ReconcileResult.INVALID_SPEC)
            context.mark_failed(namespace, name, version)
            await _report_permanent(context, body, Problem(INVALID_SPEC, str(error)))
            raise kopf.PermanentError(str(error)) from error
        except ApiError as error:
            if error.invalid:
                counted(ReconcileResult.REJECTED)
                context.mark_failed(namespace, name, version)
                message = f"the API server refused a child: {error.message}"
                await _report_permanent(context, body, Problem(CHILD_REJECTED, message))
                raise kopf.PermanentError(message) from error
            counted(ReconcileResult.RETRY)
            delay = retry_delay(retry, backoff=settings.backoff, backoff_max=settings.backoff_max)
            raise kopf.TemporaryError(str(error), delay=delay) from error
        counted(ReconcileResult.SUCCESS)
        context.clear_failed(namespace, name)
        context.mark_reconciled(namespace, name, version)
        if result.written is not None:
            context.remember_written(own_fields_only(result.written))
    _record_autoscaler(context, body)
    _post_events(body, result)
    return result


def _record_autoscaler(context: OperatorContext, body: Mapping[str, Any]) -> None:
    """Export the builtin autoscaler's last decision, as it reported it in status.autoscaler."""
    meta = body["metadata"]
    mode = (body.get("spec") or {}).get("autoscaling", {}).get("mode")
    decided = ((body.get("status") or {}).get("autoscaler") or {}).get("desiredReplicas")
    replicas = int(decided) if mode == "builtin" and isinstance(decided, int) else None
    context.metrics.set_autoscaler_desired(meta["namespace"], meta["name"], replicas)


def failed_permanently(context: OperatorContext, body: Mapping[str, Any]) -> bool:
    """Whether this generation already failed for good: only a spec change retries it."""
    meta = body["metadata"]
    version = (meta.get("uid"), meta.get("generation"))
    if not context.failed_at(meta["namespace"], meta["name"], version):
        return False
    context.metrics.count_reconcile(ReconcileResult.SKIPPED, 0.0)
    return True


async def _report_permanent(
    context: OperatorContext, body: Mapping[str, Any], problem: Problem
) -> None:
    try:
        newly_degraded = await report_problem(context.client, body, problem, now=context.clock())
    except ApiError as error:
        delay = context.settings.backoff
        raise kopf.TemporaryError(f"cannot report Degraded: {error}", delay=delay) from error
    if newly_degraded:  # one Event per new problem, not one per resync
        kopf.warn(_as_kopf_body(body), reason=problem.reason, message=problem.message)


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    """Register every handler into `registry` (no import-time registration anywhere)."""
    group, version, plural = VOICESERVICES.group, VOICESERVICES.version, VOICESERVICES.plural

    @kopf.on.resume(group, version, plural, registry=registry)
    @kopf.on.create(group, version, plural, registry=registry)
    @kopf.on.update(group, version, plural, registry=registry)
    async def voiceservice_changed(body: kopf.Body, retry: int, **_: Any) -> None:
        await reconcile_with_errors_mapped(context, body, retry=retry)

    @kopf.on.delete(group, version, plural, registry=registry, optional=True)
    async def voiceservice_deleted(body: kopf.Body, **_: Any) -> None:
        # Children go with their owner (ownerReferences); only the in-memory lock remains.
        context.forget(body["metadata"]["namespace"], body["metadata"]["name"])

    # The first resync comes one interval after the start: creation or resume reconciles then.
    resync = context.settings.resync_interval

    @kopf.timer(group, version, plural, registry=registry, interval=resync, initial_delay=resync)
    async def voiceservice_resync(body: kopf.Body, **kwargs: Any) -> None:
        # Repairs what a missed or failed child event left behind; quiet when nothing changed.
        try:
            await reconcile_with_errors_mapped(
                context, body, retry=int(kwargs.get("retry", 0)), coalesce=True
            )
        except kopf.PermanentError:
            return  # reported as Degraded already; the next spec change retries

    @kopf.index(group, version, plural, registry=registry, id="voiceservice_bodies")
    async def voiceservice_bodies(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> Any:
        """Every VoiceService as the operator's watch last saw it: a child event finds its
        owner here instead of asking the API server once per child event. (async: kopf runs
        a plain function in a thread, a hand-over that cost more than the function.)"""
        return {(namespace, name): own_fields_only(body)}

    async def child_changed(body: kopf.Body, type: str | None, logger: Any, **kwargs: Any) -> None:
        owners: kopf.Index[tuple[str, str], kopf.Body] = kwargs["voiceservice_bodies"]
        if type == "DELETED":
            context.children.forget_object(body)
        elif not context.children.remember(body):
            return  # nothing a reconcile reads changed
        owner = next(
            (
                ref
                for ref in body.get("metadata", {}).get("ownerReferences") or []
                if ref.get("kind") == VOICESERVICES.kind
                and ref.get("apiVersion") == VOICESERVICES.api_version
            ),
            None,
        )
        namespace = body.get("metadata", {}).get("namespace")
        if owner is None or namespace is None:
            return
        if context.reconcile_queued(namespace, owner["name"]):
            return  # that reconcile reads this child as it is then
        owner_body = next(iter(owners.get((namespace, owner["name"]), [])), None)
        if owner_body is None or owner_body["metadata"].get("uid") != owner.get("uid"):
            return  # the owner is gone: the garbage collector takes the child
        if owner_body["metadata"].get("deletionTimestamp"):
            return
        kind = body.get("kind")

        async def reconcile_owner() -> None:
            try:
                await reconcile_with_errors_mapped(context, owner_body, retry=0, follow_up=True)
            except (kopf.TemporaryError, kopf.PermanentError) as error:
                # Event handlers are not retried: the resync timer repairs it later.
                logger.warning(f"reconcile after a {type} of {kind} failed: {error}")

        context.reconcile_in_background(namespace, owner["name"], reconcile_owner)

    for child in (DEPLOYMENTS, SERVICES, PODDISRUPTIONBUDGETS):
        kopf.on.event(
            child.group, child.version, child.plural, registry=registry, labels=CHILD_LABELS
        )(child_changed)
