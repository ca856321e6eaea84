"""`voicefleet render -f FILE`: the children the operator would apply, without a cluster."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from voicefleet_operator.builders.children import build_children
from voicefleet_operator.builders.deployment import initial_replicas
from voicefleet_operator.crd.models import (
    KIND,
    InvalidVoiceServiceError,
    parse_voiceservice,
)

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


def _read(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text()
    except OSError as error:
        raise SystemExit(f"voicefleet render: cannot read {path}: {error.strerror}") from error


def _documents(text: str, source: str) -> list[dict[str, Any]]:
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise SystemExit(f"voicefleet render: {source} is not valid YAML:\n{error}") from error
    if not documents:
        raise SystemExit(f"voicefleet render: {source} holds no VoiceService")
    for index, document in enumerate(documents):
        if not isinstance(document, dict) or document.get("kind") != KIND:
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            raise SystemExit(
                f"voicefleet render: document {index + 1} of {source} is a {kind}, not a {KIND}"
            )
    return documents


def _with_placeholder_uid(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    metadata = dict(body.get("metadata") or {})
    if metadata.get("uid"):
        return body, False
    metadata["uid"] = PLACEHOLDER_UID
    return {**body, "metadata": metadata}, True


def render_file(path: Path, *, prometheus_operator: bool) -> str:
    """Validate every VoiceService in `path` ("-": stdin) and return their children as YAML.

    Exits (SystemExit with a message listing every problem) when a document is invalid.
    """
    source = "stdin" if str(path) == "-" else str(path)
    parts: list[str] = []
    problems: list[str] = []
    for body in _documents(_read(path), source):
        body, placeholder = _with_placeholder_uid(body)
        try:
            vs = parse_voiceservice(body)
            children = build_children(
                vs, servicemonitor_api=prometheus_operator, replicas=initial_replicas(vs.spec)
            )
        except InvalidVoiceServiceError as error:
            problems.append(str(error))
            continue
        note = (
            f"# ownerReferences carry a placeholder uid ({PLACEHOLDER_UID}): the API server "
            "assigns the VoiceService's real one.\n"
            if placeholder
            else ""
        )
        parts.append(
            f"# Children of VoiceService {vs.namespace}/{vs.name}, as the operator applies "
            f"them.\n{note}"
            + yaml.safe_dump_all(children, sort_keys=False, explicit_start=True, width=100)
        )
    if problems:
        raise SystemExit("voicefleet render: " + "\n".join(problems))
    return "".join(parts)
