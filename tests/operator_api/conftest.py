"""Shared tools of the VoiceService API tests: the generated schema, defaulting as the API
server does it, CEL evaluation of the schema's rules, and Kubernetes schema validation."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from celpy.adapter import json_to_cel

from voicefleet_operator.crd.generate import render_crd_yaml

KUBERNETES_VERSIONS = ("1.30", "1.31", "1.32", "1.33", "1.34", "1.35")

Json = dict[str, Any]


@pytest.fixture(scope="session")
def crd() -> Json:
    loaded: Json = yaml.safe_load(render_crd_yaml())
    return loaded


@pytest.fixture(scope="session")
def openapi_schema(crd: Json) -> Json:
    schema: Json = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(schema: Json, value: Any) -> Any:
    """Structural defaulting as the API server does it: missing properties get `default`,
    then defaulting recurses into what is present (so `default: {}` fills nested defaults)."""
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is not None:
            out = dict(value)
            for name, sub in properties.items():
                if name not in out and "default" in sub:
                    out[name] = copy.deepcopy(sub["default"])
            return {
                name: apply_defaults(properties[name], item) if name in properties else item
                for name, item in out.items()
            }
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return {key: apply_defaults(values, item) for key, item in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _nodes_at(value: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """Every value at a schema path (`[]` walks list items); nothing where a part is absent,
    which is when the API server does not run a rule either."""
    if not path:
        yield value
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        for item in value if isinstance(value, list) else []:
            yield from _nodes_at(item, rest)
    elif isinstance(value, dict) and head in value:
        yield from _nodes_at(value[head], rest)


def _rules_with_paths(
    schema: Json, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Json]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in schema.get("properties", {}).items():
        yield from _rules_with_paths(sub, (*path, name))
    if "items" in schema:
        yield from _rules_with_paths(schema["items"], (*path, "[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _rules_with_paths(schema["additionalProperties"], (*path, "{}"))


class CelChecker:
    """Evaluates every `x-kubernetes-validations` rule of the generated schema, as written
    in the CRD, on an (already defaulted) object."""

    def __init__(self, schema: Json) -> None:
        self._env = celpy.Environment()
        self.rules = [
            (path, rule, self._env.program(self._env.compile(rule["rule"])))
            for path, rule in _rules_with_paths(schema)
        ]

    def broken_messages(self, obj: Json) -> set[str]:
        broken = set()
        for path, rule, program in self.rules:
            for node in _nodes_at(obj, path):
                result = program.evaluate({"self": json_to_cel(node)})
                if isinstance(result, Exception):
                    raise AssertionError(f"rule {rule['rule']!r} failed to evaluate: {result}")
                if not bool(result):
                    broken.add(rule["message"])
        return broken


@pytest.fixture(scope="session")
def cel_checker(openapi_schema: Json) -> CelChecker:
    return CelChecker(openapi_schema)


@pytest.fixture(scope="session")
def defaulted(openapi_schema: Json) -> Callable[[Json], Json]:
    def default(obj: Json) -> Json:
        result: Json = apply_defaults(openapi_schema, obj)
        return result

    return default


@pytest.fixture(scope="session")
def validate_k8s() -> Callable[[Json], None]:
    """Validate an object against the strict schemas of every supported Kubernetes version."""

    def validate(obj: Json) -> None:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)

    return validate
