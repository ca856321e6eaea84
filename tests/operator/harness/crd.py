"""A CRD's openAPIV3Schema as the API server applies it: defaults, structure, CEL rules."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fill `default`s of absent properties, recursively (structural-schema defaulting)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        result = dict(value)
        for name, sub in (schema.get("properties") or {}).items():
            if name not in result and "default" in sub:
                result[name] = copy.deepcopy(sub["default"])
            if name in result:
                result[name] = apply_defaults(result[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            known = set(schema.get("properties") or {})
            for name in set(result) - known:
                result[name] = apply_defaults(result[name], extra)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _cel_violations(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    violations: list[str] = []
    environment = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations") or []:
        program = environment.program(environment.compile(rule["rule"]))
        try:
            holds = bool(program.evaluate({"self": json_to_cel(value)}))
        except CELEvalError:
            holds = False
        if not holds:
            violations.append(f"{where}: {rule.get('message') or rule['rule']}")
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                violations += _cel_violations(value[name], sub, f"{where}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            violations += _cel_violations(item, schema["items"], f"{where}[{index}]")
    return violations


def with_strict_fields(schema: Any) -> Any:
    """The schema as kubectl's default strict field validation applies it: unknown fields
    fail (instead of being pruned) wherever the CRD does not preserve them."""
    if isinstance(schema, list):
        return [with_strict_fields(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: with_strict_fields(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


class CrdSchema:
    """Validation of one CRD version; `cel=False` emulates a CRD installed without its rules."""

    def __init__(self, crd: dict[str, Any], *, cel: bool = True) -> None:
        version = crd["spec"]["versions"][0]
        self.schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
        self.scale: dict[str, str] | None = version.get("subresources", {}).get("scale")
        self.cel = cel
        self._validator = jsonschema.Draft7Validator(self.schema)

    def default(self, obj: dict[str, Any]) -> dict[str, Any]:
        defaulted = apply_defaults(obj, self.schema)
        assert isinstance(defaulted, dict)
        return defaulted

    def violations(self, new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        body = {k: v for k, v in new.items() if k != "metadata"}
        found = [
            f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in self._validator.iter_errors(body)
        ]
        if self.cel and not found:
            found += _cel_violations(new, self.schema, "self")
        return found
