"""What the deployment controller and the kubelet would report for a Deployment.

No containers run here: the status is derived from the spec, so the operator's status
derivation can be observed. Pod objects are created with the conditions the scheduler and
kubelet would set; GPU products listed as unschedulable keep their pods Pending with
PodScheduled=False/Unschedulable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def deployment_status(
    deployment: dict[str, Any],
    *,
    pods_become_ready: bool,
    unschedulable_gpu_products: set[str],
) -> dict[str, Any]:
    spec = deployment.get("spec", {})
    wanted = int(spec.get("replicas", 1))
    pod_spec = spec.get("template", {}).get("spec", {})
    product = (pod_spec.get("nodeSelector") or {}).get(GPU_PRODUCT_LABEL)
    schedulable = product not in unschedulable_gpu_products
    ready = wanted if (pods_become_ready and schedulable) else 0
    available = ready >= wanted
    generation = deployment["metadata"].get("generation", 1)
    return {
        "observedGeneration": generation,
        "replicas": wanted,
        "updatedReplicas": wanted,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": wanted - ready,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if available else "ReplicaSetUpdated",
                "message": "ReplicaSet is progressing."
                if schedulable
                else f"0/{wanted} pods scheduled: no node offers {product}",
            },
        ],
    }


def template_hash(deployment: dict[str, Any]) -> str:
    """Stands in for the pod-template-hash of the Deployment's current ReplicaSet."""
    template = deployment.get("spec", {}).get("template", {})
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _pod_conditions(scheduled: bool, ready: bool, product: str | None) -> list[dict[str, Any]]:
    if not scheduled:
        return [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node "
                f"affinity/selector ({GPU_PRODUCT_LABEL}={product}). preemption: 0/3 nodes are "
                "available: 3 Preemption is not helpful for scheduling.",
            }
        ]
    return [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {
            "type": "ContainersReady",
            "status": "True" if ready else "False",
            **({} if ready else {"reason": "ContainersNotReady"}),
        },
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            **({} if ready else {"reason": "ContainersNotReady"}),
        },
    ]


def deployment_pods(
    deployment: dict[str, Any],
    *,
    pods_become_ready: bool,
    unschedulable_gpu_products: set[str],
) -> dict[str, dict[str, Any]]:
    """The pods the Deployment's current ReplicaSet would have, by name, with their status.

    Old pods are gone at once (no rolling update), and the pods are owned by the Deployment
    itself, since no ReplicaSets are emulated.
    """
    spec = deployment.get("spec", {})
    meta = deployment["metadata"]
    template = spec.get("template", {})
    pod_spec = template.get("spec", {})
    product = (pod_spec.get("nodeSelector") or {}).get(GPU_PRODUCT_LABEL)
    scheduled = product not in unschedulable_gpu_products
    ready = scheduled and pods_become_ready
    suffix = template_hash(deployment)
    pods = {}
    for index in range(int(spec.get("replicas", 1))):
        name = f"{meta['name']}-{suffix}-{index}"
        status: dict[str, Any] = {
            "phase": "Running" if scheduled else "Pending",
            "conditions": _pod_conditions(scheduled, ready, product),
        }
        pods[name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta.get("namespace"),
                "labels": {
                    **(template.get("metadata", {}).get("labels") or {}),
                    "pod-template-hash": suffix,
                },
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {**pod_spec, **({"nodeName": f"node-{index}"} if scheduled else {})},
            "status": status,
        }
    return pods
