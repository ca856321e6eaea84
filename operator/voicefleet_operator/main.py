"""Run the operator: configure kopf, register the handlers into a fresh registry, serve.

High availability: run two replicas without `--standalone`. kopf's peering elects one
active replica through a KopfPeering object in each watched namespace (or a cluster-wide
ClusterKopfPeering with `--all-namespaces`), named by `peering_name`; the other replica
pauses until the active one stops refreshing the peering object (its lifetime, 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from voicefleet_operator.autoscaler.timer import register as register_autoscaler
from voicefleet_operator.handlers import OperatorContext
from voicefleet_operator.handlers import register as register_handlers
from voicefleet_operator.handlers.context import Clock, utc_now
from voicefleet_operator.handlers.metrics import OperatorMetrics
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.connection import ClusterConnection, load_connection
from voicefleet_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


def configure_kopf(settings: OperatorSettings, kopf_settings: kopf.OperatorSettings) -> None:
    """Map our settings onto kopf's (storage, finalizer, timeouts, events, peering)."""
    prefix = settings.annotation_prefix
    kopf_settings.persistence.finalizer = settings.finalizer
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
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
    kopf_settings.peering.priority = settings.peering_priority
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
    context.api = KubeApi(
        load_connection(settings.kubeconfig),
        request_timeout=settings.request_timeout,
        connect_timeout=settings.connect_timeout,
        on_error=lambda error: metrics.count_api_error(error.status, error.method),
    )
    async with context.api, serving_metrics(settings, metrics):
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
    asyncio.run(serve(settings))
    return 0
