"""The settings the chart passes are ones the operator reads, with the values asked for."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from voicefleet_operator.cli import build_parser
from voicefleet_operator.settings import OperatorSettings

# Settings the chart derives from its own values (CLI flags or dedicated values).
CHART_MANAGED = {
    "namespaces",
    "all_namespaces",
    "standalone",
    "liveness_endpoint",
    "metrics_port",
    "peering_name",
    "peering_priority",
    "posting_level",
    "default_runtime_image",
    "kubeconfig",
}


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_schema_offers_every_other_operator_setting(chart_dir: Path) -> None:
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    offered = set(
        schema["properties"]["operator"]["properties"]["settings"]["propertyNames"]["enum"]
    )
    assert set(OperatorSettings.model_fields) >= CHART_MANAGED
    assert offered == set(OperatorSettings.model_fields) - CHART_MANAGED


def test_the_operator_reads_the_rendered_environment(
    render: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "replicaCount": 2,
        "peering": {"enabled": True, "name": "speech-fleet", "priority": 10},
        "operator": {
            "postingLevel": "WARNING",
            "defaultRuntimeImage": "registry.example/voicefleet:1.2.3",
            "settings": {"resync_interval": 120, "backoff_max": 60},
        },
    }
    container = operator_container(render(values))
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert all(name.startswith("VOICEFLEET_OPERATOR_") for name in env)
    for name in [n for n in os.environ if n.startswith("VOICEFLEET_OPERATOR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.peering_name == "speech-fleet"
    assert settings.peering_priority == 10
    assert settings.posting_level == "WARNING"
    assert settings.default_runtime_image == "registry.example/voicefleet:1.2.3"
    assert settings.resync_interval == 120
    assert settings.backoff_max == 60


@pytest.mark.parametrize(
    "values",
    [{}, {"watchNamespaces": ["speech", "batch"], "peering": {"enabled": True}}],
    ids=["all-namespaces", "watched-peering"],
)
def test_the_cli_accepts_the_rendered_arguments(render: Any, values: dict[str, Any]) -> None:
    container = operator_container(render(values))
    assert container["command"] == ["voicefleet", "operator"]
    args = build_parser().parse_args([container["command"][1], *container["args"]])
    assert args.all_namespaces is not bool(values.get("watchNamespaces"))
    assert args.namespace == values.get("watchNamespaces", [])
    assert args.standalone is not values.get("peering", {}).get("enabled", False)
    assert args.liveness == "http://0.0.0.0:8080/healthz"
