"""The Dockerfiles agree with what runs them (they cannot be built here: no Docker engine).

The checks are the ones a failed build or a crash-looping pod would otherwise reveal: every
COPY source exists, the user is the non-root UID the pod security contexts name, the
entry points are the CLI's subcommands, and the model cache sits where the operator mounts it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicefleet_operator.builders import deployment
from voicefleet_operator.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in steps:
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", rest))
    return env


@pytest.mark.parametrize(
    ("dockerfile", "base", "subcommand"),
    [
        ("runtime/Dockerfile", "nvidia/cuda:12.", "serve"),
        ("operator/Dockerfile", "python:3.11-slim", "operator"),
    ],
)
def test_dockerfile(dockerfile: str, base: str, subcommand: str) -> None:
    steps = instructions(REPO_ROOT / dockerfile)
    (from_line,) = [rest for keyword, rest in steps if keyword == "FROM"]
    assert from_line.startswith(base)
    for keyword, rest in steps:
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source} is missing"
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users[-1] == f"{deployment.RUN_AS_USER}:{deployment.RUN_AS_USER}"
    (entrypoint,) = [json.loads(rest) for keyword, rest in steps if keyword == "ENTRYPOINT"]
    assert entrypoint == ["voicefleet", subcommand]
    assert build_parser().parse_args([subcommand]).command == subcommand
    assert env_of(steps)["HOME"] == deployment.TMP_DIR


def test_runtime_image_model_cache_is_where_the_operator_mounts_it() -> None:
    steps = instructions(REPO_ROOT / "runtime" / "Dockerfile")
    assert env_of(steps)["VOICEFLEET_MODEL_DIR"] == deployment.MODEL_DIR
    assert ("VOLUME", f'["{deployment.MODEL_DIR}"]') in steps


def test_chart_runs_the_operator_as_the_image_user(chart_dir: Path) -> None:
    values: dict[str, Any] = yaml.safe_load((chart_dir / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == deployment.RUN_AS_USER
