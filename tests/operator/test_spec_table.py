"""The spec table (tests/operator_api/spec_cases.py) against the emulated API server with the
generated CRD and the real operator: each invalid VoiceService is refused where the table says.

Admission (schema, CEL): the create is refused with 422 and, for CEL, the rule's message.
Operator: the API server stores it; the operator sets Degraded with reason InvalidSpec and the
models' message, posts one Warning Event, builds nothing, and then leaves it alone.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from tests.operator.harness import ApiServer
from tests.operator.harness.crd import CrdSchema, with_strict_fields
from tests.operator.harness.running import eventually
from tests.operator_api.spec_cases import CEL, INVALID, OPERATOR, InvalidCase
from voicefleet_operator.crd.generate import build_crd

NS = "speech"
VS_PATH = "voicefleet.io/v1alpha1/voiceservices"
VS_URL = f"/apis/voicefleet.io/v1alpha1/namespaces/{NS}/voiceservices"
Json = dict[str, Any]


@pytest.fixture(scope="module")
def crd_schema() -> CrdSchema:
    """The CRD as the API server applies it to `kubectl apply`/`create`, whose field validation
    is Strict by default: an unknown field is refused rather than pruned."""
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"] = with_strict_fields(version["schema"]["openAPIV3Schema"])
    return CrdSchema(crd)


def named(case: InvalidCase, index: int) -> Json:
    """The case's body under a name of its own, unless the name is what the case is about."""
    body = copy.deepcopy(case.body)
    if body["metadata"]["name"] == "whisper":
        body["metadata"]["name"] = f"case-{index:03d}"
    return body


def degraded(cluster: ApiServer, name: str) -> Json | None:
    status = (cluster.read(VS_PATH, NS, name) or {}).get("status") or {}
    condition = next((c for c in status.get("conditions", []) if c["type"] == "Degraded"), None)
    return condition if condition is not None and condition["status"] == "True" else None


@pytest.mark.usefixtures("operator")
async def test_every_invalid_spec_is_refused_by_its_layer(cluster: ApiServer) -> None:
    stored: dict[str, InvalidCase] = {}
    for index, case in enumerate(INVALID):
        body = named(case, index)
        async with cluster.request("POST", VS_URL, json=body) as response:
            reply = await response.json(content_type=None)
            refused = response.status
        if case.layer == OPERATOR:
            assert refused in (200, 201), (case.id, reply)
            stored[body["metadata"]["name"]] = case
            continue
        assert refused == 422, (case.id, "admitted", reply)
        if case.layer == CEL:
            assert case.message in json.dumps(reply), (case.id, reply)

    def all_degraded() -> bool:
        return all(degraded(cluster, name) for name in stored)

    await eventually(all_degraded, within=60, what="every operator-layer case turns Degraded")
    for name, case in stored.items():
        condition = degraded(cluster, name)
        assert condition is not None
        assert condition["reason"] == "InvalidSpec", case.id
        assert case.message in condition["message"], (case.id, condition["message"])
    assert not cluster.alive("apps/v1/deployments", NS), "nothing is built from an invalid spec"

    def warnings() -> list[Json]:
        events = cluster.alive("v1/events", NS).values()
        return [e for e in events if e.get("type") == "Warning"]

    await eventually(
        lambda: len(warnings()) >= len(stored), within=30, what="one Warning per Degraded case"
    )
    await asyncio.sleep(1.0)  # kopf's own bookkeeping patch after the handler, then quiet
    settled = len(cluster.journal)
    await asyncio.sleep(3 * 1.0)  # three resync intervals: nothing is retried behind kopf's back
    writes = [
        (r.verb, r.path)
        for r in cluster.journal[settled:]
        if not r.user_agent.startswith("kmock") and r.verb in ("create", "patch", "update")
    ]
    assert writes == [], writes
    assert sorted(e["reason"] for e in warnings()) == ["InvalidSpec"] * len(stored)
