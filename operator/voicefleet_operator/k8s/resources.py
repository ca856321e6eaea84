"""The resources the operator reads and writes, and their URLs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource is not None:
                base += f"/{subresource}"
        return base


VOICESERVICES = Resource("voicefleet.io", "v1alpha1", "voiceservices", "VoiceService")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICES = Resource("", "v1", "services", "Service")
PODDISRUPTIONBUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
SERVICEMONITORS = Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
SCALEDOBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
PODS = Resource("", "v1", "pods", "Pod")
HORIZONTALPODAUTOSCALERS = Resource(
    "autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"
)

CHILD_RESOURCES: tuple[Resource, ...] = (
    DEPLOYMENTS,
    SERVICES,
    PODDISRUPTIONBUDGETS,
    SERVICEMONITORS,
    SCALEDOBJECTS,
    HORIZONTALPODAUTOSCALERS,
)
"""Every kind the builders may produce; rbac.PERMISSIONS grants exactly these."""

WATCHED_CHILDREN: tuple[Resource, ...] = (DEPLOYMENTS, SERVICES, PODDISRUPTIONBUDGETS)
"""The children built for every VoiceService: the operator watches them to repair drift."""

PRUNABLE_RESOURCES: tuple[Resource, ...] = (
    SERVICEMONITORS,
    SCALEDOBJECTS,
    HORIZONTALPODAUTOSCALERS,
)
"""The children a VoiceService may stop wanting (monitoring API gone, autoscaling.mode changed);
the others are built for every VoiceService and go only with it (garbage collection)."""


def resource_of(obj: dict[str, Any]) -> Resource:
    """The resource an object belongs to, from its apiVersion and kind."""
    for resource in (*CHILD_RESOURCES, VOICESERVICES):
        if (resource.api_version, resource.kind) == (obj.get("apiVersion"), obj.get("kind")):
            return resource
    raise ValueError(f"the operator does not manage {obj.get('apiVersion')} {obj.get('kind')}")
