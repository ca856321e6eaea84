"""Which optional APIs the cluster serves (prometheus-operator, KEDA)."""

from __future__ import annotations

from dataclasses import dataclass

from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.resources import SCALEDOBJECTS, SERVICEMONITORS, Resource


@dataclass(frozen=True)
class OptionalApis:
    servicemonitors: bool
    scaledobjects: bool


async def serves(api: KubeApi, resource: Resource) -> bool:
    """Whether discovery lists the resource (a missing group answers 404)."""
    listing = await api.get_or_none(f"/apis/{resource.group}/{resource.version}")
    if listing is None:
        return False
    return any(item.get("name") == resource.plural for item in listing.get("resources", []))


async def detect_optional_apis(api: KubeApi) -> OptionalApis:
    return OptionalApis(
        servicemonitors=await serves(api, SERVICEMONITORS),
        scaledobjects=await serves(api, SCALEDOBJECTS),
    )
