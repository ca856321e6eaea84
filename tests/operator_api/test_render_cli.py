"""`voicefleet render -f`, through the real console script."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

GOOD = """\
apiVersion: voicefleet.io/v1alpha1
kind: VoiceService
metadata:
  name: whisper-large
  namespace: speech
spec:
  model: {name: large-v3, source: pvc, pvc: {claimName: whisper-models}}
  precision: float16
  gpu:
    type: NVIDIA-A100-SXM4-80GB
    fallbacks: [{type: NVIDIA-L4}, {cpu: {precision: int8}}]
  replicas: {min: 2, max: 8}
  runtime:
    apiKeySecretRef: {name: stt-api-key, key: token}
    resources: {requests: {cpu: 4, memory: 16Gi}}
---
apiVersion: voicefleet.io/v1alpha1
kind: VoiceService
metadata: {name: whisper-cpu}
spec:
  model: {name: tiny.en}
  replicas: {fixed: 1}
  autoscaling: {mode: "off"}
"""

BAD = """\
apiVersion: voicefleet.io/v1alpha1
kind: VoiceService
metadata: {name: broken}
spec:
  model: {name: base, source: pvc}
  precision: float16
  gpu: {count: 0}
  replicas: {min: 5, max: 2}
"""


@pytest.fixture(scope="module")
def voicefleet(repo_root: Path) -> Path:
    return repo_root / ".venv" / "bin" / "voicefleet"


def run(voicefleet: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [voicefleet, "render", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_render_prints_valid_children(
    voicefleet: Path, tmp_path: Path, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    source = tmp_path / "voiceservices.yaml"
    source.write_text(GOOD)
    result = run(voicefleet, "-f", str(source), "--with-servicemonitor")
    assert result.returncode == 0, result.stderr
    assert "placeholder uid" in result.stdout
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
    for name in ("whisper-large", "whisper-cpu"):
        for kind in ("Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"):
            assert (kind, name) in kinds
    for document in documents:
        if document["kind"] != "ServiceMonitor":
            validate_k8s(document)
    large = next(
        d
        for d in documents
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "whisper-large"
    )
    assert large["metadata"]["namespace"] == "speech"
    assert large["spec"]["replicas"] == 2
    cpu = next(
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "whisper-cpu"
    )
    assert cpu["metadata"]["namespace"] == "default"
    assert cpu["spec"]["replicas"] == 1


def test_render_reads_stdin_without_servicemonitor(voicefleet: Path) -> None:
    result = run(voicefleet, "-f", "-", stdin=GOOD)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget"}


def test_bad_spec_exits_non_zero_listing_every_problem(voicefleet: Path) -> None:
    result = run(voicefleet, "-f", "-", stdin=BAD)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "VoiceService broken is invalid" in result.stderr
    for where in ("spec.model", "spec.gpu.count", "spec.replicas"):
        assert where in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: ConfigMap\nmetadata: {name: x}\n", "is a ConfigMap"),
        ("a: [unclosed\n", "not valid YAML"),
        ("", "no VoiceService"),
    ],
)
def test_other_input_is_refused_readably(voicefleet: Path, text: str, expected: str) -> None:
    result = run(voicefleet, "-f", "-", stdin=text)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


TORCH_ON_AN_L4 = """\
apiVersion: voicefleet.io/v1alpha1
kind: VoiceService
metadata: {name: batched}
spec:
  model: {name: large-v3}
  engine: torch
  precision: float16
  gpu: {type: NVIDIA-L4}
"""


def test_render_gives_a_gpu_pod_the_cores_its_decoding_processes_use(
    voicefleet: Path, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    result = run(voicefleet, "-f", "-", stdin=TORCH_ON_AN_L4)
    assert result.returncode == 0, result.stderr
    (deployment,) = [d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment"]
    validate_k8s(deployment)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["resources"]["requests"]["cpu"] == "3"
    assert env["VOICEFLEET_DECODE_PROCESSES"] == "2"
    assert "cpu" not in container["resources"]["limits"]
