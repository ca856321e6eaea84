"""The patch formats kube-apiserver accepts, and the label selectors it filters by.

JSON merge-patch (RFC 7386) and JSON patch (RFC 6902) are emulated. Server-side apply only
roughly: as a merge of the applied fields, without field managers, so it never conflicts and
never removes a field the applier stopped listing (the real API server does both; the cluster
tests in tests/cluster check the operator's apply against it). Strategic merge patch is refused
with 415, so a client that depends on it fails loudly here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import jsonpatch

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class PatchRejected(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes a key, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def apply_patch(content_type: str, target: dict[str, Any], body: Any) -> dict[str, Any]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in (MERGE_PATCH, APPLY_PATCH):
        if not isinstance(body, Mapping):
            raise PatchRejected(400, "BadRequest", "a merge patch must be a JSON object")
        patched = apply_merge_patch(target, body)
        assert isinstance(patched, dict)
        return patched
    if media_type == JSON_PATCH:
        if not isinstance(body, list):
            raise PatchRejected(400, "BadRequest", "a JSON patch must be a list of operations")
        try:
            result = jsonpatch.apply_patch(copy.deepcopy(target), body)
        except jsonpatch.JsonPatchTestFailed as exc:
            # kube-apiserver answers a failed "test" operation with 422, and kopf relies on it.
            raise PatchRejected(422, "Invalid", f"the test operation failed: {exc}") from exc
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise PatchRejected(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from exc
        assert isinstance(result, dict)
        return result
    raise PatchRejected(
        415, "UnsupportedMediaType", f"the emulated API server does not accept {media_type!r}"
    )


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)?\s*([A-Za-z0-9._-]*)\s*$")


def parse_label_selector(selector: str) -> list[tuple[str, str | None, str]]:
    """Equality-based selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`); set-based ones are refused."""
    requirements: list[tuple[str, str | None, str]] = []
    for raw in filter(None, (part.strip() for part in selector.split(","))):
        if raw.startswith("!"):
            requirements.append((raw[1:].strip(), "!exists", ""))
            continue
        match = _REQUIREMENT.match(raw)
        if match is None:
            raise PatchRejected(400, "BadRequest", f"unsupported label selector: {raw!r}")
        key, operator, value = match.groups()
        requirements.append((key, operator, value))
    return requirements


def labels_match(
    labels: Mapping[str, str], requirements: list[tuple[str, str | None, str]]
) -> bool:
    for key, operator, value in requirements:
        if operator is None and key not in labels:
            return False
        if operator == "!exists" and key in labels:
            return False
        if operator in ("=", "==") and labels.get(key) != value:
            return False
        if operator == "!=" and labels.get(key) == value:
            return False
    return True
