"""An emulated kube-apiserver (kmock plus the behaviours the operator relies on)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .apiserver import (
    ApiServer,
    DeploymentControllerKnobs,
    Fault,
    RecordedRequest,
    ResourceBehaviour,
    ScalePaths,
    Validator,
)

__all__ = [
    "ApiServer",
    "DeploymentControllerKnobs",
    "Fault",
    "RecordedRequest",
    "ResourceBehaviour",
    "ScalePaths",
    "Validator",
    "register_cluster_resources",
]

VOICESERVICES = "voicefleet.io/v1alpha1/voiceservices"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
PDBS = "policy/v1/poddisruptionbudgets"
EVENTS = "v1/events"
SERVICEMONITORS = "monitoring.coreos.com/v1/servicemonitors"
SCALEDOBJECTS = "keda.sh/v1alpha1/scaledobjects"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
PODS = "v1/pods"


def register_cluster_resources(
    server: ApiServer,
    *,
    voiceservice_validator: Validator | None,
    voiceservice_defaulter: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    voiceservice_scale: ScalePaths | None,
    with_servicemonitors: bool = False,
    with_keda: bool = False,
) -> None:
    """Serve what a cluster with the VoiceService CRD installed serves to the operator."""
    server.register(
        VOICESERVICES,
        ResourceBehaviour(
            kind="VoiceService",
            status_subresource=True,
            scale=voiceservice_scale,
            validate=voiceservice_validator,
            default=voiceservice_defaulter,
        ),
    )
    server.register(
        DEPLOYMENTS,
        ResourceBehaviour(kind="Deployment", status_subresource=True, scale=ScalePaths()),
    )
    server.register(SERVICES, ResourceBehaviour(kind="Service", status_subresource=True))
    server.register(PDBS, ResourceBehaviour(kind="PodDisruptionBudget", status_subresource=True))
    server.register(EVENTS, ResourceBehaviour(kind="Event"))
    server.register("events.k8s.io/v1/events", ResourceBehaviour(kind="Event"))
    server.register(
        "apiextensions.k8s.io/v1/customresourcedefinitions",
        ResourceBehaviour(
            kind="CustomResourceDefinition", namespaced=False, status_subresource=True
        ),
    )
    server.register("v1/namespaces", ResourceBehaviour(kind="Namespace", namespaced=False))
    server.register(PODS, ResourceBehaviour(kind="Pod", status_subresource=True))
    server.register(
        HPAS, ResourceBehaviour(kind="HorizontalPodAutoscaler", status_subresource=True)
    )
    if with_keda:
        server.register(SCALEDOBJECTS, ResourceBehaviour(kind="ScaledObject"))
    if with_servicemonitors:
        server.register(SERVICEMONITORS, ResourceBehaviour(kind="ServiceMonitor"))
