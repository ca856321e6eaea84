"""The operator against the real control plane: children with owner references, pods really
scheduled on kwok nodes, garbage collection by the real controller, drift repaired, no writes
when idle (counted in the API server's audit log), no duplicates after a restart."""

from __future__ import annotations

import asyncio
import collections
import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.conftest import OPERATOR
from tests.cluster.controlplane import ControlPlane
from tests.cluster.faultproxy import FaultProxy
from tests.operator.harness.running import MovableClock, RunningOperator, eventually
from voicefleet_operator.k8s.resources import PRUNABLE_RESOURCES
from voicefleet_operator.settings import OperatorSettings

CHILD_KINDS = ("deployments", "services", "poddisruptionbudgets")


def voiceservice(namespace: str, name: str = "stt", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "tiny.en"},
        "replicas": {"fixed": 2},
        "autoscaling": {"mode": "off"},
    }
    base.update(spec)
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }


def apply(plane: ControlPlane, body: dict[str, Any]) -> None:
    """As a person would: kubectl apply --server-side."""
    plane.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(body))


def get(plane: ControlPlane, namespace: str, kind: str, name: str = "") -> Any:
    group = {
        "voiceservices": "apis/voicefleet.io/v1alpha1",
        "deployments": "apis/apps/v1",
        "replicasets": "apis/apps/v1",
        "poddisruptionbudgets": "apis/policy/v1",
        "services": "api/v1",
        "pods": "api/v1",
        "endpointslices": "apis/discovery.k8s.io/v1",
    }[kind]
    response = plane.client().get(f"/{group}/namespaces/{namespace}/{kind}/{name}".rstrip("/"))
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


def items(plane: ControlPlane, namespace: str, kind: str) -> list[dict[str, Any]]:
    return list(get(plane, namespace, kind)["items"])


def ready(plane: ControlPlane, namespace: str, name: str = "stt") -> dict[str, Any] | None:
    vs = get(plane, namespace, "voiceservices", name) or {}
    status = vs.get("status") or {}
    return status if status.get("phase") == "Ready" else None


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_children_are_owned_scheduled_and_collected_by_the_real_gc(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    apply(control_plane, voiceservice(namespace))
    status = await eventually(
        lambda: ready(control_plane, namespace), within=90, what="the VoiceService is Ready"
    )
    assert status["ready"] == "2/2"
    owner = get(control_plane, namespace, "voiceservices", "stt")
    for kind in CHILD_KINDS:
        child = get(control_plane, namespace, kind, "stt")
        assert child is not None, kind
        (reference,) = child["metadata"]["ownerReferences"]
        assert reference["uid"] == owner["metadata"]["uid"]
        assert reference["controller"] is True
    pods = items(control_plane, namespace, "pods")
    assert len(pods) == 2
    assert all(pod["spec"]["nodeName"].startswith("cpu-") for pod in pods), "scheduled on CPU"
    assert all(pod["status"]["phase"] == "Running" for pod in pods)

    control_plane.kubectl("delete", "vsvc", "stt", "-n", namespace, "--wait=false")
    await eventually(
        lambda: (
            all(get(control_plane, namespace, kind, "stt") is None for kind in CHILD_KINDS)
            and not items(control_plane, namespace, "replicasets")
        ),
        within=90,
        what="the garbage collector deletes every child",
    )
    await eventually(
        lambda: get(control_plane, namespace, "voiceservices", "stt") is None,
        what="the finalizer is released",
    )


async def test_drift_is_repaired_and_fields_of_others_are_kept(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    apply(control_plane, voiceservice(namespace))
    await eventually(lambda: ready(control_plane, namespace), within=90, what="Ready")
    image = get(control_plane, namespace, "deployments", "stt")["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    control_plane.kubectl(
        "annotate", "deployment", "stt", "-n", namespace, "example.com/owner=team-speech"
    )
    control_plane.kubectl(
        "set", "image", "deployment/stt", "-n", namespace, "runtime=registry.example/evil:1"
    )

    def repaired() -> dict[str, Any] | None:
        deployment = get(control_plane, namespace, "deployments", "stt")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return deployment if container["image"] == image else None

    deployment = await eventually(repaired, within=60, what="the image is put back")
    assert deployment["metadata"]["annotations"]["example.com/owner"] == "team-speech"

    control_plane.kubectl("delete", "service", "stt", "-n", namespace)
    await eventually(
        lambda: get(control_plane, namespace, "services", "stt"),
        within=60,
        what="the deleted Service is recreated",
    )


async def test_idle_operator_writes_nothing_and_a_restart_duplicates_nothing(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    apply(control_plane, voiceservice(namespace))
    await eventually(lambda: ready(control_plane, namespace), within=90, what="Ready")
    await asyncio.sleep(3)  # the writes that follow Ready (status, events) land
    quiet_from = now_rfc3339()
    await asyncio.sleep(10)  # ten resyncs at the test's one-second interval
    writes = control_plane.writes_by(OPERATOR.name, after=quiet_from)
    assert writes == [], [(w["verb"], w["requestURI"]) for w in writes]

    uid = get(control_plane, namespace, "deployments", "stt")["metadata"]["uid"]
    await operator.stop()
    restarted_from = now_rfc3339()
    await operator.start()
    await asyncio.sleep(8)
    assert ready(control_plane, namespace)
    assert [d["metadata"]["uid"] for d in items(control_plane, namespace, "deployments")] == [uid]
    assert len(items(control_plane, namespace, "replicasets")) == 1
    assert len(items(control_plane, namespace, "pods")) == 2
    creates = [
        w
        for w in control_plane.writes_by(OPERATOR.name, after=restarted_from)
        if w["verb"] == "create" and w["objectRef"]["resource"] != "events"
    ]
    assert creates == []


async def test_a_burst_of_voiceservices_writes_each_child_once_and_lists_nothing_to_prune(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    """Two dozen VoiceServices at once: every one is reconciled until its rollout is complete;
    a first reconcile lists nothing to prune; a child is written once, not again after the echo
    of that write or its own status changes. (No pods: the kwok nodes' room is no part of it.)"""
    count = 24
    started = now_rfc3339()
    burst = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [voiceservice(namespace, f"stt-{i}", replicas={"fixed": 0}) for i in range(count)],
    }
    apply(control_plane, burst)

    def rolled_out(vs: dict[str, Any]) -> bool:
        conditions = {c["type"]: c for c in (vs.get("status") or {}).get("conditions") or []}
        return bool(conditions.get("Progressing", {}).get("reason") == "RolloutComplete")

    await eventually(
        lambda: sum(map(rolled_out, items(control_plane, namespace, "voiceservices"))) == count,
        within=240,
        what=f"{count} VoiceServices rolled out",
    )
    await asyncio.sleep(3)  # a reconcile that a late child event started ends
    requests = [
        event
        for event in control_plane.audit_events()
        if event.get("user", {}).get("username") == OPERATOR.name
        and (event.get("objectRef") or {}).get("namespace") == namespace
        and event.get("requestReceivedTimestamp", "") > started
    ]
    prunable = {resource.plural for resource in PRUNABLE_RESOURCES}
    lists = [e["objectRef"]["resource"] for e in requests if e["verb"] == "list"]
    assert not prunable & set(lists), "a new VoiceService's first reconcile has nothing to prune"
    reads = {e["objectRef"]["resource"] for e in requests if e["verb"] == "get"}
    children = {"deployments", "services", "poddisruptionbudgets"}
    assert not children & reads, "a first reconcile applies its children without reading them"
    writes = collections.Counter(
        e["objectRef"]["resource"] for e in requests if e["verb"] in ("patch", "create", "update")
    )
    assert writes["services"] == count
    assert writes["poddisruptionbudgets"] == count
    assert writes["deployments"] == 2 * count  # the apply, then the count as its own manager


def gpu_blocker(namespace: str, product: str, gpus: int = 1) -> dict[str, Any]:
    """A pod that takes the GPUs of one product, so the real scheduler has none left."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"blocker-{product.lower()}", "namespace": namespace},
        "spec": {
            "nodeSelector": {"nvidia.com/gpu.product": product},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "containers": [
                {
                    "name": "hold",
                    "image": "registry.example/hold:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
    }


async def test_gpu_fallback_follows_the_real_schedulers_unschedulable_pods(
    control_plane: ControlPlane,
    namespace: str,
    operator: RunningOperator,
    clock: MovableClock,
) -> None:
    for product in ("NVIDIA-A10G", "NVIDIA-L4"):
        apply(control_plane, gpu_blocker(namespace, product))
    await eventually(
        lambda: (
            all(
                pod["status"].get("phase") == "Running"
                for pod in items(control_plane, namespace, "pods")
            )
            and len(items(control_plane, namespace, "pods")) == 2
        ),
        within=60,
        what="the blockers hold every A10G and L4 GPU",
    )
    apply(
        control_plane,
        voiceservice(
            namespace,
            replicas={"fixed": 1},
            precision="float16",
            gpu={
                "type": "NVIDIA-A10G",
                "fallbacks": [{"type": "NVIDIA-L4"}, {"cpu": {"precision": "int8"}}],
                "fallbackAfterSeconds": 30,
            },
        ),
    )

    def fallback() -> dict[str, Any]:
        status = (get(control_plane, namespace, "voiceservices", "stt") or {}).get("status") or {}
        return dict(status.get("fallback") or {})

    def stuck_at(index: int) -> Callable[[], bool]:
        return lambda: bool(
            fallback().get("unschedulableSince") and fallback().get("index", 0) == index
        )

    for index in (0, 1):
        await eventually(
            stuck_at(index),
            within=60,
            what=f"the scheduler finds no node for candidate {index}",
        )
        stuck = [
            pod
            for pod in items(control_plane, namespace, "pods")
            if not pod["metadata"]["name"].startswith("blocker-")
        ]
        assert stuck
        assert all(
            any(
                c["type"] == "PodScheduled" and c["reason"] == "Unschedulable"
                for c in pod["status"].get("conditions", [])
            )
            for pod in stuck
            if not pod["metadata"].get("deletionTimestamp")
        ), [(p["metadata"]["name"], p["metadata"].get("annotations"), p["status"]) for p in stuck]
        clock.advance(31)  # past fallbackAfterSeconds, without waiting for it

    status = await eventually(
        lambda: (s := ready(control_plane, namespace)) and s.get("gpu") == "cpu" and s,
        within=90,
        what="the service runs on CPU, the last fallback",
    )
    assert status["precision"] == "int8"
    assert status["fallback"]["index"] == 2
    (pod,) = [
        p
        for p in items(control_plane, namespace, "pods")
        if not p["metadata"]["name"].startswith("blocker-")
        and not p["metadata"].get("deletionTimestamp")
    ]
    assert pod["spec"]["nodeName"].startswith("cpu-")


def kubeconfig_through(
    plane: ControlPlane, proxy: FaultProxy, namespace: str, folder: Path
) -> Path:
    """The operator's kubeconfig, with the proxy in front of the API server."""
    config = plane.kubeconfig_dict(OPERATOR.token, namespace=namespace)
    config["clusters"][0]["cluster"] = {"server": proxy.url}
    kubeconfig = folder / "kubeconfig-through-proxy"
    kubeconfig.write_text(yaml.safe_dump(config))
    return kubeconfig


async def test_the_operator_converges_through_faults_and_resumes_its_watches(
    control_plane: ControlPlane,
    namespace: str,
    operator_settings: OperatorSettings,
    tmp_path: Path,
) -> None:
    proxy = FaultProxy(control_plane.server, control_plane.ca_path, rate=0.1)
    await proxy.start()
    kubeconfig = kubeconfig_through(control_plane, proxy, namespace, tmp_path)
    # Short watches: each is reopened (resumed from its resourceVersion) every few seconds.
    settings = operator_settings.model_copy(
        update={"kubeconfig": kubeconfig, "server_timeout": 4, "client_timeout": 8}
    )
    running = RunningOperator(settings)
    try:
        await running.start()
        names = ("stt-a", "stt-b", "stt-c")
        for name in names:
            apply(control_plane, voiceservice(namespace, name))
        await eventually(
            lambda: all(ready(control_plane, namespace, name) for name in names),
            within=180,
            what="every VoiceService converges through the faults",
        )
        watches_before = proxy.watches
        await eventually(
            lambda: proxy.watches > watches_before, within=60, what="the watches are reopened"
        )
        apply(control_plane, voiceservice(namespace, "stt-a", replicas={"fixed": 3}))
        await eventually(
            lambda: (s := ready(control_plane, namespace, "stt-a")) and s.get("ready") == "3/3",
            within=120,
            what="a later change is still seen",
        )
        assert sum(proxy.faults.values()) >= 5, proxy.faults
        assert proxy.faults["drop"] >= 1 or proxy.faults["error"] >= 1, proxy.faults
    finally:
        await running.stop()
        await proxy.stop()


TOKEN_PLUGIN = """#!{python}
# A kubeconfig exec plugin: hands out the token in {token_file}, valid for two seconds.
import datetime, json, pathlib
expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
print(json.dumps({{
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {{
        "token": pathlib.Path({token_file!r}).read_text().strip(),
        "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }},
}}))
"""


def bound_token(plane: ControlPlane, namespace: str, account: str, secret: str) -> str:
    """A service-account token that dies with the Secret it is bound to."""
    plane.kubectl("create", "secret", "generic", secret, "-n", namespace)
    return plane.kubectl(
        "create", "token", account, "-n", namespace,
        "--bound-object-kind=Secret", f"--bound-object-name={secret}",
    ).stdout.strip()  # fmt: skip


async def test_credentials_from_an_exec_plugin_are_renewed_when_they_expire(
    control_plane: ControlPlane,
    namespace: str,
    operator_settings: OperatorSettings,
    tmp_path: Path,
) -> None:
    account = "rotating-operator"
    control_plane.kubectl("create", "serviceaccount", account, "-n", namespace)
    control_plane.kubectl(
        "create", "clusterrolebinding", f"{namespace}-{account}", "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:{account}",
    )  # fmt: skip
    token_file = tmp_path / "token"
    first = bound_token(control_plane, namespace, account, "first")
    token_file.write_text(first)
    plugin = tmp_path / "token-plugin"
    plugin.write_text(TOKEN_PLUGIN.format(python=sys.executable, token_file=str(token_file)))
    plugin.chmod(0o755)
    config = control_plane.kubeconfig_dict("", namespace=namespace)
    config["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }
    kubeconfig = tmp_path / "kubeconfig-exec"
    kubeconfig.write_text(yaml.safe_dump(config))
    running = RunningOperator(operator_settings.model_copy(update={"kubeconfig": kubeconfig}))
    await running.start()
    try:
        apply(control_plane, voiceservice(namespace))
        await eventually(lambda: ready(control_plane, namespace), within=90, what="Ready")
        # Rotate: the plugin hands out a new token, and the first one stops working.
        token_file.write_text(bound_token(control_plane, namespace, account, "second"))
        control_plane.kubectl("delete", "secret", "first", "-n", namespace)
        await eventually(
            lambda: control_plane.client(token=first).get("/version").status_code == 401,
            what="the first token is refused",
        )
        apply(control_plane, voiceservice(namespace, replicas={"fixed": 3}))
        await eventually(
            lambda: (s := ready(control_plane, namespace)) and s.get("ready") == "3/3",
            within=90,
            what="the operator acts with the renewed token",
        )
    finally:
        await running.stop()


def condition(plane: ControlPlane, namespace: str, kind: str, name: str = "stt") -> dict[str, Any]:
    status = (get(plane, namespace, "voiceservices", name) or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def warnings(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    events = plane.client().get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
    return [e for e in events if e.get("type") == "Warning"]


def warning_reasons(plane: ControlPlane, namespace: str) -> list[str]:
    return [e["reason"] for e in warnings(plane, namespace)]


def warning_messages(plane: ControlPlane, namespace: str, reason: str) -> list[str]:
    return [e.get("message", "") for e in warnings(plane, namespace) if e["reason"] == reason]


async def test_updates_roll_and_an_invalid_spec_is_degraded_without_a_retry_storm(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    apply(control_plane, voiceservice(namespace))
    await eventually(lambda: ready(control_plane, namespace), within=90, what="Ready")
    apply(control_plane, voiceservice(namespace, model={"name": "base"}, precision="int8"))
    status = await eventually(
        lambda: (s := ready(control_plane, namespace)) and s.get("observedGeneration") == 2 and s,
        within=90,
        what="generation 2 rolls out",
    )
    assert (status["model"], status["precision"]) == ("base", "int8")
    container = get(control_plane, namespace, "deployments", "stt")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["VOICEFLEET_MODEL"], env["VOICEFLEET_PRECISION"]) == ("base", "int8")
    assert len(items(control_plane, namespace, "replicasets")) == 2, "a rolling update"

    # Accepted by the API server, refused by the operator's models (see the API table).
    apply(control_plane, voiceservice(namespace, pod={"nodeSelector": {"bad key!": "x"}}))
    await eventually(
        lambda: condition(control_plane, namespace, "Degraded").get("status") == "True",
        within=60,
        what="the VoiceService turns Degraded",
    )
    assert "nodeSelector" in condition(control_plane, namespace, "Degraded")["message"]
    settled = now_rfc3339()
    await asyncio.sleep(5)  # five resyncs at the test's interval
    writes = control_plane.writes_by(OPERATOR.name, after=settled)
    assert writes == [], [(w["verb"], w["requestURI"]) for w in writes]
    assert warning_reasons(control_plane, namespace).count("InvalidSpec") == 1


REFUSE_DEPLOYMENTS = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments]
  validations:
  - expression: >-
      !has(object.spec.template.spec.nodeSelector)
      || !('disk' in object.spec.template.spec.nodeSelector)
    message: no Deployment may choose nodes by disk here
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"""


async def test_a_child_the_server_refuses_is_degraded_and_not_retried(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    policy = f"refuse-disk-{namespace}"
    control_plane.kubectl(
        "apply", "--server-side", "-f", "-",
        stdin=REFUSE_DEPLOYMENTS.format(name=policy, namespace=namespace),
    )  # fmt: skip
    await asyncio.sleep(2)  # the policy reaches the admission plugin's informer
    apply(control_plane, voiceservice(namespace, pod={"nodeSelector": {"disk": "ssd"}}))
    await eventually(
        lambda: condition(control_plane, namespace, "Degraded").get("status") == "True",
        within=60,
        what="the VoiceService turns Degraded",
    )
    message = condition(control_plane, namespace, "Degraded")["message"]
    assert "no Deployment may choose nodes by disk here" in message
    settled = now_rfc3339()
    await asyncio.sleep(5)
    writes = control_plane.writes_by(OPERATOR.name, after=settled)
    assert writes == [], [(w["verb"], w["requestURI"]) for w in writes]
    assert warning_reasons(control_plane, namespace) == ["ChildRejected"]
    assert get(control_plane, namespace, "deployments", "stt") is None

    control_plane.kubectl("delete", "validatingadmissionpolicybinding", policy)
    control_plane.kubectl("delete", "validatingadmissionpolicy", policy)
