"""The generated CRD: fresh, accepted by Kubernetes, structural, explainable."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from voicefleet_operator.crd.generate import render_crd_yaml

Json = dict[str, Any]

CRD_FILE = Path("crds/voicefleet.io_voiceservices.yaml")
FREE_FORM_PATHS = {"spec.pod.affinity", "spec.runtime.env[].valueFrom", "status.autoscaler"}
"""The only places where unknown fields are kept: embedded Kubernetes types and the
autoscaler's own state."""


def walk(schema: Json, path: str) -> Iterator[tuple[str, Json]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def test_committed_crd_is_up_to_date(repo_root: Path) -> None:
    assert (repo_root / CRD_FILE).read_text() == render_crd_yaml(), (
        f"regenerate with: voicefleet crd > {CRD_FILE}"
    )


def test_rendering_is_deterministic() -> None:
    assert render_crd_yaml() == render_crd_yaml()


def test_crd_check_command_detects_a_stale_file(repo_root: Path, tmp_path: Path) -> None:
    voicefleet = repo_root / ".venv" / "bin" / "voicefleet"
    fresh = subprocess.run(
        [voicefleet, "crd", "--check", str(repo_root / CRD_FILE)], capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr
    stale = tmp_path / "crd.yaml"
    stale.write_text(render_crd_yaml().replace("vsvc", "vsv"))
    result = subprocess.run(
        [voicefleet, "crd", "--check", str(stale)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "voicefleet crd >" in result.stderr


def test_crd_is_a_valid_customresourcedefinition(
    crd: Json, validate_k8s: Callable[[Json], None]
) -> None:
    validate_k8s(crd)


def test_schema_is_structural(openapi_schema: Json) -> None:
    """Kubernetes' structural-schema rules, and a description everywhere for kubectl explain."""
    for path, node in walk(openapi_schema, ""):
        assert "$ref" not in node, path
        assert "$defs" not in node, path
        assert "nullable" not in node, path
        assert node.get("type") != "null", path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert node.get("type") in {
                "object",
                "array",
                "string",
                "integer",
                "number",
                "boolean",
            }, path
        is_member = path.endswith(("[]", "{}"))
        if path and path != "metadata" and not is_member:
            assert node.get("description"), f"{path} has no description"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path in FREE_FORM_PATHS, path
        if node.get("type") == "object" and path not in FREE_FORM_PATHS and path != "metadata":
            assert "properties" in node or isinstance(node.get("additionalProperties"), dict), path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in node:
                assert node[bound] is True, path


def test_lists_and_maps_that_carry_cel_rules_are_bounded(openapi_schema: Json) -> None:
    """The API server estimates a rule's worst-case cost from maxItems/maxProperties and
    refuses the CRD when a rule could iterate over an unbounded collection."""
    for path, node in walk(openapi_schema, ""):
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, path
        for rule in node.get("x-kubernetes-validations", []):
            assert "matches(" not in rule["rule"], (
                f"{path}: a regex makes the cost estimate explode"
            )


def test_names_subresources_and_columns(crd: Json) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "voiceservices.voicefleet.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "VoiceService"
    assert set(spec["names"]["shortNames"]) == {"vsvc", "voice"}
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"]["status"] == {}
    scale = version["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.replicas.fixed"
    assert scale["statusReplicasPath"] == ".status.replicas"
    assert scale["labelSelectorPath"] == ".status.selector"
    schema = version["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]["properties"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Model", "Precision", "GPU", "Ready", "Endpoint", "Age"} <= set(columns)
    for column in columns.values():
        field = column["jsonPath"].removeprefix(".status.")
        if column["jsonPath"].startswith(".status."):
            assert field in status, column
    assert status["selector"]["type"] == "string"
    assert status["replicas"]["type"] == "integer"
    spec_schema = schema["properties"]["spec"]["properties"]
    assert spec_schema["replicas"]["properties"]["fixed"]["type"] == "integer"


def test_kubectl_explain_reads_well_for_gpu(openapi_schema: Json) -> None:
    gpu = openapi_schema["properties"]["spec"]["properties"]["gpu"]
    assert "CPU service" in gpu["description"]
    props = gpu["properties"]
    assert "nvidia.com/gpu.product" in props["type"]["description"]
    assert props["resourceName"]["default"] == "nvidia.com/gpu"
    assert "mig" in props["resourceName"]["description"]
    assert props["count"]["minimum"] == 1
