"""Fuzz every operation in the server's own OpenAPI schema: whatever comes in, no 5xx.

schemathesis' pytest plugin does not run under pytest 9 here, so the test drives its
hypothesis strategies directly, one operation at a time, with a bounded number of examples.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.runtime.conftest import RunningServer

EXAMPLES_PER_OPERATION = 12


def requests_served(server: RunningServer) -> float:
    return sum(
        sample.value
        for metric in server.runtime.metrics.requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def test_fuzzed_requests_get_no_5xx_and_only_documented_statuses(
    tiny_server: RunningServer,
) -> None:
    schema = schemathesis.openapi.from_url(f"{tiny_server.base_url}/openapi.json")
    results = list(schema.get_all_operations())
    assert not [r.err() for r in results if isinstance(r, Err)], "every operation parses"
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert {op.path for op in operations} >= {
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/transcribe",
        "/v1/models",
    }
    served_before = requests_served(tiny_server)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case: schemathesis.Case[Any]) -> None:
            response = case.call(headers=tiny_server.headers, timeout=60)
            case.validate_response(
                response,
                checks=[not_a_server_error, status_code_conformance],
                headers=tiny_server.headers,
            )

        fuzz()
    # Every operation was really exercised over HTTP, most of them many times.
    assert requests_served(tiny_server) - served_before >= 4 * len(operations)
    assert tiny_server.runtime.ready
