"""The builtin autoscaler's kopf timer: collect, decide, scale the Deployment, report.

History lives in each VoiceService's kopf `memo` (one per resource, nothing global). The
timer writes only the Deployment's replicas (through its scale subresource), pod-deletion-cost
annotations and `status.autoscaler`, each by server-side apply as its own field manager, and
an Event per scale; it never touches the VoiceService spec.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from typing import Any

import httpx
import kopf

from voicefleet_operator.autoscaler.from_spec import policy_from_spec
from voicefleet_operator.autoscaler.policy import (
    Decision,
    Observation,
    PodSample,
    PodState,
    decide,
    deletion_costs,
)
from voicefleet_operator.autoscaler.sources.pods import scrape_pods, scrape_target
from voicefleet_operator.autoscaler.sources.prometheus import PrometheusSource, query_pods
from voicefleet_operator.builders.labels import selector_string
from voicefleet_operator.builders.metrics_queries import fleet_queries
from voicefleet_operator.crd.models import (
    InvalidVoiceServiceError,
    VoiceService,
    parse_voiceservice,
)
from voicefleet_operator.handlers.context import OperatorContext
from voicefleet_operator.k8s.apply import (
    AUTOSCALER_MANAGER,
    OPERATOR_MANAGERS,
    apply_document,
    conflicting_managers,
)
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.errors import ApiError
from voicefleet_operator.k8s.resources import DEPLOYMENTS, PODS, VOICESERVICES

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
HISTORY_KEY = "autoscaler_history"
LAST_RUN_KEY = "autoscaler_last_run"
LAST_SCALE_KEY = "autoscaler_last_scale"


def pod_state(pod: dict[str, Any], now: float) -> PodState:
    metadata = pod["metadata"]
    created = metadata.get("creationTimestamp")
    since = (
        datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        if created
        else now
    )
    if metadata.get("deletionTimestamp"):
        return PodState(metadata["name"], "terminating", since)
    conditions = pod.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    if ready:
        return PodState(metadata["name"], "ready", since)
    started = any(s.get("ready") for s in pod.get("status", {}).get("containerStatuses") or [])
    return PodState(metadata["name"], "unready" if started else "starting", since)


def prometheus_source(vs: VoiceService) -> PrometheusSource | None:
    """Where and what to ask when metrics.source is prometheus: the spec's server, and the
    queries KEDA gets too (its queueDepthQuery and gpuUtilizationQuery included)."""
    metrics = vs.spec.autoscaling.metrics
    if metrics.source != "prometheus" or metrics.prometheus is None:
        return None
    return PrometheusSource(
        url=metrics.prometheus.url,
        queries=fleet_queries(vs),
        timeout_seconds=metrics.prometheus.timeout_seconds,
    )


async def collect(
    vs: VoiceService, pods: Sequence[dict[str, Any]], states: Sequence[PodState]
) -> tuple[PodSample, ...]:
    ready = {s.name for s in states if s.phase == "ready"}
    source = prometheus_source(vs)
    async with httpx.AsyncClient() as client:
        if source is not None:
            return await query_pods(client, source, sorted(ready))
        found = [scrape_target(p) for p in pods if p["metadata"]["name"] in ready]
        targets = [t for t in found if t is not None]
        return await scrape_pods(client, targets)


def autoscaler_status(decision: Decision, last_scale: str | None) -> dict[str, Any]:
    return {
        "desiredReplicas": decision.desired,
        "currentReplicas": decision.current,
        "metrics": dict(decision.metrics),
        "reason": decision.reason,
        "lastScaleTime": last_scale,
    }


async def run_once(
    api: KubeApi, body: kopf.Body, memo: Any, interval: float, logger: Any
) -> Decision | None:
    try:
        vs = parse_voiceservice(body)
    except InvalidVoiceServiceError:
        return None  # the reconcile handler reports it (Degraded); nothing to scale by
    if vs.spec.autoscaling.mode != "builtin":
        return None
    now = time.time()
    last_run = getattr(memo, LAST_RUN_KEY, None)
    poll = float(vs.spec.autoscaling.metrics.poll_interval_seconds)
    if last_run is not None and now - last_run < min(poll, interval) - 0.5:
        return None
    setattr(memo, LAST_RUN_KEY, now)
    deployment = await api.get_or_none(DEPLOYMENTS.path(vs.namespace, vs.name))
    if deployment is None:
        return None
    current = int(deployment.get("spec", {}).get("replicas", 1))
    listed = await api.get(
        f"/api/v1/namespaces/{vs.namespace}/pods", params={"labelSelector": selector_string(vs)}
    )
    pods = list(listed.get("items", []))
    states = [pod_state(p, now) for p in pods]
    samples = await collect(vs, pods, states)
    policy = policy_from_spec(vs)
    history: list[Observation] = list(getattr(memo, HISTORY_KEY, []))
    history.append(Observation(now, current, samples))
    horizon = now - 2 * max(policy.scale_down_stabilization_seconds, policy.stable_window_seconds)
    history = [o for o in history if o.time >= horizon]
    decision = decide(policy, history, states, now)
    history[-1] = history[-1].with_recommendation(decision)
    setattr(memo, HISTORY_KEY, history)

    last_scale: str | None = getattr(memo, LAST_SCALE_KEY, None)
    if decision.desired != current:
        if decision.desired < current:
            await price_pods(api, vs.namespace, deletion_costs(states, samples))
        if await scale_deployment(api, vs, decision.desired, body):
            last_scale = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat()
            setattr(memo, LAST_SCALE_KEY, last_scale)
            kopf.event(body, type="Normal", reason="Scaled", message=decision.reason[:1000])
            logger.info(decision.reason)
    status = autoscaler_status(decision, last_scale)
    stored = (body.get("status") or {}).get("autoscaler")
    if stored != {k: v for k, v in status.items() if v is not None}:  # idle: no write
        await api.apply(
            VOICESERVICES.path(vs.namespace, vs.name, "status"),
            apply_document(VOICESERVICES, vs.namespace, vs.name, status={"autoscaler": status}),
            field_manager=AUTOSCALER_MANAGER,
            # Ours alone; forced because an older operator wrote it by merge patch.
            force=True,
        )
    return decision


async def price_pods(api: KubeApi, namespace: str, costs: dict[str, int]) -> None:
    """Apply each pod's deletion cost, so the ReplicaSet removes the cheapest first."""
    for name, cost in costs.items():
        document = apply_document(PODS, namespace, name, annotations={DELETION_COST: str(cost)})
        try:
            await api.apply(PODS.path(namespace, name), document, field_manager=AUTOSCALER_MANAGER)
        except ApiError as error:
            # Gone since it was listed: an apply to a missing pod is a create, refused as
            # invalid (the document has no containers), so nothing is ever created here.
            if not (error.not_found or error.invalid):
                raise


async def scale_deployment(api: KubeApi, vs: VoiceService, replicas: int, body: kopf.Body) -> bool:
    """Apply the count through the Deployment's scale subresource as AUTOSCALER_MANAGER.

    The Scale document carries nothing but the count, so no other field can be touched. The
    operator's own managers own the count the Deployment was created with: the first scale
    takes it over from them. Any other owner (`kubectl scale`, an HPA or KEDA left from before
    a mode change) is overridden only while the stored VoiceService still says builtin, with a
    Warning; False when the count was left to them."""
    path = DEPLOYMENTS.path(vs.namespace, vs.name, "scale")
    document = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": vs.name, "namespace": vs.namespace},
        "spec": {"replicas": replicas},
    }
    try:
        await api.apply(path, document, field_manager=AUTOSCALER_MANAGER)
        return True
    except ApiError as error:
        if not error.conflict:
            raise
        others = conflicting_managers(error.message) - OPERATOR_MANAGERS
    if others:
        stored = await api.get_or_none(VOICESERVICES.path(vs.namespace, vs.name))
        if stored is None or autoscaling_mode(stored) != "builtin":
            return False
        kopf.warn(
            body,
            reason="FieldConflict",
            message=f"Deployment {vs.name}: took spec.replicas back from "
            f"{', '.join(sorted(others))}: autoscaling.mode is builtin",
        )
    await api.apply(path, document, field_manager=AUTOSCALER_MANAGER, force=True)
    return True


def autoscaling_mode(stored: dict[str, Any]) -> str | None:
    try:
        return parse_voiceservice(stored).spec.autoscaling.mode
    except InvalidVoiceServiceError:
        return None


def builtin_mode(spec: kopf.Spec, **_: Any) -> bool:
    """Only VoiceServices the builtin autoscaler scales get its timer (kopf starts and stops
    it as the mode changes): a thousand idle timers would cost CPU for nothing."""
    autoscaling = spec.get("autoscaling") or {}
    return bool(autoscaling.get("mode", "builtin") == "builtin")


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    interval = context.settings.autoscaler_interval

    @kopf.timer(
        VOICESERVICES.group,
        VOICESERVICES.version,
        VOICESERVICES.plural,
        registry=registry,
        interval=interval,
        idle=None,
        when=builtin_mode,
    )
    async def autoscale(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await run_once(context.client, body, memo, interval, logger)
