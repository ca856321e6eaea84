"""Run the operator: configure kopf, register the handlers into a fresh registry, serve.

High availability: run two replicas without `--standalone`. kopf's peering keeps one replica
active through a KopfPeering object in each watched namespace (or a cluster-wide
ClusterKopfPeering with `--all-namespaces`), named by `peering_name`, which must exist (the
chart creates it): the replica that started first acts (see `replica_priority`), the other
pauses. It takes over at once when the active one stops cleanly (kopf removes its entry), or
once the active one's entry expires (`peering_lifetime`, 60 s) when it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voicefleet_operator.autoscaler.timer import register as register_autoscaler
from voicefleet_operator.handlers import OperatorContext
from voicefleet_operator.handlers import register as register_handlers
from voicefleet_operator.handlers.context import Clock, utc_now
from voicefleet_operator.handlers.metrics import OperatorMetrics
from voicefleet_operator.k8s.cache import CachedKubeApi
from voicefleet_operator.k8s.connection import ClusterConnection, load_connection
from voicefleet_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled state as a digest of what it would store.

    kopf keeps a copy of the spec (with labels and annotations) in an annotation, to tell a
    change from a status write. All of an object's annotations together may not exceed 256 KiB,
    while the object may take 1.5 MiB: a VoiceService with 200 KiB of pod annotations made kopf's
    write refused (422) and retried every second for ever. The handlers never read kopf's diff
    (they reconcile the whole spec), so a digest tells the same "changed or not" in 64 bytes."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        extra = list(extra_fields or [])
        if not extra:
            # kopf deep-copies the body it is given, then keeps only the spec, labels and
            # annotations: given only those, it copies a tenth as much (at each event).
            body = _essential(body)
        essence = super().build(body=body, extra_fields=extra)
        canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"))
        digest = {"sha256": hashlib.sha256(canonical.encode()).hexdigest()}
        return cast(kopf.BodyEssence, digest)


def _essential(body: kopf.Body) -> kopf.Body:
    """`body` without its status and all metadata but labels and annotations."""
    meta = body.get("metadata") or {}
    lean = {key: value for key, value in body.items() if key not in ("status", "metadata")}
    lean["metadata"] = {key: meta[key] for key in ("labels", "annotations") if key in meta}
    return kopf.Body(cast(kopf.RawBody, lean))


PRIORITY_SPAN = 10**16
"""Room below one step of the configured priority for a replica's start time in microseconds
(until the year 2286); 900 steps either way stay within the int64 the API server stores."""


def replica_priority(configured: int, started_at: float) -> int:
    """The priority this replica announces in the peering.

    kopf pauses every peer when two share the highest priority, so two replicas with the
    chart's one priority would both stand by for ever. Within one configured priority, the
    replica that started first ranks highest: the one acting keeps acting while a newer one
    starts (a rolling update), and the newer one takes over when it goes. The random
    microseconds part tells apart two replicas started in the same millisecond."""
    started_us = int(started_at * 1000) * 1000 + secrets.randbelow(1000)
    return configured * PRIORITY_SPAN + (PRIORITY_SPAN - 1 - started_us)


def configure_kopf(
    settings: OperatorSettings,
    kopf_settings: kopf.OperatorSettings,
    *,
    started_at: float | None = None,
) -> None:
    """Map our settings onto kopf's (storage, finalizer, timeouts, events, peering)."""
    started_at = time.time() if started_at is None else started_at
    prefix = settings.annotation_prefix
    kopf_settings.persistence.finalizer = settings.finalizer
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    kopf_settings.persistence.diffbase_storage = DigestDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    kopf_settings.watching.server_timeout = settings.server_timeout
    kopf_settings.watching.client_timeout = settings.client_timeout
    kopf_settings.watching.connect_timeout = settings.connect_timeout
    kopf_settings.networking.request_timeout = settings.request_timeout
    kopf_settings.networking.connect_timeout = settings.connect_timeout
    kopf_settings.queueing.idle_timeout = settings.idle_timeout
    kopf_settings.execution.default_backoff = settings.backoff
    kopf_settings.posting.level = logging.getLevelName(settings.posting_level)
    kopf_settings.posting.reporting_component = "voicefleet-operator"
    kopf_settings.peering.name = settings.peering_name
    kopf_settings.peering.priority = replica_priority(settings.peering_priority, started_at)
    kopf_settings.peering.lifetime = settings.peering_lifetime
    kopf_settings.peering.clusterwide = settings.all_namespaces
    kopf_settings.peering.standalone = settings.standalone
    kopf_settings.peering.mandatory = not settings.standalone


def _connection_info(connection: ClusterConnection) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(
        server=connection.server,
        ca_path=connection.ca_path,
        insecure=connection.insecure,
        token=connection.token,
        certificate_path=connection.client_cert_path,
        private_key_path=connection.client_key_path,
        default_namespace=connection.default_namespace,
    )


def build_registry(
    settings: OperatorSettings, *, clock: Clock = utc_now
) -> tuple[kopf.OperatorRegistry, OperatorContext]:
    """A fresh registry with every handler, and the context they share."""
    registry = kopf.OperatorRegistry()
    context = OperatorContext(settings=settings, clock=clock)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return _connection_info(load_connection(settings.kubeconfig))

    register_handlers(registry, context)
    register_autoscaler(registry, context)
    return registry, context


def watched_namespaces(settings: OperatorSettings) -> list[str]:
    if settings.all_namespaces:
        return []
    if settings.namespaces:
        return list(settings.namespaces)
    connection = load_connection(settings.kubeconfig)
    return [connection.default_namespace or "default"]


def metrics_app(metrics: OperatorMetrics) -> web.Application:
    """GET /metrics in Prometheus' text format, from this operator's own registry."""

    async def scrape(_: web.Request) -> web.Response:
        payload = generate_latest(metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


@contextlib.asynccontextmanager
async def serving_metrics(
    settings: OperatorSettings, metrics: OperatorMetrics
) -> AsyncIterator[None]:
    """Serve /metrics on settings.metrics_port for the life of the block (port 0: not at all)."""
    if settings.metrics_port == 0:
        yield
        return
    runner = web.AppRunner(metrics_app(metrics), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
        logger.info("serving metrics on %s:%d", settings.metrics_host, settings.metrics_port)
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def stopping_background(context: OperatorContext) -> AsyncIterator[None]:
    """Reconciles started in the background end with kopf, before the client closes."""
    try:
        yield
    finally:
        await context.stop_background()


async def serve(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    clock: Clock = utc_now,
) -> None:
    """Run until `stop_flag` is set (or a signal arrives when run from the CLI)."""
    registry, context = build_registry(settings, clock=clock)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(settings, kopf_settings)
    metrics = context.metrics
    # Opened before and closed after kopf: no handler, timer or daemon outlives the client.
    context.api = CachedKubeApi(
        load_connection(settings.kubeconfig),
        cache=context.children,
        request_timeout=settings.request_timeout,
        connect_timeout=settings.connect_timeout,
        on_error=lambda error: metrics.count_api_error(error.status, error.method),
    )
    async with context.api, serving_metrics(settings, metrics), stopping_background(context):
        await kopf.operator(
            registry=registry,
            settings=kopf_settings,
            # Peering comes from kopf_settings: kopf.operator(peering_name=...) forces it on.
            clusterwide=settings.all_namespaces,
            namespaces=watched_namespaces(settings),
            liveness_endpoint=settings.liveness_endpoint,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )


def run_operator(
    namespaces: list[str],
    all_namespaces: bool,
    standalone: bool,
    liveness_endpoint: str | None,
) -> int:
    """The `voicefleet operator` command: CLI flags override VOICEFLEET_OPERATOR_* settings."""
    overrides: dict[str, Any] = {}
    if namespaces:
        overrides["namespaces"] = namespaces
    if all_namespaces:
        overrides["all_namespaces"] = True
    if standalone:
        overrides["standalone"] = True
    if liveness_endpoint:
        overrides["liveness_endpoint"] = liveness_endpoint
    settings = OperatorSettings(**overrides)
    if settings.namespaces and settings.all_namespaces:
        raise SystemExit("--namespace and --all-namespaces exclude each other")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # httpx (the builtin autoscaler's scrapes) logs every request at INFO: with a thousand
    # VoiceServices, most of the log. Failed requests are logged (and counted) by the handlers.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
    return 0
