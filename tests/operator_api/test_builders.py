"""The pure builders, as plain data: every child validated against Kubernetes 1.30-1.35."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from voicefleet_operator.builders.children import build_children
from voicefleet_operator.builders.cpu import DECODE_PROCESSES_ENV
from voicefleet_operator.builders.deployment import (
    PRE_STOP_SECONDS,
    build_deployment,
    drain_seconds,
    startup_timeout_seconds,
)
from voicefleet_operator.builders.labels import (
    SPEC_HASH_ANNOTATION,
    MissingUidError,
    selector_labels,
    spec_hash,
)
from voicefleet_operator.builders.placement import (
    choose_fallback,
    placement_candidates,
    placement_for,
)
from voicefleet_operator.crd import cel
from voicefleet_operator.crd.models import API_PROCESSES_ENV, VoiceService, parse_voiceservice
from voicefleet_runtime.cpu_budget import decode_processes_for
from voicefleet_runtime.settings import RuntimeSettings

Json = dict[str, Any]
UID = "9a1f7c2e-8d4b-4c11-9a0e-1b2c3d4e5f60"
A100 = "NVIDIA-A100-SXM4-80GB"

SERVICEMONITOR_SCHEMA: Json = {
    # prometheus-operator's CRD is not in kubernetes-validate; check the fields Prometheus
    # needs to find the pods, with the shape of monitoring.coreos.com/v1.
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
        },
    },
}


def make(spec: Json, *, uid: str | None = UID, name: str = "whisper") -> VoiceService:
    metadata: Json = {"name": name, "namespace": "speech", "generation": 1}
    if uid is not None:
        metadata["uid"] = uid
    return parse_voiceservice(
        {"metadata": metadata, "spec": {"model": {"name": "large-v3"}, **spec}}
    )


SCENARIOS: dict[str, tuple[Json, int]] = {
    "cpu": ({"model": {"name": "tiny.en"}, "precision": "int8"}, 0),
    "a100-float16": ({"gpu": {"type": A100}, "precision": "float16"}, 0),
    "h100-two-gpus": ({"gpu": {"type": "NVIDIA-H100-80GB-HBM3", "count": 2}}, 0),
    "mig-slice": (
        {
            "gpu": {"type": A100, "resourceName": "nvidia.com/mig-1g.10gb"},
            "precision": "int8_float16",
        },
        0,
    ),
    "any-gpu-bfloat16-torch": ({"gpu": {}, "precision": "bfloat16", "engine": "torch"}, 0),
    "fallback-l4": (
        {
            "gpu": {"type": A100, "fallbacks": [{"type": "NVIDIA-L4"}, {"cpu": {}}]},
            "precision": "float16",
        },
        1,
    ),
    "fallback-cpu": (
        {
            "gpu": {"type": A100, "fallbacks": [{"type": "NVIDIA-L4"}, {"cpu": {}}]},
            "precision": "float16",
        },
        2,
    ),
    "pvc-cache": (
        {
            "model": {
                "name": "large-v3",
                "source": "pvc",
                "pvc": {"claimName": "models", "subPath": "whisper"},
            }
        },
        0,
    ),
    "download": (
        {
            "model": {
                "name": "distil-large-v3",
                "source": "download",
                "revision": "main",
                "download": {"hfTokenSecretRef": {"name": "hf", "key": "token"}},
            },
            "gpu": {"type": "NVIDIA-L4"},
        },
        0,
    ),
    "api-key-and-overrides": (
        {
            "gpu": {"type": A100},
            "runtime": {
                "apiKeySecretRef": {"name": "stt-key", "key": "token"},
                "resources": {
                    "requests": {"cpu": 4, "memory": "16Gi"},
                    "limits": {"memory": "24Gi"},
                },
                "env": [
                    {"name": "VOICEFLEET_WARMUP", "value": "false"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ],
            },
            "service": {
                "type": "LoadBalancer",
                "port": 8080,
                "annotations": {"example.com/lb": "internal"},
            },
            "pod": {
                "nodeSelector": {"topology.kubernetes.io/zone": "eu-west-1a"},
                "tolerations": [{"key": "dedicated", "value": "stt", "effect": "NoSchedule"}],
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {
                                        "matchLabels": {"app.kubernetes.io/instance": "whisper"}
                                    },
                                },
                            }
                        ]
                    }
                },
                "priorityClassName": "speech-high",
                "runtimeClassName": "nvidia",
                "serviceAccountName": "stt",
                "imagePullSecrets": ["registry"],
                "labels": {"team": "speech"},
                "annotations": {"example.com/owner": "speech"},
            },
        },
        0,
    ),
    "cpu-with-cpu-limit": (
        {"model": {"name": "base"}, "runtime": {"resources": {"limits": {"cpu": "3500m"}}}},
        0,
    ),
}


def deployment_of(children: list[Json]) -> Json:
    (deployment,) = [c for c in children if c["kind"] == "Deployment"]
    return deployment


def runtime_container(deployment: Json) -> Json:
    container: Json = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(container: Json) -> dict[str, Json]:
    return {e["name"]: e for e in container["env"]}


@pytest.fixture(params=list(SCENARIOS), scope="module")
def scenario(request: pytest.FixtureRequest) -> tuple[VoiceService, int, list[Json]]:
    spec, index = SCENARIOS[request.param]
    vs = make(spec)
    return vs, index, build_children(vs, servicemonitor_api=True, replicas=2, placement_index=index)


def test_every_child_is_valid_kubernetes(
    scenario: tuple[VoiceService, int, list[Json]], validate_k8s: Callable[[Json], None]
) -> None:
    _, _, children = scenario
    kinds = [child["kind"] for child in children]
    assert kinds[:4] == ["Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"]
    for child in children:
        if child["kind"] == "ServiceMonitor":
            jsonschema.validate(child, SERVICEMONITOR_SCHEMA)
        else:
            validate_k8s(child)


def test_every_child_is_owned_labelled_and_hashed(
    scenario: tuple[VoiceService, int, list[Json]],
) -> None:
    vs, _, children = scenario
    for child in children:
        metadata = child["metadata"]
        assert metadata["namespace"] == "speech"
        (owner,) = metadata["ownerReferences"]
        assert owner == {
            "apiVersion": "voicefleet.io/v1alpha1",
            "kind": "VoiceService",
            "name": "whisper",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert selector_labels(vs).items() <= metadata["labels"].items()
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "voicefleet-operator"
        assert metadata["annotations"][SPEC_HASH_ANNOTATION] == spec_hash(child)


def test_pod_security_is_restricted(scenario: tuple[VoiceService, int, list[Json]]) -> None:
    _, _, children = scenario
    pod = deployment_of(children)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]


def test_env_is_a_valid_runtime_configuration(
    scenario: tuple[VoiceService, int, list[Json]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime's own settings class accepts exactly what the operator sets."""
    _, _, children = scenario
    container = runtime_container(deployment_of(children))
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), "duplicate env names"
    settings_fields = {f"VOICEFLEET_{field.upper()}" for field in RuntimeSettings.model_fields}
    emitted = {name for name in names if name.startswith("VOICEFLEET_")}
    assert emitted <= settings_fields
    derived = emitted - {"VOICEFLEET_WARMUP", "VOICEFLEET_CPU_THREADS", DECODE_PROCESSES_ENV}
    assert derived <= set(cel.OPERATOR_ENV_NAMES), "runtime.env could override these"
    for variable in container["env"]:
        if variable["name"].startswith("VOICEFLEET_"):
            monkeypatch.setenv(variable["name"], variable["value"])
    settings = RuntimeSettings()
    env = env_of(container)
    assert settings.model == env["VOICEFLEET_MODEL"]["value"]
    assert settings.port == container["ports"][0]["containerPort"]
    assert (
        settings.shutdown_grace_seconds + PRE_STOP_SECONDS
        <= (deployment_of(children)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
    )


def test_probes_ports_and_prometheus(scenario: tuple[VoiceService, int, list[Json]]) -> None:
    vs, _, children = scenario
    deployment = deployment_of(children)
    template = deployment["spec"]["template"]
    container = runtime_container(deployment)
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": PRE_STOP_SECONDS}}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert selector_labels(vs).items() <= template["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == selector_labels(vs)
    assert deployment["spec"]["replicas"] == 2


@pytest.mark.parametrize("name", ["a100-float16", "h100-two-gpus", "mig-slice", "fallback-l4"])
def test_gpu_pods_request_gpus_on_the_right_nodes(name: str) -> None:
    spec, index = SCENARIOS[name]
    vs = make(spec)
    placement = placement_for(vs.spec, index)
    pod = build_deployment(vs, replicas=1, placement_index=index)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"][placement.resource_name] == str(placement.count)
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == placement.gpu_type
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    env = env_of(container)
    assert env["VOICEFLEET_DEVICE"]["value"] == "cuda"
    assert env["VOICEFLEET_PRECISION"]["value"] == vs.spec.precision


def test_mig_slice_asks_for_the_mig_resource_only() -> None:
    spec, _ = SCENARIOS["mig-slice"]
    limits = runtime_container(build_deployment(make(spec), replicas=1))["resources"]["limits"]
    gpus = {name: value for name, value in limits.items() if name != "memory"}
    assert gpus == {"nvidia.com/mig-1g.10gb": "1"}


@pytest.mark.parametrize("name", ["cpu", "fallback-cpu", "cpu-with-cpu-limit"])
def test_cpu_pods_have_no_gpu_anything(name: str) -> None:
    spec, index = SCENARIOS[name]
    vs = make(spec)
    pod = build_deployment(vs, replicas=1, placement_index=index)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert not any("gpu" in r for r in container.get("resources", {}).get("limits", {}))
    assert "nvidia.com/gpu.product" not in pod.get("nodeSelector", {})
    assert not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    env = env_of(container)
    assert env["VOICEFLEET_DEVICE"]["value"] == "cpu"
    assert env["VOICEFLEET_PRECISION"]["value"] == placement_for(vs.spec, index).precision
    assert env["VOICEFLEET_PRECISION"]["value"] not in cel.GPU_ONLY_PRECISIONS


def test_cpu_threads_follow_the_cpu_limit() -> None:
    spec, _ = SCENARIOS["cpu-with-cpu-limit"]
    env = env_of(runtime_container(build_deployment(make(spec), replicas=1)))
    assert env["VOICEFLEET_CPU_THREADS"]["value"] == "3"


def torch_on_gpus(count: int = 1, **runtime: Any) -> Json:
    return {
        "model": {"name": "large-v3"},
        "engine": "torch",
        "precision": "float16",
        "gpu": {"type": "NVIDIA-L4", "count": count},
        "runtime": runtime,
    }


def cpu_and_decoding(spec: Json, index: int = 0) -> tuple[Json, str | None]:
    """(the container's resources, its VOICEFLEET_DECODE_PROCESSES) as built for `spec`."""
    container = runtime_container(build_deployment(make(spec), replicas=1, placement_index=index))
    decoding = env_of(container).get(DECODE_PROCESSES_ENV)
    return container["resources"], decoding["value"] if decoding else None


def test_gpu_pods_request_a_core_for_the_server_and_one_per_decoding_process() -> None:
    resources, decoding = cpu_and_decoding(torch_on_gpus())
    assert (resources["requests"]["cpu"], decoding) == ("3", "2")
    assert "cpu" not in resources["limits"], "no CPU limit: idle cores stay usable"
    resources, decoding = cpu_and_decoding(torch_on_gpus(count=2))
    assert (resources["requests"]["cpu"], decoding) == ("5", "4")
    resources, decoding = cpu_and_decoding(torch_on_gpus(count=8))
    assert (resources["requests"]["cpu"], decoding) == ("17", "16")
    # faster-whisper decodes in the request's thread: a core for the server and that thread.
    spec, _ = SCENARIOS["a100-float16"]
    resources, decoding = cpu_and_decoding(spec)
    assert (resources["requests"]["cpu"], decoding) == ("1", None)


@pytest.mark.parametrize(
    ("cpu", "whole_cpus", "processes"),
    [
        ({"requests": {"cpu": "6"}}, 6, 5),
        ({"requests": {"cpu": "500m"}}, 1, 1),
        ({"requests": {"cpu": "4"}, "limits": {"cpu": "12"}}, 12, 11),
        ({"requests": {"cpu": "4"}, "limits": {"cpu": "24"}}, 24, 16),
    ],
)
def test_the_decoding_processes_follow_the_cpus_the_spec_gives(
    cpu: Json, whole_cpus: int, processes: int
) -> None:
    resources, decoding = cpu_and_decoding(torch_on_gpus(resources=cpu))
    assert decoding == str(processes)
    assert resources["requests"]["cpu"] == cpu["requests"]["cpu"], "the spec's own, unchanged"
    # As many as the runtime's own `auto` starts where it may use those CPUs.
    assert decode_processes_for(whole_cpus) == processes


def test_a_decoding_setting_of_the_spec_is_kept_and_sizes_the_request() -> None:
    spec = torch_on_gpus(env=[{"name": DECODE_PROCESSES_ENV, "value": "6"}])
    resources, decoding = cpu_and_decoding(spec)
    assert (resources["requests"]["cpu"], decoding) == ("7", "6")
    names = [e["name"] for e in runtime_container(build_deployment(make(spec), replicas=1))["env"]]
    assert names.count(DECODE_PROCESSES_ENV) == 1


def test_cpu_pods_and_cpu_fallbacks_get_no_default_cpu_request() -> None:
    for name in ("cpu", "fallback-cpu"):
        spec, index = SCENARIOS[name]
        resources, decoding = cpu_and_decoding(spec, index)
        assert "cpu" not in resources.get("requests", {}), name
        assert decoding is None, name
    # The torch engine's CPU fallback does not batch: no decoding processes there either.
    fallback = {**torch_on_gpus(), "gpu": {"type": "NVIDIA-L4", "fallbacks": [{"cpu": {}}]}}
    fallback["precision"] = "float32"
    resources, decoding = cpu_and_decoding(fallback, 1)
    assert ("cpu" in resources.get("requests", {}), decoding) == (False, None)


def test_the_memory_default_counts_the_decoding_processes_the_pod_runs() -> None:
    def mebibytes(spec: Json) -> int:
        resources, _ = cpu_and_decoding(spec)
        return int(resources["limits"]["memory"].removesuffix("Mi"))

    two = mebibytes(torch_on_gpus())
    eight = mebibytes(torch_on_gpus(resources={"requests": {"cpu": "9"}}))
    # Each process: 80 MiB and the longest allowed audio twice (1800 s of float32 at 16 kHz).
    per_process = 80 + 2 * 1800 * 16_000 * 4 / 2**20
    assert eight - two == pytest.approx(6 * per_process * 1.25, abs=64)


def test_api_processes_of_the_spec_add_a_core_each_and_their_memory() -> None:
    def resources_with(env: list[Json]) -> tuple[str, int, str | None]:
        resources, decoding = cpu_and_decoding(torch_on_gpus(env=env))
        return (
            resources["requests"]["cpu"],
            int(resources["limits"]["memory"].removesuffix("Mi")),
            decoding,
        )

    one_cpu, one_memory, one_decoding = resources_with([])
    four = [{"name": API_PROCESSES_ENV, "value": "4"}]
    four_cpu, four_memory, four_decoding = resources_with(four)
    # The engine process's core, one per API process, the decoding processes as before.
    assert (one_cpu, four_cpu, four_decoding) == ("3", "7", one_decoding)
    # Each API process admits up to the limits: four times the requests' and uploads' share.
    assert four_memory > 3 * one_memory
    assert resources_with([{"name": API_PROCESSES_ENV, "value": "1"}])[:2] == (
        one_cpu,
        one_memory,
    )


def test_overrides_reach_the_pod_without_breaking_the_selector() -> None:
    spec, _ = SCENARIOS["api-key-and-overrides"]
    vs = make(spec)
    pod_template = build_deployment(vs, replicas=1)["spec"]["template"]
    pod = pod_template["spec"]
    assert pod["nodeSelector"] == {
        "topology.kubernetes.io/zone": "eu-west-1a",
        "nvidia.com/gpu.product": A100,
    }
    assert {"key": "dedicated", "operator": "Equal", "value": "stt", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["affinity"] == spec["pod"]["affinity"]
    assert pod["priorityClassName"] == "speech-high"
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["serviceAccountName"] == "stt"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod_template["metadata"]["labels"]["team"] == "speech"
    assert pod_template["metadata"]["annotations"]["example.com/owner"] == "speech"
    env = env_of(pod["containers"][0])
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["VOICEFLEET_WARMUP"]["value"] == "false"


def test_api_key_is_a_mounted_file_never_an_env_value() -> None:
    spec, _ = SCENARIOS["api-key-and-overrides"]
    pod = build_deployment(make(spec), replicas=1)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    assert "VOICEFLEET_API_KEY" not in env
    key_file = env["VOICEFLEET_API_KEY_FILE"]["value"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "stt-key"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert key_file == f"{mount['mountPath']}/token"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]


def test_model_sources_mount_the_cache_where_the_runtime_looks() -> None:
    image_pod = build_deployment(make({}), replicas=1)["spec"]["template"]["spec"]
    assert "VOICEFLEET_MODEL_DIR" not in env_of(image_pod["containers"][0])

    pvc_pod = build_deployment(make(SCENARIOS["pvc-cache"][0]), replicas=1)["spec"]["template"][
        "spec"
    ]
    (volume,) = [v for v in pvc_pod["volumes"] if v["name"] == "models"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    container = pvc_pod["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert mount["subPath"] == "whisper"
    assert env_of(container)["VOICEFLEET_MODEL_DIR"]["value"] == mount["mountPath"]


def test_download_source_fetches_into_the_cache_before_the_runtime_starts() -> None:
    pod = build_deployment(make(SCENARIOS["download"][0]), replicas=1)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    model_dir = env_of(pod["containers"][0])["VOICEFLEET_MODEL_DIR"]["value"]
    assert init["command"][:3] == ["hf", "download", "Systran/faster-distil-whisper-large-v3"]
    assert init["command"][3:] == [
        "--local-dir",
        f"{model_dir}/distil-large-v3",
        "--revision",
        "main",
    ]
    token = env_of(init)["HF_TOKEN"]
    assert token == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
    }
    (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert volume["emptyDir"] == {"sizeLimit": "10Gi"}
    runtime_mount = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models"]
    assert runtime_mount[0]["readOnly"] is True


def test_startup_budget_grows_with_model_size_and_on_cpu() -> None:
    def budget(name: str, gpu: bool) -> int:
        vs = make({"model": {"name": name}, **({"gpu": {}} if gpu else {})})
        return startup_timeout_seconds(vs.spec, placement_for(vs.spec, 0))

    assert budget("tiny.en", True) < budget("medium", True) < budget("large-v3", True)
    assert budget("large-v3", True) < budget("large-v3", False)
    vs = make({"gpu": {}})
    probe = runtime_container(build_deployment(vs, replicas=1))["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= budget("large-v3", True)


def test_grace_period_drains_the_longest_allowed_request() -> None:
    for gpu in (True, False):
        vs = make({"runtime": {"maxAudioSeconds": 3600}, **({"gpu": {}} if gpu else {})})
        placement = placement_for(vs.spec, 0)
        pod = build_deployment(vs, replicas=1)["spec"]["template"]["spec"]
        drain = drain_seconds(vs.spec, placement)
        assert drain >= 3600 * (0.25 if gpu else 1.0)
        assert pod["terminationGracePeriodSeconds"] >= PRE_STOP_SECONDS + drain


def test_default_memory_follows_the_runtime_budget_and_never_overrides_the_user() -> None:
    def memory(spec: Json) -> Json:
        resources: Json = runtime_container(build_deployment(make(spec), replicas=1))["resources"]
        return resources

    def mebibytes(spec: Json) -> int:
        quantity = memory(spec)["limits"]["memory"]
        assert memory(spec)["requests"]["memory"] == quantity
        return int(quantity.removesuffix("Mi"))

    tiny_cpu = mebibytes({"model": {"name": "tiny.en"}})
    assert 512 <= tiny_cpu <= 2048
    assert tiny_cpu < mebibytes({"model": {"name": "large-v3"}})
    assert tiny_cpu < mebibytes({"model": {"name": "tiny.en"}, "runtime": {"concurrency": 4}})
    assert tiny_cpu < mebibytes({"model": {"name": "tiny.en"}, "engine": "torch"})
    assert (
        mebibytes({"model": {"name": "tiny.en"}, "runtime": {"maxAudioSeconds": 600}}) <= tiny_cpu
    )
    # A memory request or limit of the user's own: nothing added, nothing changed.
    own = {"model": {"name": "tiny.en"}, "runtime": {"resources": {"limits": {"memory": "3Gi"}}}}
    assert memory(own) == {"limits": {"memory": "3Gi"}}


def test_replicas_none_leaves_the_count_to_the_live_object() -> None:
    assert "replicas" not in build_deployment(make({}), replicas=None)["spec"]
    assert build_deployment(make({}), replicas=0)["spec"]["replicas"] == 0


def test_servicemonitor_only_when_the_api_exists() -> None:
    kinds = [c["kind"] for c in build_children(make({}), servicemonitor_api=False, replicas=1)]
    assert "ServiceMonitor" not in kinds
    assert kinds[:3] == ["Deployment", "Service", "PodDisruptionBudget"]


def test_service_and_pdb() -> None:
    spec, _ = SCENARIOS["api-key-and-overrides"]
    children = build_children(make(spec), servicemonitor_api=False, replicas=1)
    service = next(c for c in children if c["kind"] == "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["metadata"]["annotations"]["example.com/lb"] == "internal"
    pdb = next(c for c in children if c["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_missing_uid_is_a_clear_error() -> None:
    with pytest.raises(MissingUidError, match=r"no metadata\.uid"):
        build_children(make({}, uid=None), servicemonitor_api=False, replicas=1)


def test_hash_changes_exactly_with_the_child() -> None:
    before = build_children(make({"gpu": {}}), servicemonitor_api=False, replicas=None)
    again = build_children(make({"gpu": {}}), servicemonitor_api=False, replicas=None)
    after = build_children(
        make({"gpu": {}, "precision": "int8"}), servicemonitor_api=False, replicas=None
    )

    def hashes(children: list[Json]) -> dict[str, str]:
        return {c["kind"]: c["metadata"]["annotations"][SPEC_HASH_ANNOTATION] for c in children}

    assert hashes(before) == hashes(again)
    assert hashes(before)["Deployment"] != hashes(after)["Deployment"]
    assert hashes(before)["Service"] == hashes(after)["Service"]


def test_children_accept_a_raw_body() -> None:
    body = {"metadata": {"name": "raw", "uid": UID}, "spec": {"model": {"name": "base"}}}
    children = build_children(body, servicemonitor_api=False, replicas=1)
    assert children[0]["metadata"]["name"] == "raw"


def test_placement_candidates_and_fallback_choice() -> None:
    spec, _ = SCENARIOS["fallback-cpu"]
    vs = make(spec)
    labels = [p.label for p in placement_candidates(vs.spec)]
    assert labels == [A100, "NVIDIA-L4", "cpu"]
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    wait = vs.spec.gpu.fallback_after_seconds if vs.spec.gpu else 0

    def choose(current: int, since: datetime | None) -> int:
        return choose_fallback(vs.spec, current=current, unschedulable_since=since, now=now)

    assert choose(0, None) == 0
    assert choose(0, now - timedelta(seconds=wait - 1)) == 0
    assert choose(0, now - timedelta(seconds=wait)) == 1
    assert choose(1, now - timedelta(seconds=wait)) == 2
    assert choose(2, now - timedelta(hours=5)) == 2
    assert choose(7, None) == 2
    cpu_service = make({})
    assert (
        choose_fallback(
            cpu_service.spec, current=0, unschedulable_since=now - timedelta(days=1), now=now
        )
        == 0
    )
