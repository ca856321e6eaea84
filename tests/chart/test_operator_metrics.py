"""The operator's /metrics in the chart: the port it listens on, its Service, its ServiceMonitor."""

from __future__ import annotations

import os
from typing import Any

import pytest

from voicefleet_operator.settings import OperatorSettings

RELEASE_NAMESPACE = "voicefleet-system"


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def operator_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(objects, "Deployment")
    template: dict[str, Any] = deployment["spec"]["template"]
    return template


def settings_from(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    for name in [n for n in os.environ if n.startswith("VOICEFLEET_OPERATOR_")]:
        monkeypatch.delenv(name)
    for variable in container["env"]:
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"])
    return OperatorSettings()


@pytest.mark.parametrize("port", [8081, 9464])
def test_the_operator_listens_where_its_service_points(
    render: Any, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render({"operator": {"metricsPort": port}})
    pod = operator_pod(objects)
    (container,) = pod["spec"]["containers"]
    settings = settings_from(container, monkeypatch)
    assert settings.metrics_port == port
    assert settings.metrics_host == "0.0.0.0", "Prometheus scrapes the pod's IP"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    assert ports["metrics"] != ports["health"]
    (service,) = of_kind(objects, "Service")
    assert service["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (service_port,) = service["spec"]["ports"]
    assert (service_port["name"], service_port["targetPort"]) == ("metrics", "metrics")


def test_the_service_monitor_is_off_by_default(render: Any) -> None:
    assert not of_kind(render({}), "ServiceMonitor")


def test_the_service_monitor_scrapes_the_metrics_service(render: Any) -> None:
    labels = {"release": "kube-prometheus-stack"}
    objects = render(
        {
            "monitoring": {
                "operator": {"serviceMonitor": {"enabled": True}},
                "labels": labels,
                "interval": "15s",
            }
        }
    )
    (monitor,) = of_kind(objects, "ServiceMonitor")
    (service,) = of_kind(objects, "Service")
    assert labels.items() <= monitor["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s"}
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    voiceservice_pod_labels = {
        "app.kubernetes.io/name": "voicefleet",
        "app.kubernetes.io/instance": "vf",
    }
    assert not selector.items() <= voiceservice_pod_labels.items(), (
        "the operator's ServiceMonitor must not pick VoiceService pods"
    )


def test_the_network_policy_opens_the_metrics_port(render: Any) -> None:
    prometheus = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    objects = render({"networkPolicy": {"enabled": True, "metricsIngressFrom": prometheus}})
    (policy,) = of_kind(objects, "NetworkPolicy")
    by_port = {
        port["port"]: rule.get("from")
        for rule in policy["spec"]["ingress"]
        for port in rule["ports"]
    }
    assert by_port["metrics"] == prometheus
    assert by_port["health"] == [{"podSelector": {}}]
