"""The PodDisruptionBudget: voluntary evictions (node drains) take one pod at a time."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.builders.labels import child_metadata, selector_labels
from voicefleet_operator.crd.models import VoiceService


def build_pdb(vs: VoiceService) -> dict[str, Any]:
    # maxUnavailable rather than minAvailable: it stays right while the autoscaler changes the
    # replica count, and never blocks a drain of a one-pod service forever.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(vs),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(vs)},
            # A pod that never got ready (model failing to load) must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
