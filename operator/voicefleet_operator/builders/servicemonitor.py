"""The prometheus-operator ServiceMonitor, for clusters that serve monitoring.coreos.com."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.builders.deployment import PORT_NAME
from voicefleet_operator.builders.labels import (
    VOICESERVICE_LABEL,
    child_metadata,
    selector_labels,
)
from voicefleet_operator.crd.models import VoiceService
from voicefleet_runtime.routes import METRICS_PATH

SERVICEMONITOR_API_VERSION = "monitoring.coreos.com/v1"


def build_servicemonitor(vs: VoiceService) -> dict[str, Any]:
    return {
        "apiVersion": SERVICEMONITOR_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": child_metadata(vs),
        "spec": {
            "selector": {"matchLabels": selector_labels(vs)},
            "namespaceSelector": {"matchNames": [vs.namespace]},
            # Series carry the VoiceService's name as a label: the autoscaling queries select
            # pods by it (builders/metrics_queries.py), never by a pod-name prefix.
            "podTargetLabels": [VOICESERVICE_LABEL],
            "endpoints": [
                {
                    "port": PORT_NAME,
                    "path": METRICS_PATH,
                    "interval": f"{vs.spec.autoscaling.metrics.poll_interval_seconds}s",
                }
            ],
        },
    }
