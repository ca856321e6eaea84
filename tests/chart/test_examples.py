"""The examples a user starts from are valid VoiceServices and render valid children.

Each VoiceService example is checked three ways: the CRD's openAPIV3Schema (what the API
server prunes and rejects), the pydantic model with the CEL rules' twins, and the real
`voicefleet render -f` CLI, whose output must be valid Kubernetes objects. The GitOps
examples must carry values the chart's schema accepts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.operator.harness.crd import with_strict_fields
from voicefleet_operator.crd.models import parse_voiceservice

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
MONITORING_SCHEMAS = json.loads(
    (Path(__file__).parent / "schemas" / "monitoring.coreos.com_v1.json").read_text()
)
KUBERNETES_VERSIONS = ["1.30.0", "1.35.0"]


@pytest.fixture(scope="module")
def voiceservice_schema(chart_dir: Path) -> dict[str, Any]:
    crd = yaml.safe_load((chart_dir / "crds" / "voicefleet.io_voiceservices.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema: dict[str, Any] = with_strict_fields(version["schema"]["openAPIV3Schema"])
    # Every object has these; the API server checks metadata itself.
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **schema["properties"],
    }
    return schema


def test_there_is_an_example_for_each_starting_point() -> None:
    specs = {path.stem: yaml.safe_load(path.read_text())["spec"] for path in EXAMPLES}
    assert any(s.get("gpu") is None and s["model"]["name"] == "tiny.en" for s in specs.values())
    assert any(
        s["model"]["name"] == "large-v3" and s["precision"] == "float16" for s in specs.values()
    )
    assert any(s["precision"] == "int8_float16" for s in specs.values())
    assert any("mig-" in s.get("gpu", {}).get("resourceName", "") for s in specs.values())
    assert any(
        any("cpu" in f for f in s.get("gpu", {}).get("fallbacks", [])) for s in specs.values()
    )
    assert any(
        s["autoscaling"].get("metrics", {}).get("source") == "prometheus" for s in specs.values()
    )
    assert any(s["autoscaling"]["mode"] == "keda" for s in specs.values())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid_against_the_crd_schema_and_the_model(
    path: Path, voiceservice_schema: dict[str, Any]
) -> None:
    body = yaml.safe_load(path.read_text())
    jsonschema.Draft7Validator(voiceservice_schema).validate(body)
    service = parse_voiceservice(body)
    assert service.name == body["metadata"]["name"]


def test_the_crd_schema_check_is_not_a_no_op(voiceservice_schema: dict[str, Any]) -> None:
    body = yaml.safe_load(EXAMPLES[0].read_text())
    body["spec"]["precison"] = "int8"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(voiceservice_schema).validate(body)


def rendered(path: Path, *extra: str) -> list[dict[str, Any]]:
    voicefleet = Path(sys.executable).with_name("voicefleet")
    result = subprocess.run(
        [str(voicefleet), "render", "-f", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def check_object(obj: dict[str, Any]) -> None:
    group = obj["apiVersion"].split("/")[0]
    if group == "monitoring.coreos.com":
        schema = {
            "definitions": MONITORING_SCHEMAS["definitions"],
            **MONITORING_SCHEMAS[obj["kind"]],
        }
        jsonschema.Draft7Validator(schema).validate(obj)
    elif group == "keda.sh":
        # KEDA's CRD is not available offline: the fields KEDA cannot work without.
        assert obj["kind"] == "ScaledObject"
        assert obj["spec"]["scaleTargetRef"]["name"]
        assert obj["spec"]["triggers"]
        assert all(trigger["type"] for trigger in obj["spec"]["triggers"])
    else:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_voicefleet_render_gives_valid_children(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())["spec"]
    children = rendered(path, "--with-servicemonitor")
    kinds = {child["kind"] for child in children}
    assert {"Deployment", "Service", "ServiceMonitor"} <= kinds
    if spec["autoscaling"]["mode"] == "keda":
        assert "ScaledObject" in kinds
    for child in children:
        check_object(child)
    (deployment,) = [c for c in children if c["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    if spec.get("gpu") and "resourceName" in spec["gpu"]:
        limits = pod["containers"][0]["resources"]["limits"]
        assert spec["gpu"]["resourceName"] in limits


GITOPS = REPO_ROOT / "examples" / "gitops"


def gitops_values() -> dict[str, dict[str, Any]]:
    argo = yaml.safe_load((GITOPS / "argocd-application.yaml").read_text())
    flux = [d for d in yaml.safe_load_all((GITOPS / "flux-helmrelease.yaml").read_text()) if d]
    (release,) = [d for d in flux if d["kind"] == "HelmRelease"]
    (repository,) = [d for d in flux if d["kind"] == "HelmRepository"]
    assert release["spec"]["chart"]["spec"]["sourceRef"]["name"] == repository["metadata"]["name"]
    assert argo["spec"]["source"]["chart"] == release["spec"]["chart"]["spec"]["chart"]
    return {
        "argocd": argo["spec"]["source"]["helm"]["valuesObject"],
        "flux": release["spec"]["values"],
    }


@pytest.mark.parametrize("tool", ["argocd", "flux"])
def test_gitops_examples_carry_values_the_chart_accepts(
    tool: str, helm: Any, chart_dir: Path
) -> None:
    values = gitops_values()[tool]
    result = helm("lint", "--strict", str(chart_dir), values=values)
    assert result.returncode == 0, result.stdout + result.stderr
