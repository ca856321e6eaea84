"""Every object the chart renders is valid for Kubernetes 1.30 to 1.35.

Built-in kinds: kubernetes-validate's strict schemas (unknown fields fail). kopf's peering
objects: the openAPIV3Schema of the peering CRD the chart itself ships. prometheus-operator
kinds: the closed subset of their v1 CRDs in schemas/monitoring.coreos.com_v1.json (the
fields the chart uses; the upstream CRDs are not available offline).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0"]
MONITORING_SCHEMAS = json.loads(
    (Path(__file__).parent / "schemas" / "monitoring.coreos.com_v1.json").read_text()
)


def monitoring_schema(kind: str) -> dict[str, Any]:
    return {"definitions": MONITORING_SCHEMAS["definitions"], **MONITORING_SCHEMAS[kind]}


def peering_crd_schemas(render: Any) -> dict[str, dict[str, Any]]:
    """kind -> openAPIV3Schema of kopf's peering CRDs, as the chart ships them."""
    schemas = {}
    for values in (
        {"peering": {"enabled": True}, "watchNamespaces": ["a"]},
        {"peering": {"enabled": True}},
    ):
        for crd in (o for o in render(values) if o["kind"] == "CustomResourceDefinition"):
            if crd["spec"]["group"] == "kopf.dev":
                (version,) = crd["spec"]["versions"]
                schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    assert sorted(schemas) == ["ClusterKopfPeering", "KopfPeering"]
    return schemas


def validate(obj: dict[str, Any], version: str, peering_schemas: dict[str, Any]) -> None:
    if obj["apiVersion"] == "monitoring.coreos.com/v1":
        jsonschema.Draft7Validator(monitoring_schema(obj["kind"])).validate(obj)
    elif obj["apiVersion"] == "kopf.dev/v1":
        jsonschema.Draft7Validator(peering_schemas[obj["kind"]]).validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid(
    render: Any, combination: dict[str, Any], version: str
) -> None:
    peering_schemas = peering_crd_schemas(render)
    objects = render(combination)
    assert objects
    for obj in objects:
        try:
            validate(obj, version, peering_schemas)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} on {version}: {error}")


def test_the_validators_reject_a_misspelt_field(render: Any) -> None:
    """The checks above would catch a typo in a template, for each kind of schema."""
    everything = {
        "replicaCount": 2,
        "peering": {"enabled": True},
        "monitoring": {
            "prometheusRule": {"enabled": True},
            "voiceServices": {"podMonitor": True},
            "operator": {"serviceMonitor": {"enabled": True}},
        },
    }
    peering_schemas = peering_crd_schemas(render)
    objects = {obj["kind"]: obj for obj in render(everything)}
    broken_deployment = copy.deepcopy(objects["Deployment"])
    broken_deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    broken_rule = copy.deepcopy(objects["PrometheusRule"])
    broken_rule["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
    broken_monitor = copy.deepcopy(objects["PodMonitor"])
    broken_monitor["spec"]["podMetricsEndpoints"][0]["port"] = 8000
    broken_service_monitor = copy.deepcopy(objects["ServiceMonitor"])
    broken_service_monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    broken_peering = copy.deepcopy(objects["ClusterKopfPeering"])
    broken_peering["status"] = "not an object"
    for broken in (
        broken_deployment,
        broken_rule,
        broken_monitor,
        broken_service_monitor,
        broken_peering,
    ):
        with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
            validate(broken, KUBERNETES_VERSIONS[-1], peering_schemas)
