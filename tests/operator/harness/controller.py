"""What the deployment controller and the kubelet would report for a Deployment.

No pods run here: the status is derived from the spec, so the operator's status derivation
can be observed. GPU products listed as unschedulable keep their pods Pending.
"""

from __future__ import annotations

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
