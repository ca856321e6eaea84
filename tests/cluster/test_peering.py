"""Two operator replicas with kopf peering, installed by the chart (peering CRD, KopfPeering,
RBAC), each its own `voicefleet operator` process under the chart's ServiceAccount: one acts,
the other stands by, and takes over when the active one is killed."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.controlplane import ControlPlane
from tests.cluster.operatorprocess import OperatorProcess
from tests.cluster.test_chart import CHART, RELEASE, forbidden, helm
from tests.cluster.test_operator import apply, ready, voiceservice
from tests.operator.harness.running import eventually

RECONCILES = "voicefleet_operator_reconciles_total"
LIFETIME = 6
"""Seconds a peer's entry lives without a keep-alive (the chart's operators: 60)."""


def peers(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    peering = plane.client().get(
        f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/voicefleet"
    )
    return dict(peering.json().get("status") or {}) if peering.is_success else {}


async def test_two_replicas_one_acts_and_the_other_takes_over_when_it_dies(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release_namespace = f"{namespace}-system"
    values = {"watchNamespaces": [namespace], "replicaCount": 2, "peering": {"enabled": True}}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    helm(
        control_plane,
        "install", RELEASE, str(CHART), "-n", release_namespace, "--create-namespace",
        "-f", str(tmp_path / "values.yaml"),
    )  # fmt: skip
    account = f"{RELEASE}-voicefleet"
    token = control_plane.kubectl(
        "create", "token", account, "-n", release_namespace, "--duration=1h"
    ).stdout.strip()
    kubeconfig = tmp_path / "kubeconfig-chart-account"
    kubeconfig.write_text(yaml.safe_dump(control_plane.kubeconfig_dict(token, namespace=namespace)))
    # What the chart's Deployment gives each replica, plus a short lifetime for the test.
    env = {
        "VOICEFLEET_OPERATOR_PEERING_NAME": "voicefleet",
        "VOICEFLEET_OPERATOR_PEERING_LIFETIME": str(LIFETIME),
        "VOICEFLEET_OPERATOR_RESYNC_INTERVAL": "2",
    }
    replicas = [
        OperatorProcess(kubeconfig, ["-n", namespace], tmp_path / f"{pod}.log", env=env, pod_id=pod)
        for pod in ("operator-a", "operator-b")
    ]
    first, second = replicas
    try:
        for replica in replicas:
            replica.start()
        await eventually(
            lambda: set(peers(control_plane, namespace)) == {"operator-a", "operator-b"},
            within=60,
            what="both replicas announce themselves in the KopfPeering",
        )
        apply(control_plane, voiceservice(namespace))
        await eventually(lambda: ready(control_plane, namespace), within=90, what="Ready")
        assert first.metric(RECONCILES) > 0, "the replica that started first acts"
        assert second.metric(RECONCILES) == 0, "the other stands by"

        first.stop(signal.SIGKILL)  # no goodbye: its entry has to expire
        apply(control_plane, voiceservice(namespace, replicas={"fixed": 3}))
        await eventually(
            lambda: (s := ready(control_plane, namespace)) and s.get("ready") == "3/3",
            within=90,
            what="the standby takes over and scales to 3",
        )
        assert second.metric(RECONCILES) > 0
        await eventually(
            lambda: set(peers(control_plane, namespace)) == {"operator-b"},
            within=30,
            what="the dead replica's entry is cleaned up",
        )
    finally:
        for replica in replicas:
            replica.stop()
    assert forbidden(control_plane, f"system:serviceaccount:{release_namespace}:{account}") == []
    helm(control_plane, "uninstall", RELEASE, "-n", release_namespace)
    control_plane.kubectl("delete", "namespace", release_namespace, "--wait=false")
