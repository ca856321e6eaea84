"""Fixtures for the operator's tests: the emulated API server, served over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest
import yaml

from tests.loopback import free_port
from tests.operator.harness import ApiServer, ScalePaths, register_cluster_resources
from tests.operator.harness.crd import CrdSchema
from tests.operator.harness.running import MovableClock, RunningOperator
from voicefleet_operator.crd.generate import build_crd
from voicefleet_operator.settings import OperatorSettings


@pytest.fixture
async def api_server() -> AsyncIterator[ApiServer]:
    """A bare emulated API server (no resources registered) listening on 127.0.0.1."""
    async with ApiServer() as server, kmock.Server(server):
        yield server


# ----- the operator against a cluster-like API server -------------------------------------------

NAMESPACE = "speech"
TOKEN = "test-token-not-a-secret"


def scale_paths(schema: CrdSchema) -> ScalePaths:
    assert schema.scale is not None, "the VoiceService CRD declares a scale subresource"
    return ScalePaths(
        spec_replicas=schema.scale["specReplicasPath"],
        status_replicas=schema.scale["statusReplicasPath"],
        label_selector=schema.scale.get("labelSelectorPath"),
    )


@pytest.fixture(scope="session")
def crd_schema() -> CrdSchema:
    return CrdSchema(build_crd())


@pytest.fixture
def crd_enforces_cel() -> bool:
    """Override to False to emulate a cluster whose CRD lacks the CEL rules."""
    return True


@pytest.fixture
def cluster_serves_keda() -> bool:
    """Override to True to serve keda.sh ScaledObjects (KEDA installed)."""
    return False


@pytest.fixture
def cluster_serves_servicemonitors() -> bool:
    """Override to True to serve monitoring.coreos.com ServiceMonitors (prometheus-operator)."""
    return False


@pytest.fixture
async def cluster(
    api_server: ApiServer,
    crd_schema: CrdSchema,
    crd_enforces_cel: bool,
    cluster_serves_keda: bool,
    cluster_serves_servicemonitors: bool,
) -> ApiServer:
    schema = CrdSchema(build_crd(), cel=crd_enforces_cel) if not crd_enforces_cel else crd_schema
    api_server.namespaces.add(NAMESPACE)
    register_cluster_resources(
        api_server,
        voiceservice_validator=schema.violations,
        voiceservice_defaulter=schema.default,
        voiceservice_scale=scale_paths(schema),
        with_keda=cluster_serves_keda,
        with_servicemonitors=cluster_serves_servicemonitors,
    )
    return api_server


@pytest.fixture
def kubeconfig(cluster: ApiServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "emulated", "cluster": {"server": str(cluster.url).rstrip("/")}}
                ],
                "users": [{"name": "operator", "user": {"token": TOKEN}}],
                "contexts": [
                    {
                        "name": "emulated",
                        "context": {
                            "cluster": "emulated",
                            "user": "operator",
                            "namespace": NAMESPACE,
                        },
                    }
                ],
                "current-context": "emulated",
            }
        )
    )
    return path


@pytest.fixture
def operator_settings(kubeconfig: Path) -> OperatorSettings:
    # Short watch and retry timings keep the scenarios quick; nothing asserts on timing.
    return OperatorSettings(
        namespaces=[NAMESPACE],
        standalone=True,
        kubeconfig=kubeconfig,
        server_timeout=30,
        client_timeout=40,
        resync_interval=1.0,
        backoff=0.2,
        backoff_max=1.0,
        idle_timeout=1.0,
        metrics_host="127.0.0.1",
        metrics_port=free_port(),
    )


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def operator(
    operator_settings: OperatorSettings, clock: MovableClock
) -> AsyncIterator[RunningOperator]:
    running = RunningOperator(operator_settings, clock)
    await running.start()
    yield running
    await running.stop()
