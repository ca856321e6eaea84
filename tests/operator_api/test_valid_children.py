"""The valid specs of the table: every child validates against Kubernetes 1.30 and 1.35, and
the children hold what issue-prone specs need (labels, selectors, replica counts)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.operator_api.spec_cases import VALID, ValidCase, voiceservice
from voicefleet_operator.builders.checks import kubernetes_refusals
from voicefleet_operator.builders.children import ChildBuildError, build_children
from voicefleet_operator.builders.deployment import initial_replicas
from voicefleet_operator.crd.models import VoiceService, parse_voiceservice
from voicefleet_operator.handlers.reconcile import desired_replicas

Json = dict[str, Any]
UID = "7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
VERSIONS = ("1.30.0", "1.35.0")
SCHEMAS = Path(__file__).resolve().parents[1] / "chart" / "schemas"
MONITORING = json.loads((SCHEMAS / "monitoring.coreos.com_v1.json").read_text())
KEDA_SCALEDOBJECT = next(
    version["schema"]["openAPIV3Schema"]
    for version in yaml.safe_load((SCHEMAS / "keda.sh_scaledobjects.yaml").read_text())["spec"][
        "versions"
    ]
    if version["name"] == "v1alpha1"
)


def stored(case: ValidCase) -> VoiceService:
    body = json.loads(json.dumps(case.body))
    body["metadata"]["uid"] = UID
    return parse_voiceservice(body)


def validate(child: Json) -> None:
    if child["apiVersion"].startswith("monitoring.coreos.com/"):
        schema = {"definitions": MONITORING["definitions"], **MONITORING[child["kind"]]}
        jsonschema.Draft7Validator(schema).validate(child)
    elif child["apiVersion"].startswith("keda.sh/"):
        # KEDA's own CRD schema (tests/cluster installs the same CRD in the real API server).
        jsonschema.Draft7Validator(KEDA_SCALEDOBJECT).validate(child)
        assert child["spec"]["scaleTargetRef"]["name"] == child["metadata"]["name"]
        assert all(
            t["metadata"]["query"] and t["metadata"]["threshold"] for t in child["spec"]["triggers"]
        )
    else:
        for version in VERSIONS:
            kubernetes_validate.validate(child, version, strict=True)


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_every_child_of_a_valid_spec_is_valid_kubernetes(case: ValidCase) -> None:
    vs = stored(case)
    children = build_children(
        vs,
        servicemonitor_api=True,
        replicas=initial_replicas(vs.spec),
        placement_index=case.placement_index,
    )
    for child in children:
        validate(child)
        for labels in (
            child["metadata"]["labels"],
            child["spec"].get("template", {}).get("metadata", {}).get("labels", {}),
        ):
            assert all(len(value) <= 63 and "/" not in value for value in labels.values())


def test_a_revision_is_an_annotation_never_a_label() -> None:
    vs = stored(next(c for c in VALID if c.id == "download-pull-request-revision"))
    [deployment] = [
        c
        for c in build_children(vs, servicemonitor_api=False, replicas=1)
        if c["kind"] == "Deployment"
    ]
    template = deployment["spec"]["template"]["metadata"]
    assert template["annotations"]["voicefleet.io/model-revision"] == "refs/pr/3"
    assert "refs/pr/3" not in template["labels"].values()
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"][-2:] == ["--revision", "refs/pr/3"]


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_render_and_the_operator_start_with_the_same_replicas(case: ValidCase) -> None:
    """A new Deployment's count: render writes it, the operator creates with it."""
    vs = stored(case)
    first = initial_replicas(vs.spec)
    owned = desired_replicas(vs)
    assert first >= (0 if vs.spec.replicas.fixed == 0 else 1)
    assert owned is None or owned == first


def test_render_prints_the_count_the_operator_creates(tmp_path: Path, repo_root: Path) -> None:
    body = voiceservice(
        {
            "replicas": {"min": 3, "max": 5},
            "autoscaling": {"mode": "keda", "metrics": {"prometheus": {"url": "http://p:9090"}}},
        }
    )
    source = tmp_path / "vs.yaml"
    source.write_text(yaml.safe_dump(body))
    result = subprocess.run(
        [repo_root / ".venv" / "bin" / "voicefleet", "render", "-f", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [deployment] = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 3 == initial_replicas(parse_voiceservice(body).spec)


def test_a_child_kubernetes_would_refuse_is_an_invalid_spec_not_a_retry() -> None:
    """The models refuse every known bad spec; should one slip through (here: a model built
    without validation), building reports it as an invalid spec, naming what is wrong."""
    valid = stored(VALID[0])
    pod = valid.spec.pod.model_construct(**{**dict(valid.spec.pod), "labels": {"team": "a/b"}})
    spec = valid.spec.model_construct(**{**dict(valid.spec), "pod": pod})
    slipped = valid.model_construct(**{**dict(valid), "spec": spec})
    with pytest.raises(ChildBuildError) as caught:
        build_children(slipped, servicemonitor_api=False, replicas=1)
    message = str(caught.value)
    assert "Kubernetes would refuse" in message
    assert "'a/b' is not a label value" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: c["metadata"]["labels"].update({"x": "a" * 64}), "is not a label value"),
        (
            lambda c: c["metadata"]["annotations"].update({"bad key": "1"}),
            "is not an annotation key",
        ),
        (lambda c: c["metadata"].update(name="Bad_Name"), "is not a valid Deployment name"),
        (
            lambda c: c["spec"]["template"]["spec"]["containers"][0]["resources"].update(
                requests={"memory": "2Gi"}, limits={"memory": "1Gi"}
            ),
            "exceeds limits.memory",
        ),
        (
            lambda c: c["spec"]["template"]["spec"].update(tolerations=[{"operator": "Equal"}]),
            "needs operator Exists",
        ),
        (
            lambda c: c["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].append(
                {"name": "nowhere", "mountPath": "/x"}
            ),
            "names no volume",
        ),
        (
            lambda c: c["spec"]["template"]["metadata"]["labels"].update(
                {"app.kubernetes.io/instance": "other"}
            ),
            "do not match the selector",
        ),
    ],
)
def test_the_pre_send_checks_find_what_the_api_server_refuses(mutate: Any, reason: str) -> None:
    vs = stored(VALID[0])
    [deployment] = [
        c
        for c in build_children(vs, servicemonitor_api=False, replicas=1)
        if c["kind"] == "Deployment"
    ]
    assert kubernetes_refusals(deployment) == []
    broken = json.loads(json.dumps(deployment))
    mutate(broken)
    problems = kubernetes_refusals(broken)
    assert any(reason in problem for problem in problems), problems
