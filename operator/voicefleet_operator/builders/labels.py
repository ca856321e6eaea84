"""Names, labels and annotations shared by every child of a VoiceService."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from voicefleet_operator.crd.models import API_GROUP, API_VERSION, KIND, VoiceService

APP_NAME = "voicefleet"
MANAGED_BY = "voicefleet-operator"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT = "speech-to-text"

SPEC_HASH_ANNOTATION = "voicefleet.io/spec-hash"
"""Hash of a child's desired state: the operator skips the write when the live one matches."""
PLACEMENT_ANNOTATION = "voicefleet.io/placement-candidate"
"""Index into [spec.gpu, *spec.gpu.fallbacks] the Deployment was built for."""
VOICESERVICE_LABEL = "voicefleet.io/voiceservice"
MODEL_REVISION_ANNOTATION = "voicefleet.io/model-revision"
"""On the pod template: a revision (refs/pr/3) is no label value, and pods are never selected by
it."""


class MissingUidError(ValueError):
    """Children need the owner's uid for their ownerReference; the API server assigns it."""


def selector_labels(vs: VoiceService) -> dict[str, str]:
    """The labels pods are selected by: stable for the life of the VoiceService."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": vs.name}


def common_labels(vs: VoiceService) -> dict[str, str]:
    return {
        **selector_labels(vs),
        "app.kubernetes.io/component": COMPONENT,
        MANAGED_BY_LABEL: MANAGED_BY,
        VOICESERVICE_LABEL: vs.name,
    }


def selector_string(vs: VoiceService) -> str:
    """The label selector in the string form the scale subresource reports."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(vs).items()))


def owner_reference(vs: VoiceService) -> dict[str, Any]:
    if not vs.metadata.uid:
        raise MissingUidError(
            f"VoiceService {vs.namespace}/{vs.name} has no metadata.uid: children can only be "
            "built for an object the API server has stored"
        )
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": vs.name,
        "uid": vs.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def spec_hash(obj: dict[str, Any]) -> str:
    """A stable digest of a child's desired state, ignoring any hash it already carries."""
    metadata = dict(obj.get("metadata", {}))
    annotations = {
        k: v for k, v in metadata.get("annotations", {}).items() if k != SPEC_HASH_ANNOTATION
    }
    metadata["annotations"] = annotations
    canonical = json.dumps({**obj, "metadata": metadata}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def with_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = dict(obj["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), SPEC_HASH_ANNOTATION: ""}
    stamped = {**obj, "metadata": metadata}
    metadata["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(stamped)
    return stamped


def child_metadata(vs: VoiceService, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or vs.name,
        "namespace": vs.namespace,
        "labels": common_labels(vs),
        "annotations": {},
        "ownerReferences": [owner_reference(vs)],
    }
