"""kopf handlers: VoiceService changes, child drift, periodic resync. They only read, build, apply.

Errors map to kopf's retry model: conflicts, throttling, 5xx and timeouts are
`TemporaryError` with exponential backoff; a spec the models reject, or a child the API
server refuses as invalid (400/422), is a Degraded condition plus `PermanentError`, so kopf
stops retrying until the spec changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from voicefleet_operator.builders.labels import MANAGED_BY
from voicefleet_operator.crd.models import InvalidVoiceServiceError
from voicefleet_operator.handlers.context import OperatorContext
from voicefleet_operator.handlers.reconcile import Reconciled, reconcile, report_invalid
from voicefleet_operator.k8s.apply import Outcome
from voicefleet_operator.k8s.discovery import detect_optional_apis
from voicefleet_operator.k8s.errors import ApiError, retry_delay
from voicefleet_operator.k8s.resources import (
    DEPLOYMENTS,
    PODDISRUPTIONBUDGETS,
    SERVICES,
    VOICESERVICES,
)

CHILD_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _summary(result: Reconciled, outcome: Outcome) -> str:
    return ", ".join(f"{a.kind} {a.name}" for a in result.changed if a.outcome is outcome)


def _as_kopf_body(body: Mapping[str, Any]) -> kopf.Body:
    return body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, dict(body)))


def _post_events(raw: Mapping[str, Any], result: Reconciled) -> None:
    body = _as_kopf_body(raw)
    created = _summary(result, Outcome.CREATED)
    updated = _summary(result, Outcome.UPDATED)
    if created:
        kopf.info(body, reason="Created", message=f"created {created}")
    if updated:
        kopf.info(body, reason="Updated", message=f"updated {updated}")
    if result.replicas_after is not None and result.replicas_before not in (
        None,
        result.replicas_after,
    ):
        kopf.info(
            body,
            reason="Scaled",
            message=f"replicas {result.replicas_before} -> {result.replicas_after}",
        )


async def _refresh_optional_apis(context: OperatorContext) -> None:
    checked = context.optional_apis_checked_at
    if checked is None or time.monotonic() - checked > context.settings.resync_interval:
        context.optional_apis = await detect_optional_apis(context.client)
        context.optional_apis_checked_at = time.monotonic()


async def reconcile_with_errors_mapped(
    context: OperatorContext, body: Mapping[str, Any], *, retry: int
) -> Reconciled:
    """Reconcile and translate failures into kopf's retry semantics."""
    settings = context.settings
    meta = body["metadata"]
    async with context.lock_for(meta["namespace"], meta["name"]):
        try:
            await _refresh_optional_apis(context)
            result = await reconcile(
                context.client,
                body,
                servicemonitor_api=context.optional_apis.servicemonitors,
                default_image=settings.default_runtime_image,
                now=_now(),
            )
        except InvalidVoiceServiceError as error:
            await _report_permanent(context, body, str(error))
            raise kopf.PermanentError(str(error)) from error
        except ApiError as error:
            if error.invalid:
                message = f"the API server refused a child: {error.message}"
                await _report_permanent(context, body, message)
                raise kopf.PermanentError(message) from error
            delay = retry_delay(retry, backoff=settings.backoff, backoff_max=settings.backoff_max)
            raise kopf.TemporaryError(str(error), delay=delay) from error
    _post_events(body, result)
    return result


async def _report_permanent(
    context: OperatorContext, body: Mapping[str, Any], message: str
) -> None:
    try:
        newly_degraded = await report_invalid(context.client, body, message, now=_now())
    except ApiError as error:
        delay = context.settings.backoff
        raise kopf.TemporaryError(f"cannot report Degraded: {error}", delay=delay) from error
    if newly_degraded:  # one Event per new problem, not one per resync
        kopf.warn(_as_kopf_body(body), reason="InvalidSpec", message=message)


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

    @kopf.timer(
        group, version, plural, registry=registry, interval=context.settings.resync_interval
    )
    async def voiceservice_resync(body: kopf.Body, **kwargs: Any) -> None:
        # Repairs what a missed or failed child event left behind; quiet when nothing changed.
        try:
            await reconcile_with_errors_mapped(context, body, retry=int(kwargs.get("retry", 0)))
        except kopf.PermanentError:
            return  # reported as Degraded already; the next spec change retries

    async def child_changed(body: kopf.Body, type: str | None, logger: Any, **_: Any) -> None:
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
        owner_body = await context.client.get_or_none(VOICESERVICES.path(namespace, owner["name"]))
        if owner_body is None or owner_body["metadata"].get("uid") != owner.get("uid"):
            return  # the owner is gone: the garbage collector takes the child
        if owner_body["metadata"].get("deletionTimestamp"):
            return
        try:
            await reconcile_with_errors_mapped(context, owner_body, retry=0)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            # Event handlers are not retried: the resync timer repairs it later.
            logger.warning(f"reconcile after a {type} of {body.get('kind')} failed: {error}")

    for child in (DEPLOYMENTS, SERVICES, PODDISRUPTIONBUDGETS):
        kopf.on.event(
            child.group, child.version, child.plural, registry=registry, labels=CHILD_LABELS
        )(child_changed)
