"""The real control plane, started once per session; its logs are attached to failing tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import REPO_ROOT, ControlPlane, User
from tests.loopback import free_port
from tests.operator.harness.running import MovableClock, RunningOperator
from voicefleet_operator.settings import OperatorSettings

OPERATOR = User("voicefleet-test-operator", ("system:masters",))
"""The operator's identity in tests that are not about RBAC (the chart test uses the chart's)."""

KEDA_CRD = REPO_ROOT / "tests" / "chart" / "schemas" / "keda.sh_scaledobjects.yaml"
PROMETHEUS = {"source": "prometheus", "prometheus": {"url": "http://prometheus.example:9090"}}
"""The metrics of autoscaling modes that query Prometheus (no server answers there)."""

_started: list[ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("cluster"), users=(OPERATOR,))
    _started.append(plane)
    try:
        plane.start()
        plane.install_crd()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def keda(control_plane: ControlPlane) -> None:
    """KEDA's ScaledObject API (its CRD; no KEDA controller: nothing acts on the objects)."""
    control_plane.kubectl("apply", "--server-side", "-f", str(KEDA_CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _started:
        for plane in _started:
            report.sections.append(("control plane logs", plane.all_log_tails()))
    return report


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for each test, with its default service account."""
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40]
    name = name.rstrip("-") + "-" + secrets.token_hex(2)
    control_plane.kubectl("create", "namespace", name)
    control_plane.wait_for_service_account(name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


def quick_operator_settings(kubeconfig: Path, namespace: str) -> OperatorSettings:
    """A standalone operator watching `namespace`, with short watch and retry timings; a resync
    every second makes idle-write checks strict."""
    return OperatorSettings(
        namespaces=[namespace],
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
def operator_settings(control_plane: ControlPlane, namespace: str) -> OperatorSettings:
    return quick_operator_settings(
        control_plane.kubeconfig(OPERATOR, namespace=namespace), namespace
    )


@pytest.fixture
async def operator(
    operator_settings: OperatorSettings, clock: MovableClock
) -> AsyncIterator[RunningOperator]:
    running = RunningOperator(operator_settings, clock)
    await running.start()
    yield running
    await running.stop()
