"""A table of VoiceServices judged three ways that must agree: the generated OpenAPI schema
(jsonschema, after API-server defaulting), the CEL rules of the CRD (evaluated with cel-python),
and the pydantic models the operator and `voicefleet render` use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from voicefleet_operator.crd import cel
from voicefleet_operator.crd.models import InvalidVoiceServiceError, parse_voiceservice

Json = dict[str, Any]

VALID = "valid"
SCHEMA = "schema"
"""Rejected by the OpenAPI schema (types, enums, bounds, patterns, unknown fields)."""
MODEL_ONLY = "model-only"
"""Accepted by the API server, refused by the pydantic models (the operator reports Degraded):
checks whose CEL form would blow the API server's cost budget."""

GPU = {"type": "NVIDIA-A100-SXM4-80GB"}


def vs(spec: Json, name: str = "whisper") -> Json:
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": name, "namespace": "speech"},
        "spec": {"model": {"name": "tiny.en"}, **spec},
    }


CASES: list[tuple[str, Json, str | cel.CelRule]] = [
    ("cpu-minimal", vs({}), VALID),
    ("gpu-a100-float16", vs({"gpu": GPU, "precision": "float16"}), VALID),
    (
        "mig-int8-float16",
        vs({"gpu": {"resourceName": "nvidia.com/mig-1g.10gb"}, "precision": "int8_float16"}),
        VALID,
    ),
    (
        "fallbacks-gpu-then-cpu",
        vs(
            {
                "gpu": {
                    **GPU,
                    "fallbacks": [{"type": "NVIDIA-L4"}, {"cpu": {"precision": "int8"}}],
                },
                "precision": "float16",
            }
        ),
        VALID,
    ),
    (
        "fixed-with-autoscaling-off",
        vs({"replicas": {"fixed": 3}, "autoscaling": {"mode": "off"}}),
        VALID,
    ),
    (
        "pvc-source",
        vs({"model": {"name": "large-v3", "source": "pvc", "pvc": {"claimName": "models"}}}),
        VALID,
    ),
    (
        "download-source",
        vs(
            {
                "model": {
                    "name": "distil-large-v3",
                    "source": "download",
                    "revision": "c0ffee",
                    "download": {"cacheSize": "8Gi"},
                }
            }
        ),
        VALID,
    ),
    (
        "prometheus-metrics",
        vs(
            {
                "autoscaling": {
                    "metrics": {"source": "prometheus", "prometheus": {"url": "http://prom:9090"}}
                }
            }
        ),
        VALID,
    ),
    (
        "schedule-window",
        vs(
            {
                "replicas": {"min": 1, "max": 6},
                "autoscaling": {
                    "schedule": [{"start": "0 8 * * 1-5", "end": "0 18 * * 1-5", "minReplicas": 6}]
                },
            }
        ),
        VALID,
    ),
    (
        "resources-and-extra-env",
        vs(
            {
                "runtime": {
                    "resources": {
                        "requests": {"cpu": 2, "memory": "8Gi"},
                        "limits": {"cpu": "2500m"},
                    },
                    "env": [{"name": "VOICEFLEET_CPU_THREADS", "value": "2"}],
                }
            }
        ),
        VALID,
    ),
    (
        "pod-overrides",
        vs(
            {
                "pod": {
                    "nodeSelector": {"topology.kubernetes.io/zone": "eu-west-1a"},
                    "tolerations": [
                        {
                            "key": "dedicated",
                            "operator": "Equal",
                            "value": "stt",
                            "effect": "NoSchedule",
                        }
                    ],
                    "affinity": {"nodeAffinity": {}},
                    "labels": {"team": "speech"},
                    "annotations": {"example.com/owner": "speech"},
                    "priorityClassName": "high",
                }
            }
        ),
        VALID,
    ),
    ("torch-bfloat16", vs({"engine": "torch", "gpu": GPU, "precision": "bfloat16"}), VALID),
    ("keda-mode", vs({"autoscaling": {"mode": "keda", "targetGpuUtilization": 70}}), VALID),
    ("min-equals-max", vs({"replicas": {"min": 2, "max": 2}}), VALID),
    ("min-above-max", vs({"replicas": {"min": 5, "max": 2}}), cel.MIN_NOT_ABOVE_MAX),
    ("fixed-while-autoscaling", vs({"replicas": {"fixed": 2}}), cel.FIXED_EXCLUDES_AUTOSCALING),
    ("float16-without-gpu", vs({"precision": "float16"}), cel.GPU_PRECISION_NEEDS_GPU),
    ("int8-bfloat16-without-gpu", vs({"precision": "int8_bfloat16"}), cel.GPU_PRECISION_NEEDS_GPU),
    (
        "cpu-fallback-float16",
        vs({"gpu": {**GPU, "fallbacks": [{"cpu": {"precision": "float16"}}]}}),
        cel.CPU_FALLBACK_PRECISION,
    ),
    (
        "cpu-fallback-not-last",
        vs({"gpu": {**GPU, "fallbacks": [{"cpu": {}}, {"type": "NVIDIA-L4"}]}}),
        cel.CPU_FALLBACK_LAST,
    ),
    (
        "fallback-both-gpu-and-cpu",
        vs({"gpu": {**GPU, "fallbacks": [{"type": "NVIDIA-L4", "cpu": {}}]}}),
        cel.FALLBACK_GPU_XOR_CPU,
    ),
    ("fallback-neither", vs({"gpu": {**GPU, "fallbacks": [{}]}}), cel.FALLBACK_GPU_XOR_CPU),
    (
        "pvc-source-without-pvc",
        vs({"model": {"name": "base", "source": "pvc"}}),
        cel.PVC_IFF_SOURCE_PVC,
    ),
    (
        "pvc-with-image-source",
        vs({"model": {"name": "base", "pvc": {"claimName": "models"}}}),
        cel.PVC_IFF_SOURCE_PVC,
    ),
    (
        "download-settings-with-image-source",
        vs({"model": {"name": "base", "download": {"cacheSize": "4Gi"}}}),
        cel.DOWNLOAD_ONLY_WITH_SOURCE_DOWNLOAD,
    ),
    (
        "prometheus-source-without-url",
        vs({"autoscaling": {"metrics": {"source": "prometheus"}}}),
        cel.PROMETHEUS_SOURCE_NEEDS_SETTINGS,
    ),
    (
        "env-overrides-precision",
        vs({"runtime": {"env": [{"name": "VOICEFLEET_PRECISION", "value": "float32"}]}}),
        cel.ENV_NOT_OPERATOR_OWNED,
    ),
    (
        "env-sets-api-key",
        vs({"runtime": {"env": [{"name": "VOICEFLEET_API_KEY", "value": "hunter2"}]}}),
        cel.ENV_NOT_OPERATOR_OWNED,
    ),
    (
        "label-overrides-selector",
        vs({"pod": {"labels": {"app.kubernetes.io/instance": "other"}}}),
        cel.LABELS_NOT_RESERVED,
    ),
    (
        "label-in-voicefleet-prefix",
        vs({"pod": {"labels": {"voicefleet.io/x": "y"}}}),
        cel.LABELS_NOT_RESERVED,
    ),
    (
        "schedule-above-max",
        vs(
            {
                "replicas": {"max": 3},
                "autoscaling": {
                    "schedule": [{"start": "0 8 * * *", "end": "0 9 * * *", "minReplicas": 5}]
                },
            }
        ),
        cel.SCHEDULE_WITHIN_MAX,
    ),
    ("name-too-long", vs({}, name="w" * 64), cel.NAME_FITS_A_LABEL),
    ("gpu-count-zero", vs({"gpu": {"count": 0}}), SCHEMA),
    ("unknown-precision", vs({"precision": "fp8"}), SCHEMA),
    ("bad-quantity", vs({"runtime": {"resources": {"limits": {"memory": "16GB"}}}}), SCHEMA),
    (
        "bad-claim-name",
        vs({"model": {"name": "base", "source": "pvc", "pvc": {"claimName": "Models_Cache"}}}),
        SCHEMA,
    ),
    ("resource-name-without-domain", vs({"gpu": {"resourceName": "gpu"}}), SCHEMA),
    ("gpu-utilization-above-100", vs({"autoscaling": {"targetGpuUtilization": 150}}), SCHEMA),
    (
        "fractional-queue-target-zero",
        vs({"autoscaling": {"targetQueueDepthPerReplica": 0}}),
        SCHEMA,
    ),
    ("unknown-field", vs({"replica": {"min": 1}}), SCHEMA),
    (
        "bad-cron",
        vs(
            {
                "autoscaling": {
                    "schedule": [{"start": "daily", "end": "0 9 * * *", "minReplicas": 1}]
                }
            }
        ),
        SCHEMA,
    ),
    ("missing-model", {**vs({}), "spec": {}}, SCHEMA),
    ("node-selector-bad-key", vs({"pod": {"nodeSelector": {"bad key!": "x"}}}), MODEL_ONLY),
    ("name-not-a-dns-label", vs({}, name="1whisper"), MODEL_ONLY),
]


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
    assert len(CASES) >= 20
    covered = {expected for _, _, expected in CASES if isinstance(expected, cel.CelRule)}
    assert covered == set(cel.ALL_RULES)


@pytest.mark.parametrize(
    ("body", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_schema_cel_and_pydantic_agree(
    body: Json,
    expected: str | cel.CelRule,
    openapi_schema: Json,
    defaulted: Callable[[Json], Json],
    cel_checker: Any,
) -> None:
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

    if expected == SCHEMA:
        assert schema_errors, "the OpenAPI schema accepted it"
        assert model_error is not None, "the pydantic model accepted it"
        return

    assert schema_errors == []
    broken = cel_checker.broken_messages(stored)
    if expected == VALID:
        assert broken == set()
        assert model_error is None
    elif expected == MODEL_ONLY:
        assert broken == set()
        assert model_error is not None
    else:
        assert isinstance(expected, cel.CelRule)
        assert broken == {expected.message}
        assert model_error is not None
        assert expected.message in model_error


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
