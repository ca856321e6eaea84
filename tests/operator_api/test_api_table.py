"""A table of VoiceServices judged three ways that must agree: the generated OpenAPI schema
(jsonschema, after API-server defaulting), the CEL rules of the CRD (evaluated with cel-python),
and the pydantic models the operator and `voicefleet render` use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from tests.operator_api.spec_cases import CEL, INVALID, OPERATOR, SCHEMA, VALID, InvalidCase
from tests.operator_api.spec_cases import voiceservice as vs
from voicefleet_operator.crd import cel
from voicefleet_operator.crd.models import InvalidVoiceServiceError, parse_voiceservice

Json = dict[str, Any]


def unknown_fields(schema: Json, value: Any, path: str = "") -> list[str]:
    """Fields the schema does not declare: `kubectl apply` (strict field validation) refuses
    them, and without it the API server would silently drop them."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(schema["properties"][key], item, f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += unknown_fields(schema["items"], item, f"{path}[{index}]")
    return found


def test_table_is_large_and_covers_every_cel_rule() -> None:
    assert len(INVALID) >= 60
    assert len(VALID) >= 15
    assert len({c.id for c in INVALID} | {c.id for c in VALID}) == len(INVALID) + len(VALID)
    covered = {c.expect for c in INVALID if c.layer == CEL}
    assert covered == set(cel.ALL_RULES)


def _judged(body: Json, openapi_schema: Json, defaulted: Callable[[Json], Json]) -> Any:
    stored = defaulted(body)
    schema_errors = [
        e.message for e in jsonschema.Draft4Validator(openapi_schema).iter_errors(stored)
    ]
    schema_errors += unknown_fields(openapi_schema, body)
    try:
        parse_voiceservice(body)
        model_error = None
    except InvalidVoiceServiceError as error:
        model_error = str(error)
    return stored, schema_errors, model_error


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_each_invalid_spec_is_refused_by_its_layer(
    case: InvalidCase,
    openapi_schema: Json,
    defaulted: Callable[[Json], Json],
    cel_checker: Any,
) -> None:
    stored, schema_errors, model_error = _judged(case.body, openapi_schema, defaulted)
    assert model_error is not None, "the pydantic models accepted it"
    assert case.message in model_error
    if case.layer == SCHEMA:
        assert schema_errors, "the OpenAPI schema accepted it"
        return
    assert schema_errors == []
    broken = cel_checker.broken_messages(stored)
    if case.layer == OPERATOR:
        assert broken == set(), "CEL refused it: move it to the CEL layer"
    else:
        assert broken == {case.message}


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_each_valid_spec_passes_every_layer(
    case: Any, openapi_schema: Json, defaulted: Callable[[Json], Json], cel_checker: Any
) -> None:
    stored, schema_errors, model_error = _judged(case.body, openapi_schema, defaulted)
    assert schema_errors == []
    assert cel_checker.broken_messages(stored) == set()
    assert model_error is None


def test_model_error_lists_every_independent_problem() -> None:
    body = vs(
        {
            "gpu": {"count": 0},
            "precision": "fp8",
            "runtime": {"resources": {"limits": {"memory": "16GB"}}},
        }
    )
    with pytest.raises(InvalidVoiceServiceError) as caught:
        parse_voiceservice(body)
    message = str(caught.value)
    assert "spec.gpu.count" in message
    assert "spec.precision" in message
    assert "'16GB' is not a Kubernetes quantity" in message


def test_defaults_agree_between_schema_and_model(defaulted: Callable[[Json], Json]) -> None:
    """What the API server stores after defaulting is what the model assumes when a field is
    absent: so a VoiceService means the same thing to kubectl and to the operator."""
    body = vs({"gpu": {"fallbacks": [{"cpu": {}}]}})
    stored_spec = defaulted(body)["spec"]
    model_spec = parse_voiceservice(body).spec.model_dump(mode="json", exclude_none=True)
    assert stored_spec == model_spec
