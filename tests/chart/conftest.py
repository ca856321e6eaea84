"""Fixtures for the chart tests: the real helm binary and rendered manifests, cached per run."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "voicefleet"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"

RELEASE = "vf"
RELEASE_NAMESPACE = "voicefleet-system"
WATCHED = ["speech", "speech-batch"]

MONITORING_ON: dict[str, Any] = {
    "operator": {"serviceMonitor": {"enabled": True}},
    "voiceServices": {"podMonitor": True},
    "labels": {"release": "kube-prometheus-stack"},
    "prometheusRule": {"enabled": True, "alertLabels": {"team": "speech"}},
    "grafanaDashboard": {"enabled": True},
}

# The value combinations a platform team would install: each one must lint, render and
# validate. Keys become test ids.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-namespaces-everything": {
        "replicaCount": 2,
        "peering": {"enabled": True},
        "monitoring": MONITORING_ON,
        "networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"]},
    },
    "watched-namespaces": {"watchNamespaces": WATCHED},
    "watched-namespaces-everything": {
        "watchNamespaces": WATCHED,
        "replicaCount": 2,
        "peering": {"enabled": True},
        "monitoring": MONITORING_ON,
        "networkPolicy": {"enabled": True},
    },
    "monitoring-only": {"monitoring": MONITORING_ON},
    "peering-shared-crds": {"peering": {"enabled": True, "createCRDs": False}},
    "bring-your-own-account": {
        "serviceAccount": {"create": False, "name": "speech-operator"},
        "image": {"digest": "sha256:" + "ab" * 32},
    },
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "combination" in metafunc.fixturenames:
        metafunc.parametrize(
            "combination", list(COMBINATIONS.values()), ids=list(COMBINATIONS), scope="session"
        )


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run scripts/setup.sh, which unpacks helm and kubectl")
    return path


Helm = Callable[..., "subprocess.CompletedProcess[str]"]
Render = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run the real helm; `values` (a mapping) is written to a file and passed with -f."""
    binary = tool("helm")
    values_dir = tmp_path_factory.mktemp("values")

    def _helm(
        *args: str, values: Mapping[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(binary), *args]
        if values is not None:
            values_file = values_dir / f"values-{len(list(values_dir.iterdir()))}.yaml"
            values_file.write_text(yaml.safe_dump(dict(values)))
            argv += ["--values", str(values_file)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    return _helm


@pytest.fixture(scope="session")
def render(helm: Helm) -> Render:
    """`helm template` with the given values, CRDs included; every object as a dict."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def _render(values: Mapping[str, Any]) -> list[dict[str, Any]]:
        key = yaml.safe_dump(dict(values), sort_keys=True)
        if key not in cache:
            result = helm(
                "template",
                RELEASE,
                str(CHART_DIR),
                "--namespace",
                RELEASE_NAMESPACE,
                "--include-crds",
                values=values,
            )
            assert result.returncode == 0, result.stderr
            cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR
