"""The prometheus-operator ServiceMonitor, for clusters that serve monitoring.coreos.com."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.builders.deployment import PORT_NAME
from voicefleet_operator.builders.labels import child_metadata, selector_labels
from voicefleet_operator.crd.models import VoiceService

SERVICEMONITOR_API_VERSION = "monitoring.coreos.com/v1"


def build_servicemonitor(vs: VoiceService) -> dict[str, Any]:
    return {
        "apiVersion": SERVICEMONITOR_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": child_metadata(vs),
        "spec": {
            "selector": {"matchLabels": selector_labels(vs)},
            "namespaceSelector": {"matchNames": [vs.namespace]},
            "endpoints": [
                {
                    "port": PORT_NAME,
                    "path": "/metrics",
                    "interval": f"{vs.spec.autoscaling.metrics.poll_interval_seconds}s",
                }
            ],
        },
    }
