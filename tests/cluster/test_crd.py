"""The VoiceService CRD on a real kube-apiserver: accepted on the newest and the oldest claimed
Kubernetes (1.30), read by `kubectl explain`, printed by `kubectl get`, scaled by `kubectl scale`,
and the table of specs judged by the real server's schema and CEL validation."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import CRD_PATH, ControlPlane
from tests.operator_api.spec_cases import CEL, INVALID, OPERATOR, VALID

NS = "speech"
VS_URL = f"/apis/voicefleet.io/v1alpha1/namespaces/{NS}/voiceservices"
CRD = yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def oldest_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd and the 1.30 kube-apiserver only: enough to judge the CRD and the table."""
    plane = ControlPlane(
        tmp_path_factory.mktemp("cluster-1.30"), apiserver="kube-apiserver-1.30", controllers=False
    )
    try:
        plane.start()
        plane.install_crd()
        yield plane
    finally:
        plane.stop()


def ensure_namespace(plane: ControlPlane, name: str = NS) -> None:
    plane.kubectl("create", "namespace", name, check=False)


def server_version(plane: ControlPlane) -> str:
    info: dict[str, Any] = plane.client().get("/version").json()
    return f"{info['major']}.{info['minor'].rstrip('+')}"


def dry_run_create(plane: ControlPlane, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Create with every server-side check (strict field validation too) but store nothing."""
    response = plane.client().post(
        VS_URL, json=body, params={"dryRun": "All", "fieldValidation": "Strict"}
    )
    return response.status_code, response.json()


def established(plane: ControlPlane) -> dict[str, bool]:
    crd = plane.client().get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/voiceservices.voicefleet.io"
    )
    conditions = crd.json()["status"]["conditions"]
    return {c["type"]: c["status"] == "True" for c in conditions}


def test_crd_is_established_on_the_newest_kubernetes(control_plane: ControlPlane) -> None:
    assert server_version(control_plane) >= "1.37"
    state = established(control_plane)
    assert state["Established"]
    assert state["NamesAccepted"]
    assert not state.get("NonStructuralSchema", False)


def test_crd_is_established_on_kubernetes_1_30(oldest_control_plane: ControlPlane) -> None:
    assert server_version(oldest_control_plane) == "1.30"
    state = established(oldest_control_plane)
    assert state["Established"]
    assert state["NamesAccepted"]
    assert not state.get("NonStructuralSchema", False)


def named(body: dict[str, Any], index: int) -> dict[str, Any]:
    """The body in this test's namespace, under a name of its own unless the case is about it."""
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = NS
    if body["metadata"]["name"] == "whisper":
        body["metadata"]["name"] = f"case-{index:03d}"
    return body


def judged_as_the_table_says(plane: ControlPlane) -> list[str]:
    """Every case of the spec table, dry-run created; the disagreements."""
    ensure_namespace(plane)
    wrong = []
    for index, case in enumerate(INVALID):
        status, reply = dry_run_create(plane, named(case.body, index))
        message = reply.get("message", "")
        if case.layer == OPERATOR:
            if status != 201:
                wrong.append(f"{case.id}: stored by the table, refused here: {message}")
        elif status not in (400, 422):  # 400: strict field validation's unknown field
            wrong.append(f"{case.id}: refused by the table ({case.layer}), got {status}")
        elif case.layer == CEL and case.message not in message:
            wrong.append(f"{case.id}: another refusal than the rule's: {message}")
    for index, valid in enumerate(VALID):
        status, reply = dry_run_create(plane, named(valid.body, 1000 + index))
        if status != 201:
            wrong.append(f"{valid.id}: valid by the table, refused here: {reply.get('message')}")
    return wrong


def test_the_spec_table_is_judged_alike_by_the_newest_server(control_plane: ControlPlane) -> None:
    assert judged_as_the_table_says(control_plane) == []


def test_the_spec_table_is_judged_alike_by_kubernetes_1_30(
    oldest_control_plane: ControlPlane,
) -> None:
    assert judged_as_the_table_says(oldest_control_plane) == []


def test_kubectl_explain_reads_the_field_descriptions(control_plane: ControlPlane) -> None:
    spec = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    gpu = spec["properties"]["gpu"]
    explained = control_plane.kubectl("explain", "vsvc.spec.gpu").stdout
    assert "KIND:       VoiceService" in explained
    assert " ".join(gpu["description"].split()[:6]) in " ".join(explained.split())
    for field in gpu["properties"]:
        assert f"  {field}\t" in explained or f"  {field} " in explained, field


def write_status(plane: ControlPlane, name: str, status: dict[str, Any]) -> None:
    response = plane.client().patch(
        f"{VS_URL}/{name}/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.is_success, response.text


def test_kubectl_get_prints_the_columns_and_scale_uses_the_subresource(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    ensure_namespace(control_plane)
    manifest = tmp_path / "vs.yaml"
    body = {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "columns", "namespace": NS},
        "spec": {
            "model": {"name": "tiny.en"},
            "replicas": {"fixed": 1},
            "autoscaling": {"mode": "off"},
        },
    }
    manifest.write_text(yaml.safe_dump(body))
    control_plane.kubectl("apply", "--server-side", "-f", str(manifest))
    write_status(
        control_plane,
        "columns",
        {
            "model": "tiny.en",
            "precision": "int8",
            "gpu": "cpu",
            "ready": "1/1",
            "endpoint": "http://columns.speech.svc:8000",
            "phase": "Ready",
            "replicas": 1,
            "selector": "app.kubernetes.io/instance=columns",
        },
    )
    table = control_plane.kubectl("get", "vsvc", "-n", NS, "-o", "wide").stdout.splitlines()
    header = table[0].split()
    assert header == ["NAME", "MODEL", "PRECISION", "GPU", "READY", "ENDPOINT", "PHASE", "AGE"]
    row = next(line.split() for line in table[1:] if line.startswith("columns "))
    assert row[:7] == [
        "columns",
        "tiny.en",
        "int8",
        "cpu",
        "1/1",
        "http://columns.speech.svc:8000",
        "Ready",
    ]

    control_plane.kubectl("scale", "vsvc", "columns", "-n", NS, "--replicas=3")
    stored = control_plane.client().get(f"{VS_URL}/columns").json()
    assert stored["spec"]["replicas"]["fixed"] == 3
    scale = json.loads(
        control_plane.kubectl(
            "get", "vsvc", "columns", "-n", NS, "--subresource=scale", "-o", "json"
        ).stdout
    )
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["replicas"] == 1
    assert scale["status"]["selector"] == "app.kubernetes.io/instance=columns"
    control_plane.kubectl("delete", "vsvc", "columns", "-n", NS, "--wait=false")
