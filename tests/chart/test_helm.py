"""The chart with the real helm: it lints, renders every combination, and refuses bad values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

RELEASE_NAMESPACE = "voicefleet-system"


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [obj for obj in objects if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(obj["kind"] for obj in objects)


def test_lint_strict(helm: Any, chart_dir: Path, combination: dict[str, Any]) -> None:
    result = helm("lint", "--strict", str(chart_dir), values=combination)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_defaults_render_a_cluster_wide_standalone_operator(render: Any) -> None:
    objects = render({})
    assert kinds(objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    container = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["voicefleet", "operator"]
    assert "--all-namespaces" in container["args"]
    assert "--standalone" in container["args"]
    assert not [arg for arg in container["args"] if arg.startswith("--namespace")]


def test_watched_namespaces_pass_each_namespace(render: Any) -> None:
    objects = render({"watchNamespaces": ["speech", "speech-batch"]})
    args = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=speech" in args
    assert "--namespace=speech-batch" in args
    assert "--all-namespaces" not in args
    role_namespaces = sorted(o["metadata"]["namespace"] for o in objects if o["kind"] == "Role")
    assert role_namespaces == ["speech", "speech-batch"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["speech", "speech-batch"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "vf-voicefleet", "namespace": RELEASE_NAMESPACE}
        ]


def test_the_operator_runs_with_a_restricted_security_context(
    render: Any, combination: dict[str, Any]
) -> None:
    objects = render(combination)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    for account in (o for o in objects if o["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_probes_call_the_liveness_endpoint_the_operator_serves(
    render: Any, combination: dict[str, Any]
) -> None:
    container = only(render(combination), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    (liveness_arg,) = [a for a in container["args"] if a.startswith("--liveness=")]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert liveness_arg == f"--liveness=http://0.0.0.0:{port}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


@pytest.mark.parametrize(
    ("values", "peering_kind", "namespaces"),
    [
        ({"peering": {"enabled": True}, "replicaCount": 2}, "ClusterKopfPeering", [None]),
        (
            {"peering": {"enabled": True}, "watchNamespaces": ["a", "b"]},
            "KopfPeering",
            ["a", "b"],
        ),
    ],
    ids=["all-namespaces", "watched-namespaces"],
)
def test_peering_installs_its_crd_and_objects(
    render: Any, values: dict[str, Any], peering_kind: str, namespaces: list[str | None]
) -> None:
    objects = render(values)
    crds = [o["spec"]["names"]["kind"] for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert peering_kind in crds
    peerings = [o for o in objects if o["kind"] == peering_kind]
    assert [p["metadata"].get("namespace") for p in peerings] == namespaces
    for peering in peerings:
        assert peering["metadata"]["name"] == "voicefleet"
        # kopf.dev/v1 only exists once the CRD does: the objects must come after it.
        assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    container = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--standalone" not in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VOICEFLEET_OPERATOR_PEERING_NAME"] == "voicefleet"
    assert "POD_ID" in env


def test_shared_peering_crds_can_be_left_out(render: Any) -> None:
    objects = render({"peering": {"enabled": True, "createCRDs": False}})
    crd_kinds = [
        o["spec"]["names"]["kind"] for o in objects if o["kind"] == "CustomResourceDefinition"
    ]
    assert crd_kinds == ["VoiceService"]
    assert [o["kind"] for o in objects if o["kind"] == "ClusterKopfPeering"] == [
        "ClusterKopfPeering"
    ]


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"watchNamespaces": ["Speech_Team"]}, "/watchNamespaces/0"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
        ({"monitoring": {"prometheusRule": {"errorRatio": 5}}}, "errorRatio"),
        ({"monitoring": {"interval": "soon"}}, "/monitoring/interval"),
        ({"peering": {"enabeld": True}}, "enabeld"),
        ({"replicas": 2}, "replicas"),
        ({"operator": {"settings": {"resync_intervall": 5}}}, "resync_intervall"),
        ({"operator": {"settings": {"standalone": True}}}, "standalone"),
        ({"operator": {"metricsPort": 80}}, "/operator/metricsPort"),
        ({"monitoring": {"operator": {"serviceMonitor": {"enabled": "yes"}}}}, "enabled"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else v,
)
def test_bad_values_fail_with_the_schema_error(
    helm: Any, chart_dir: Path, values: dict[str, Any], error: str
) -> None:
    for command in (
        ("template", "vf", str(chart_dir)),
        ("lint", "--strict", str(chart_dir)),
        ("install", "vf", str(chart_dir), "--dry-run=client"),
    ):
        result = helm(*command, values=values)
        assert result.returncode != 0, f"helm {command[0]} accepted {values}"
        output = result.stdout + result.stderr
        assert "values don't meet the specifications of the schema" in output or (
            "voicefleet:" in output and "- at '" in output
        ), output
        assert error in output, output


def test_two_replicas_without_peering_are_refused(helm: Any, chart_dir: Path) -> None:
    result = helm("template", "vf", str(chart_dir), values={"replicaCount": 2})
    assert result.returncode != 0
    assert "replicaCount > 1 needs peering.enabled=true" in result.stderr


def test_notes_tell_the_user_what_to_apply_next(helm: Any, chart_dir: Path) -> None:
    result = helm(
        "install",
        "vf",
        str(chart_dir),
        "--dry-run=client",
        "--namespace",
        RELEASE_NAMESPACE,
        values={"watchNamespaces": ["speech"]},
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "examples/cpu-tiny-en.yaml" in notes
    assert "kubectl apply -n speech" in notes
    assert "kubectl get vsvc -n speech" in notes
    assert "/v1/audio/transcriptions" in notes
    assert "crds/voicefleet.io_voiceservices.yaml" in notes


@pytest.mark.parametrize(
    ("kube_version", "accepted"), [("1.29.0", False), ("1.30.0", True), ("1.35.0", True)]
)
def test_kube_version_range(helm: Any, chart_dir: Path, kube_version: str, accepted: bool) -> None:
    result = helm("template", "vf", str(chart_dir), "--kube-version", kube_version)
    assert (result.returncode == 0) is accepted, result.stderr


def undocumented_keys(lines: list[str]) -> list[str]:
    """Keys of values.yaml with no comment right above them.

    A section (a key whose value is an indented block of keys) may go without a comment of
    its own when every key inside it has one; a documented key covers its whole block.
    """
    keyed = [
        (index, len(line) - len(line.lstrip()), line.strip().split(":")[0])
        for index, line in enumerate(lines)
        if line.strip() and not line.lstrip().startswith(("#", "-")) and ":" in line
    ]
    missing: list[str] = []

    def check(position: int, covered: bool) -> int:
        """Check the key at keyed[position] and its block; return the position after it."""
        index, indent, name = keyed[position]
        documented = covered or lines[index - 1].lstrip().startswith("#")
        child_missing_before = len(missing)
        next_position = position + 1
        while next_position < len(keyed) and keyed[next_position][1] > indent:
            next_position = check(next_position, documented)
        has_children = next_position > position + 1
        if not documented and (not has_children or len(missing) > child_missing_before):
            missing.append(name)
        return next_position

    position = 0
    while position < len(keyed):
        position = check(position, covered=False)
    return missing


def test_values_are_documented_line_by_line(chart_dir: Path) -> None:
    lines = (chart_dir / "values.yaml").read_text().splitlines()
    assert undocumented_keys(lines) == []
    assert undocumented_keys(["image:", "  # -- the tag", "  tag: x", "  pullPolicy: y"]) == [
        "pullPolicy",
        "image",
    ]
