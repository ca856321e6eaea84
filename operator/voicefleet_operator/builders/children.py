"""Everything the operator applies for one VoiceService, labelled, owned and hashed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicefleet_operator.builders.autoscaling import build_autoscaling_children
from voicefleet_operator.builders.checks import kubernetes_refusals
from voicefleet_operator.builders.deployment import build_deployment
from voicefleet_operator.builders.labels import (
    MissingUidError,
    common_labels,
    owner_reference,
    with_spec_hash,
)
from voicefleet_operator.builders.pdb import build_pdb
from voicefleet_operator.builders.service import build_service
from voicefleet_operator.builders.servicemonitor import build_servicemonitor
from voicefleet_operator.crd.models import (
    InvalidVoiceServiceError,
    VoiceService,
    parse_voiceservice,
)


class ChildBuildError(InvalidVoiceServiceError):
    """A spec the models accepted, yet no valid child can be built from it: reported like any
    other invalid spec (Degraded, reason InvalidSpec) rather than retried."""


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
    `InvalidVoiceServiceError` for a body that breaks the API rules (`ChildBuildError` when
    only building shows it) and `MissingUidError` when the VoiceService has no uid yet.
    """
    service = vs if isinstance(vs, VoiceService) else parse_voiceservice(vs)
    try:
        children = _children(service, servicemonitor_api, replicas, placement_index)
    except (MissingUidError, InvalidVoiceServiceError):
        raise
    except Exception as error:
        # The builders assume a valid spec: whatever still fails is a spec the models should
        # have refused. Reported once as InvalidSpec; retrying the same spec cannot help.
        raise ChildBuildError(
            f"VoiceService {service.name}: cannot build its children: "
            f"{type(error).__name__}: {error}"
        ) from error
    refusals = [problem for child in children for problem in kubernetes_refusals(child)]
    if refusals:
        raise ChildBuildError(
            f"VoiceService {service.name}: Kubernetes would refuse its children: "
            + "; ".join(refusals)
        )
    return [with_spec_hash(child) for child in children]


def _children(
    service: VoiceService, servicemonitor_api: bool, replicas: int | None, placement_index: int
) -> list[dict[str, Any]]:
    children = [
        build_deployment(service, replicas=replicas, placement_index=placement_index),
        build_service(service),
        build_pdb(service),
    ]
    if servicemonitor_api:
        children.append(build_servicemonitor(service))
    children.extend(_adopted(service, child) for child in build_autoscaling_children(service))
    return children
