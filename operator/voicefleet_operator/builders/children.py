"""Everything the operator applies for one VoiceService, labelled, owned and hashed."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from voicefleet_operator.builders.deployment import build_deployment
from voicefleet_operator.builders.labels import (
    common_labels,
    owner_reference,
    with_spec_hash,
)
from voicefleet_operator.builders.pdb import build_pdb
from voicefleet_operator.builders.service import build_service
from voicefleet_operator.builders.servicemonitor import build_servicemonitor
from voicefleet_operator.crd.models import VoiceService, parse_voiceservice

AUTOSCALING_MODULE = "voicefleet_operator.builders.autoscaling"


def _autoscaling_children(vs: VoiceService) -> list[dict[str, Any]]:
    """KEDA ScaledObject / HPA, built by the autoscaling builders when that module is present."""
    try:
        module = importlib.import_module(AUTOSCALING_MODULE)
    except ModuleNotFoundError as error:
        if error.name != AUTOSCALING_MODULE:
            raise
        return []
    children: list[dict[str, Any]] = list(module.build_autoscaling_children(vs))
    return children


def _adopted(vs: VoiceService, child: dict[str, Any]) -> dict[str, Any]:
    """Give a child built elsewhere the same labels and owner as ours."""
    metadata = dict(child["metadata"])
    metadata.setdefault("namespace", vs.namespace)
    metadata["labels"] = {**metadata.get("labels", {}), **common_labels(vs)}
    metadata.setdefault("annotations", {})
    metadata["ownerReferences"] = [owner_reference(vs)]
    return {**child, "metadata": metadata}


def build_children(
    vs: VoiceService | Mapping[str, Any],
    *,
    servicemonitor_api: bool,
    replicas: int | None,
    placement_index: int = 0,
) -> list[dict[str, Any]]:
    """The desired children, each annotated with `voicefleet.io/spec-hash` of itself.

    `replicas=None` leaves the Deployment's count to whoever set it last; `placement_index`
    picks the GPU candidate ([gpu, *gpu.fallbacks]) the operator settled on. Raises
    `InvalidVoiceServiceError` for a body that breaks the API rules and `MissingUidError` when
    the VoiceService has no uid yet.
    """
    service = vs if isinstance(vs, VoiceService) else parse_voiceservice(vs)
    children = [
        build_deployment(service, replicas=replicas, placement_index=placement_index),
        build_service(service),
        build_pdb(service),
    ]
    if servicemonitor_api:
        children.append(build_servicemonitor(service))
    children.extend(_adopted(service, child) for child in _autoscaling_children(service))
    return [with_spec_hash(child) for child in children]
