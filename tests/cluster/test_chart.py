"""The chart for real: helm install, upgrade and uninstall on the real API server, and the
operator running as the chart's ServiceAccount, so that the real RBAC authoriser judges whether
the chart grants enough: a whole VoiceService life, and not one request refused (403)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.conftest import quick_operator_settings
from tests.cluster.controlplane import REPO_ROOT, ControlPlane
from tests.cluster.test_operator import apply, get, items, ready, voiceservice
from tests.operator.harness.running import RunningOperator, eventually
from voicefleet_operator.settings import OperatorSettings

CHART = REPO_ROOT / "charts" / "voicefleet"
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
RELEASE = "vf"


def helm(plane: ControlPlane, *args: str) -> str:
    done = subprocess.run(
        [str(HELM), f"--kubeconfig={plane.kubeconfig()}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def reconciles(settings: OperatorSettings) -> float:
    """Reconciles this operator ran, from its own /metrics."""
    text = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "voicefleet_operator_reconciles_total"
    )


def service_account_settings(
    plane: ControlPlane, release_namespace: str, watched: str, workdir: Path
) -> OperatorSettings:
    """The settings the chart's Deployment gives, with a fresh token of the chart's account."""
    account = f"{RELEASE}-voicefleet"
    token = plane.kubectl(
        "create", "token", account, "-n", release_namespace, "--duration=1h"
    ).stdout.strip()
    kubeconfig = workdir / "kubeconfig-chart-account"
    kubeconfig.write_text(yaml.safe_dump(plane.kubeconfig_dict(token, namespace=watched)))
    # The chart's default, peering.enabled=false, runs the operator --standalone.
    return quick_operator_settings(kubeconfig, watched)


def forbidden(plane: ControlPlane, username: str) -> list[dict[str, Any]]:
    return [
        event
        for event in plane.audit_events()
        if event.get("user", {}).get("username") == username
        and event.get("responseStatus", {}).get("code") == 403
    ]


async def test_chart_rbac_suffices_for_a_whole_voiceservice_life(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release_namespace = f"vf-system-{secrets.token_hex(2)}"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"watchNamespaces": [namespace]}))
    helm(
        control_plane,
        "install", RELEASE, str(CHART), "-n", release_namespace, "--create-namespace",
        "-f", str(values),
    )  # fmt: skip
    account = f"system:serviceaccount:{release_namespace}:{RELEASE}-voicefleet"
    settings = service_account_settings(control_plane, release_namespace, namespace, tmp_path)
    operator = RunningOperator(settings)
    await operator.start()
    try:
        apply(control_plane, voiceservice(namespace))
        await eventually(lambda: ready(control_plane, namespace), within=90, what="Ready")
        control_plane.kubectl("scale", "vsvc", "stt", "-n", namespace, "--replicas=3")
        await eventually(
            lambda: (s := ready(control_plane, namespace)) and s.get("ready") == "3/3",
            within=90,
            what="scaled through the scale subresource",
        )
        assert len(items(control_plane, namespace, "pods")) == 3
        assert reconciles(settings) > 0
        control_plane.kubectl("delete", "vsvc", "stt", "-n", namespace, "--wait=false")
        await eventually(
            lambda: get(control_plane, namespace, "voiceservices", "stt") is None,
            within=60,
            what="the operator releases its finalizer",
        )
    finally:
        await operator.stop()
    assert forbidden(control_plane, account) == []

    values.write_text(
        yaml.safe_dump({"watchNamespaces": [namespace], "podLabels": {"team": "speech"}})
    )
    helm(control_plane, "upgrade", RELEASE, str(CHART), "-n", release_namespace, "-f", str(values))
    deployment = control_plane.client().get(
        f"/apis/apps/v1/namespaces/{release_namespace}/deployments/{RELEASE}-voicefleet"
    )
    assert deployment.json()["spec"]["template"]["metadata"]["labels"]["team"] == "speech"
    helm(control_plane, "uninstall", RELEASE, "-n", release_namespace, "--wait")
    roles = control_plane.client().get(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"
    )
    assert [r for r in roles.json()["items"] if RELEASE in r["metadata"]["name"]] == []
    control_plane.kubectl("delete", "namespace", release_namespace, "--wait=false")
