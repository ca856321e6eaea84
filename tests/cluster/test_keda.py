"""KEDA mode on the real control plane: the operator owns the ScaledObject, KEDA's HPA owns the
replica count, users own the annotations they add, and the operator's reconciles take none of
it back; a field of the operator's that someone else changed is taken back with a Warning.

KEDA itself does not run here (no image reaches this machine). Its part is played by what it
writes: the ScaledObject's status, and the HPA it makes for each ScaledObject
(`keda-hpa-<name>`, owned by the ScaledObject). The real HPA controller in
kube-controller-manager then writes the count through the Deployment's scale subresource, as it
does for KEDA. With no metrics API served it only enforces its bounds, which is enough: a floor
of 3 over a Deployment of 1 is a scale it makes at once.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import OPERATOR, PROMETHEUS
from tests.cluster.controlplane import ControlPlane
from tests.cluster.test_autoscaling import replica_owners, replicas, scale_writes, template_env
from tests.cluster.test_operator import apply, now_rfc3339, voiceservice, warning_messages
from tests.operator.harness.running import RunningOperator, eventually

KEDA_MANAGER = "keda-operator"
HPA_CONTROLLER = "kube-controller-manager"
USER_ANNOTATION = "example.com/owner"
CHILDREN = {
    "deployment": "/apis/apps/v1/namespaces/{ns}/deployments/stt",
    "service": "/api/v1/namespaces/{ns}/services/stt",
    "poddisruptionbudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/stt",
    "scaledobject": "/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/stt",
}
KEDA_HPA = "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/keda-hpa-stt"


def read_or_none(api: httpx.Client, path: str) -> dict[str, Any] | None:
    """None while missing, and while a new CRD's API still fills its watch cache (429)."""
    response = api.get(path)
    if response.status_code in (404, 429):
        return None
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


def keda_hpa(namespace: str, scaled_object: dict[str, Any], floor: int) -> dict[str, Any]:
    """The HPA KEDA makes for a ScaledObject: its triggers as external metrics, its bounds."""
    meta = scaled_object["metadata"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "keda-hpa-stt",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "keda-operator",
                "scaledobject.keda.sh/name": "stt",
            },
            "ownerReferences": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "scaleTargetRef": scaled_object["spec"]["scaleTargetRef"],
            "minReplicas": floor,
            "maxReplicas": scaled_object["spec"]["maxReplicaCount"],
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": "s0-prometheus",
                            "selector": {"matchLabels": {"scaledobject.keda.sh/name": "stt"}},
                        },
                        "target": {"type": "AverageValue", "averageValue": "2"},
                    },
                }
            ],
        },
    }


def play_keda(api: httpx.Client, namespace: str, scaled_object: dict[str, Any]) -> None:
    """What KEDA writes when it takes a ScaledObject on: its HPA and the object's status."""
    created = api.post(
        f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
        params={"fieldManager": KEDA_MANAGER},
        json=keda_hpa(namespace, scaled_object, floor=3),
    )
    created.raise_for_status()
    status = {
        "scaleTargetKind": "apps/v1.Deployment",
        "hpaName": "keda-hpa-stt",
        "originalReplicaCount": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "ScaledObjectReady"}],
    }
    patched = api.patch(
        CHILDREN["scaledobject"].format(ns=namespace) + "/status",
        params={"fieldManager": KEDA_MANAGER},
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    patched.raise_for_status()


def changed_everywhere(body: dict[str, Any]) -> dict[str, Any]:
    """A spec change that makes the operator apply the Deployment (env), the Service (its
    annotations) and the ScaledObject (the ceiling) again."""
    changed = copy.deepcopy(body)
    spec = changed["spec"]
    spec["replicas"]["max"] = 5
    spec.setdefault("runtime", {}).setdefault("env", []).append(
        {"name": "EXAMPLE_SETTING", "value": "on"}
    )
    spec["service"] = {"annotations": {"example.com/load-balancer": "internal"}}
    return changed


@pytest.mark.usefixtures("keda")
async def test_keda_mode_never_takes_the_count_or_a_users_annotations(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    plane = control_plane
    paths = {kind: path.format(ns=namespace) for kind, path in CHILDREN.items()}
    body = voiceservice(
        namespace,
        replicas={"min": 1, "max": 4},
        autoscaling={"mode": "keda", "metrics": PROMETHEUS},
    )
    apply(plane, body)
    with plane.client() as api:
        scaled_object = await eventually(
            lambda: read_or_none(api, paths["scaledobject"]),
            within=60,
            what="the operator's ScaledObject",
        )
        assert replicas(api, namespace, "stt") == 1

        play_keda(api, namespace, scaled_object)
        await eventually(
            lambda: replicas(api, namespace, "stt") == 3,
            within=60,
            what="the real HPA controller scales the Deployment to KEDA's HPA's floor",
        )
        hpa_owners = replica_owners(plane, namespace, "stt")
        assert hpa_owners == {(HPA_CONTROLLER, "Update", "scale")}, hpa_owners

        for kind in CHILDREN:
            plane.kubectl(
                "annotate", kind, "stt", "-n", namespace, f"{USER_ANNOTATION}=team-speech"
            )
        after = now_rfc3339()
        apply(plane, changed_everywhere(body))

        def reapplied() -> bool:
            scaled = read_or_none(api, paths["scaledobject"]) or {}
            service = read_or_none(api, paths["service"]) or {}
            return (
                scaled.get("spec", {}).get("maxReplicaCount") == 5
                and "example.com/load-balancer" in service["metadata"].get("annotations", {})
                and "EXAMPLE_SETTING" in template_env(api, namespace, "stt")
            )

        await eventually(reapplied, within=60, what="the operator applies the changed children")
        await asyncio.sleep(3)  # three resyncs at the test's interval: time for a fight to show

        assert replicas(api, namespace, "stt") == 3
        assert replica_owners(plane, namespace, "stt") == hpa_owners
        assert scale_writes(plane, namespace, after=after) == []
        for kind, path in paths.items():
            annotations = read_or_none(api, path)["metadata"].get("annotations") or {}  # type: ignore[index]
            assert annotations.get(USER_ANNOTATION) == "team-speech", kind
        scaled_object = read_or_none(api, paths["scaledobject"]) or {}
        assert scaled_object["status"]["hpaName"] == "keda-hpa-stt", "KEDA's status is kept"
        hpa = read_or_none(api, KEDA_HPA.format(ns=namespace))
        assert hpa is not None, "KEDA's HPA is not the operator's to prune"
        assert hpa["spec"]["minReplicas"] == 3
        touched = {
            (w["objectRef"]["resource"], w["objectRef"].get("subresource", ""))
            for w in plane.writes_by(OPERATOR.name, after=after)
            if w["objectRef"]["resource"] != "events"
        }
        assert ("horizontalpodautoscalers", "") not in touched
        assert ("scaledobjects", "status") not in touched

        # Someone changes a field the operator set: the operator's next apply is refused with
        # a conflict naming them, and it takes the field back, saying so.
        plane.kubectl(
            "patch", "scaledobject", "stt", "-n", namespace, "--type=merge",
            "-p", '{"spec": {"maxReplicaCount": 10}}',
        )  # fmt: skip
        await eventually(
            lambda: (
                (read_or_none(api, paths["scaledobject"]) or {})["spec"]["maxReplicaCount"] == 5
            ),
            within=30,
            what="the operator takes the ceiling back",
        )
        await eventually(  # posted a moment after the write
            lambda: any(
                "ScaledObject stt" in m and "kubectl-patch" in m
                for m in warning_messages(plane, namespace, "FieldConflict")
            ),
            within=30,
            what="a FieldConflict Warning naming kubectl-patch",
        )
        annotations = (read_or_none(api, paths["scaledobject"]) or {})["metadata"]["annotations"]
        assert annotations.get(USER_ANNOTATION) == "team-speech"
        assert replicas(api, namespace, "stt") == 3
