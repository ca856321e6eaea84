"""Every API permission the operator needs: the chart's ClusterRole/Role grants exactly these.

`scope="namespace"` rules go into a Role in each watched namespace, or into the ClusterRole
when the operator watches all namespaces; `scope="cluster"` rules always go into the
ClusterRole. `when` says which deployment mode needs the rule. No wildcards, anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["cluster", "namespace"]
When = Literal["always", "namespaced", "namespaced-peering", "clusterwide-peering"]

OWN = ("get", "list", "watch", "create", "patch")
PRUNE = ("get", "list", "create", "patch", "delete")
"""Optional children: deleted when a VoiceService stops wanting them (see k8s/prune.py)."""


@dataclass(frozen=True)
class Permission:
    api_group: str
    resource: str
    """A plural resource name, or `plural/subresource`."""
    verbs: tuple[str, ...]
    scope: Scope
    when: When
    why: str


PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "cluster",
        "always",
        "kopf discovers the resources it serves by watching CRDs",
    ),
    Permission(
        "voicefleet.io",
        "voiceservices",
        ("get", "list", "watch", "patch"),
        "namespace",
        "always",
        "watch VoiceServices; kopf patches its progress annotations and finalizer",
    ),
    Permission(
        "voicefleet.io",
        "voiceservices/status",
        ("patch",),
        "namespace",
        "always",
        "status is written through the status subresource only",
    ),
    Permission("apps", "deployments", OWN, "namespace", "always", "the pods of each VoiceService"),
    Permission(
        "apps",
        "deployments/scale",
        ("patch",),
        "namespace",
        "always",
        "the builtin autoscaler applies the replica count through the scale subresource",
    ),
    Permission("", "services", OWN, "namespace", "always", "the in-cluster endpoint"),
    Permission(
        "policy",
        "poddisruptionbudgets",
        OWN,
        "namespace",
        "always",
        "keeps serving capacity during node drains",
    ),
    Permission(
        "monitoring.coreos.com",
        "servicemonitors",
        PRUNE,
        "namespace",
        "always",
        "scrape config, applied when prometheus-operator's API exists; deleted when unwanted",
    ),
    Permission(
        "keda.sh",
        "scaledobjects",
        PRUNE,
        "namespace",
        "always",
        "autoscaling.mode keda: a ScaledObject drives the Deployment",
    ),
    Permission(
        "autoscaling",
        "horizontalpodautoscalers",
        PRUNE,
        "namespace",
        "always",
        "autoscaling.mode hpa: an HPA drives the Deployment",
    ),
    Permission(
        "",
        "pods",
        ("list", "patch"),
        "namespace",
        "always",
        "the builtin autoscaler reads pod metrics and sets pod-deletion-cost before scaling down; "
        "GPU fallback reads the pods' PodScheduled condition",
    ),
    Permission(
        "",
        "events",
        ("create",),
        "namespace",
        "always",
        "Events on VoiceServices (kopf posts them)",
    ),
    Permission(
        "events.k8s.io",
        "events",
        ("create",),
        "namespace",
        "always",
        "the same Events where the events.k8s.io API is preferred",
    ),
    Permission(
        "kopf.dev",
        "kopfpeerings",
        ("get", "list", "watch", "patch"),
        "namespace",
        "namespaced-peering",
        "two replicas watching namespaces agree through a KopfPeering who acts",
    ),
    Permission(
        "kopf.dev",
        "clusterkopfpeerings",
        ("get", "list", "watch", "patch"),
        "cluster",
        "clusterwide-peering",
        "two replicas watching all namespaces agree through a ClusterKopfPeering who acts",
    ),
    Permission(
        "",
        "namespaces",
        ("list", "watch"),
        "cluster",
        "namespaced",
        "kopf resolves the watched namespaces and follows them appearing and going "
        "(without it, kopf warns and assumes the named namespaces exist)",
    ),
)


def permissions_for(*, all_namespaces: bool, peering: bool) -> tuple[Permission, ...]:
    """The rules one deployment mode needs."""
    needed: set[When] = {"always"}
    if not all_namespaces:
        needed.add("namespaced")
    if peering:
        needed.add("clusterwide-peering" if all_namespaces else "namespaced-peering")
    return tuple(p for p in PERMISSIONS if p.when in needed)


def allows(
    permissions: tuple[Permission, ...],
    *,
    verb: str,
    api_group: str,
    resource: str,
    subresource: str | None = None,
) -> bool:
    """Whether these rules let the operator make this request (as the RBAC authorizer would)."""
    wanted = f"{resource}/{subresource}" if subresource else resource
    return any(
        p.api_group == api_group and p.resource == wanted and verb in p.verbs for p in permissions
    )
