"""A property over generated VoiceServices: whatever the models accept, the builders build.

Specs are drawn field by field from values people write, valid and not; the models refuse the
combinations they must (most draws pass). Every accepted spec must then build its children for
every placement candidate, without an exception and without anything the API server would
refuse (build_children checks that), and give the builtin autoscaler a policy it can apply.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from voicefleet_operator.autoscaler.from_spec import policy_from_spec
from voicefleet_operator.builders.children import build_children
from voicefleet_operator.builders.deployment import initial_replicas
from voicefleet_operator.builders.metrics_queries import fleet_queries
from voicefleet_operator.builders.placement import placement_candidates
from voicefleet_operator.crd.models import InvalidVoiceServiceError, parse_voiceservice

Json = dict[str, Any]
UID = "5d0c9a3e-1f2b-4c5d-8e9f-a0b1c2d3e4f5"

PRECISIONS = [
    "auto",
    "float32",
    "float16",
    "bfloat16",
    "int8",
    "int8_float16",
    "int8_bfloat16",
    "int8_float32",
]
QUANTITIES = ["500m", "1", 2, "2500m", "4Gi", "8Gi", "16Gi", "1e3", "512Mi"]


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Json]:
    return st.fixed_dictionaries({}, optional=fields)


models = st.one_of(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["tiny.en", "large-v3", "distil-large-v3", "/opt/models/x_1"])},
        optional={"revision": st.sampled_from(["main", "refs/pr/3", "v1.0.2", "c0ffee42"])},
    ),
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["base", "small.en", "large-v3-turbo"]),
            "source": st.just("pvc"),
            "pvc": optional(subPath=st.sampled_from(["a/b", ".cache", "whisper/v3"])).map(
                lambda pvc: {"claimName": "models", **pvc}
            ),
        },
        optional={"revision": st.sampled_from(["main", "refs/pr/3"])},
    ),
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["base", "distil-small.en", "x" * 81]),
            "source": st.just("download"),
        },
        optional={
            "revision": st.sampled_from(["main", "refs/pr/12"]),
            "download": optional(
                repository=st.sampled_from(["Systran/faster-whisper-base", "me/my_model-v2"]),
                cacheSize=st.sampled_from(["4Gi", "20Gi"]),
                hfTokenSecretRef=st.just({"name": "hf", "key": "token"}),
            ),
        },
    ),
)
fallbacks = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["NVIDIA-L4", "Tesla-T4"])},
            optional={"resourceName": st.just("nvidia.com/gpu")},
        ),
        st.fixed_dictionaries({"cpu": optional(precision=st.sampled_from(PRECISIONS))}),
    ),
    max_size=3,
)
gpus = st.one_of(
    st.none(),
    optional(
        type=st.sampled_from(["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]),
        count=st.integers(1, 4),
        resourceName=st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"]),
        fallbacks=fallbacks,
        fallbackAfterSeconds=st.integers(30, 600),
    ),
)
crons = st.sampled_from(
    ["0 8 * * 1-5", "30 22 * * 5,6", "0 18 * * 1-5", "0 2 * * 5,6", "0 0 * * *"]
)
windows = st.fixed_dictionaries(
    {"start": crons, "end": crons, "minReplicas": st.integers(0, 6)},
    optional={"timezone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"])},
)
prometheus = optional(
    queueDepthQuery=st.sampled_from(["sum(q)", 'max by (pod) (q{a="b"})\n']),
    gpuUtilizationQuery=st.just("avg(DCGM_FI_DEV_GPU_UTIL) / 100"),
).map(lambda queries: {"url": "http://prometheus.monitoring:9090", **queries})
autoscaling = optional(
    mode=st.sampled_from(["builtin", "keda", "hpa", "off"]),
    targetQueueDepthPerReplica=st.floats(0.5, 20),
    targetGpuUtilization=st.integers(1, 100),
    burstWindowSeconds=st.integers(1, 60),
    stableWindowSeconds=st.integers(1, 300),
    metrics=optional(source=st.sampled_from(["pods", "prometheus"]), prometheus=prometheus),
    schedule=st.lists(windows, max_size=2),
)
replicas = st.one_of(
    st.fixed_dictionaries({"min": st.integers(0, 3), "max": st.integers(1, 8)}),
    st.fixed_dictionaries({"fixed": st.integers(0, 5)}),
)
ENV: list[Json] = [
    {"name": "VOICEFLEET_BATCH_SIZE", "value": "4"},
    {"name": "VOICEFLEET_WARMUP", "value": "maybe"},
    {"name": "EXTRA", "value": "1"},
    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
]
environment = st.lists(
    st.sampled_from(ENV), max_size=3, unique_by=lambda variable: str(variable["name"])
)
runtimes = optional(
    resources=optional(
        requests=st.dictionaries(st.sampled_from(["cpu", "memory"]), st.sampled_from(QUANTITIES)),
        limits=st.dictionaries(st.sampled_from(["cpu", "memory"]), st.sampled_from(QUANTITIES)),
    ),
    env=environment,
    vad=st.sampled_from(["auto", "on", "off"]),
    port=st.integers(1024, 65535),
    maxAudioSeconds=st.integers(1, 14400),
    apiKeySecretRef=st.just({"name": "key", "key": "token"}),
    image=st.just("registry.example/voicefleet:1.2.3"),
)
pods = optional(
    nodeSelector=st.dictionaries(st.sampled_from(["zone", "example.com/pool"]), st.just("a")),
    tolerations=st.lists(
        st.sampled_from(
            [
                {"operator": "Exists"},
                {"key": "dedicated", "value": "stt", "effect": "NoSchedule"},
                {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
            ]
        ),
        max_size=2,
    ),
    labels=st.dictionaries(st.sampled_from(["team", "example.com/tier"]), st.just("speech")),
    annotations=st.dictionaries(st.sampled_from(["note", "example.com/x"]), st.text(max_size=20)),
)
specs = st.fixed_dictionaries(
    {"model": models},
    optional={
        "engine": st.sampled_from(["faster-whisper", "torch"]),
        "precision": st.sampled_from(PRECISIONS),
        "gpu": gpus,
        "replicas": replicas,
        "autoscaling": autoscaling,
        "runtime": runtimes,
        "service": optional(
            type=st.sampled_from(["ClusterIP", "LoadBalancer"]), port=st.integers(1, 65535)
        ),
        "pod": pods,
    },
)
bodies = st.builds(
    lambda name, spec: {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": name, "namespace": "speech", "uid": UID, "generation": 1},
        "spec": {k: v for k, v in spec.items() if v is not None},
    },
    st.sampled_from(["whisper", "w" * 63, "stt-1"]),
    specs,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(body=bodies)
def test_any_spec_the_models_accept_builds_valid_children(body: Json) -> None:
    try:
        vs = parse_voiceservice(body)
    except InvalidVoiceServiceError:
        assume(False)
        return
    for index in range(len(placement_candidates(vs.spec))):
        children = build_children(
            vs,
            servicemonitor_api=True,
            replicas=initial_replicas(vs.spec),
            placement_index=index,
        )
        assert {c["kind"] for c in children} >= {"Deployment", "Service", "PodDisruptionBudget"}
        assert (
            list(yaml.safe_load_all(yaml.safe_dump_all(children))) == children
        )  # as render prints
    policy = policy_from_spec(vs)
    for window in policy.schedule:
        window.applies_at(0.0)
    fleet_queries(vs)
