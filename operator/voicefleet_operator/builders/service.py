"""The Service in front of the runtime pods."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.builders.deployment import PORT_NAME
from voicefleet_operator.builders.labels import child_metadata, selector_labels
from voicefleet_operator.crd.models import VoiceService


def endpoint_url(vs: VoiceService) -> str:
    """The in-cluster URL clients use (the Service's DNS name)."""
    port = vs.spec.service.port
    suffix = "" if port == 80 else f":{port}"
    return f"http://{vs.name}.{vs.namespace}.svc{suffix}"


def build_service(vs: VoiceService) -> dict[str, Any]:
    metadata = child_metadata(vs)
    metadata["annotations"].update(vs.spec.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": vs.spec.service.type,
            "selector": selector_labels(vs),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": vs.spec.service.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
