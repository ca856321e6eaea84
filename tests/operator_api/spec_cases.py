"""VoiceServices as users write them, each with the layer that must refuse it: plain data.

Importable on its own (no fixtures), so the same table runs against the emulated API server
(tests/operator) and, where one is available, a real kube-apiserver with the generated CRD:
- SCHEMA: the CRD's OpenAPI schema refuses it at admission (types, enums, bounds, patterns);
- CEL: one of the CRD's `x-kubernetes-validations` rules refuses it at admission; `expect` is
  the rule, whose message the API server returns;
- OPERATOR: the API server stores it (CEL cannot afford or express the check); the operator
  reports Degraded with reason InvalidSpec and `voicefleet render` refuses it, both with a
  message containing `expect`.
The pydantic models refuse every invalid case, whatever its layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from voicefleet_operator.crd import cel

Json = dict[str, Any]
Layer = Literal["schema", "cel", "operator"]
SCHEMA: Layer = "schema"
CEL: Layer = "cel"
OPERATOR: Layer = "operator"

A100 = "NVIDIA-A100-SXM4-80GB"
GPU = {"type": A100}
PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
PROMETHEUS = {"source": "prometheus", "prometheus": {"url": PROMETHEUS_URL}}


def voiceservice(spec: Json, name: str = "whisper", namespace: str = "speech") -> Json:
    """A VoiceService body with a model unless `spec` names one."""
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": "tiny.en"}, **spec},
    }


def schedule(start: str, end: str, **extra: Any) -> Json:
    return {"schedule": [{"start": start, "end": end, "minReplicas": 2, **extra}]}


@dataclass(frozen=True)
class InvalidCase:
    id: str
    body: Json
    layer: Layer
    expect: str | cel.CelRule
    """For CEL, the rule; otherwise a fragment of the message the refusing layer gives."""

    @property
    def message(self) -> str:
        return self.expect.message if isinstance(self.expect, cel.CelRule) else self.expect


@dataclass(frozen=True)
class ValidCase:
    id: str
    body: Json
    placement_index: int = 0


def _invalid(
    id: str, spec: Json, layer: Layer, expect: str | cel.CelRule, **kw: Any
) -> InvalidCase:
    return InvalidCase(id, voiceservice(spec, **kw), layer, expect)


INVALID: list[InvalidCase] = [
    # --- the OpenAPI schema: types, enums, bounds, patterns, unknown fields ------------------
    _invalid("missing-model", {"model": None}, SCHEMA, "model"),
    InvalidCase(
        "neither-stt-nor-tts",
        {**voiceservice({}), "spec": {"replicas": {"max": 2}}},
        CEL,
        cel.SERVES_A_DIRECTION,
    ),
    _invalid("tts-unknown-voice", {"tts": {"voices": ["af_bob"]}}, SCHEMA, "af_bob"),
    _invalid("tts-unknown-model", {"tts": {"model": "piper"}}, SCHEMA, "model"),
    _invalid("tts-unknown-format", {"tts": {"defaultFormat": "ogg"}}, SCHEMA, "defaultFormat"),
    _invalid("tts-zero-threads", {"tts": {"threads": 0}}, SCHEMA, "threads"),
    _invalid("unknown-field", {"replica": {"min": 1}}, SCHEMA, "replica"),
    _invalid("unknown-precision", {"precision": "fp8"}, SCHEMA, "precision"),
    _invalid("unknown-engine", {"engine": "vllm"}, SCHEMA, "engine"),
    _invalid("gpu-count-zero", {"gpu": {"count": 0}}, SCHEMA, "count"),
    _invalid("replicas-max-zero", {"replicas": {"min": 1, "max": 0}}, SCHEMA, "max"),
    _invalid(
        "bad-quantity",
        {"runtime": {"resources": {"limits": {"memory": "16GB"}}}},
        SCHEMA,
        "'16GB' is not a Kubernetes quantity",
    ),
    _invalid(
        "claim-name-not-dns",
        {"model": {"name": "base", "source": "pvc", "pvc": {"claimName": "Models_Cache"}}},
        SCHEMA,
        "claimName",
    ),
    _invalid(
        "resource-name-without-domain", {"gpu": {"resourceName": "gpu"}}, SCHEMA, "resourceName"
    ),
    _invalid("gpu-type-with-space", {"gpu": {"type": "NVIDIA A100"}}, SCHEMA, "type"),
    _invalid(
        "gpu-utilization-above-100",
        {"autoscaling": {"targetGpuUtilization": 150}},
        SCHEMA,
        "targetGpuUtilization",
    ),
    _invalid(
        "queue-target-zero",
        {"autoscaling": {"targetQueueDepthPerReplica": 0}},
        SCHEMA,
        "targetQueueDepthPerReplica",
    ),
    _invalid("tolerance-above-one", {"autoscaling": {"tolerance": 1.5}}, SCHEMA, "tolerance"),
    _invalid("runtime-port-privileged", {"runtime": {"port": 80}}, SCHEMA, "port"),
    _invalid("image-with-space", {"runtime": {"image": "registry/voice fleet:1"}}, SCHEMA, "image"),
    _invalid(
        "env-name-starts-with-digit",
        {"runtime": {"env": [{"name": "1X", "value": "1"}]}},
        SCHEMA,
        "name",
    ),
    # schedules: only the daily cron form the autoscaler applies
    _invalid("cron-word", {"autoscaling": schedule("daily", "0 9 * * *")}, SCHEMA, "start"),
    _invalid(
        "cron-day-of-month", {"autoscaling": schedule("0 8 1 * *", "0 18 1 * *")}, SCHEMA, "start"
    ),
    _invalid("cron-month", {"autoscaling": schedule("0 8 * 6 *", "0 18 * 6 *")}, SCHEMA, "start"),
    _invalid("cron-step", {"autoscaling": schedule("*/5 8 * * *", "0 18 * * *")}, SCHEMA, "start"),
    _invalid(
        "cron-hour-25", {"autoscaling": schedule("0 25 * * *", "0 18 * * *")}, SCHEMA, "start"
    ),
    _invalid(
        "cron-six-fields", {"autoscaling": schedule("0 0 8 * * *", "0 0 18 * * *")}, SCHEMA, "start"
    ),
    # free-form strings that reach paths, commands and labels
    _invalid("model-name-with-space", {"model": {"name": "tiny en"}}, SCHEMA, "name"),
    _invalid("model-name-dot-dot", {"model": {"name": "../etc"}}, SCHEMA, "name"),
    _invalid("model-relative-path", {"model": {"name": "models/tiny"}}, SCHEMA, "name"),
    _invalid("model-path-with-dot-dot", {"model": {"name": "/models/../etc"}}, SCHEMA, "name"),
    _invalid("model-name-double-dot", {"model": {"name": "tiny..en"}}, SCHEMA, "name"),
    _invalid(
        "revision-with-dot-dot",
        {"model": {"name": "base", "source": "download", "revision": "refs/../../x"}},
        SCHEMA,
        "revision",
    ),
    _invalid(
        "revision-leading-slash",
        {"model": {"name": "base", "revision": "/main"}},
        SCHEMA,
        "revision",
    ),
    _invalid(
        "revision-with-space",
        {"model": {"name": "base", "revision": "v1 --force"}},
        SCHEMA,
        "revision",
    ),
    _invalid(
        "repository-without-owner",
        {
            "model": {
                "name": "base",
                "source": "download",
                "download": {"repository": "faster-whisper-base"},
            }
        },
        SCHEMA,
        "repository",
    ),
    _invalid(
        "repository-double-dash",
        {
            "model": {
                "name": "base",
                "source": "download",
                "download": {"repository": "Systran/faster--whisper"},
            }
        },
        SCHEMA,
        "repository",
    ),
    _invalid(
        "repository-option-injection",
        {
            "model": {
                "name": "base",
                "source": "download",
                "download": {"repository": "--local-dir=/x"},
            }
        },
        SCHEMA,
        "repository",
    ),
    _invalid(
        "subpath-absolute",
        {
            "model": {
                "name": "base",
                "source": "pvc",
                "pvc": {"claimName": "models", "subPath": "/models"},
            }
        },
        SCHEMA,
        "subPath",
    ),
    _invalid(
        "subpath-dot-dot",
        {
            "model": {
                "name": "base",
                "source": "pvc",
                "pvc": {"claimName": "models", "subPath": "a/../../b"},
            }
        },
        SCHEMA,
        "subPath",
    ),
    _invalid(
        "query-empty",
        {
            "autoscaling": {
                "metrics": {
                    "source": "prometheus",
                    "prometheus": {"url": PROMETHEUS_URL, "queueDepthQuery": ""},
                }
            }
        },
        SCHEMA,
        "queueDepthQuery",
    ),
    _invalid(
        "query-control-character",
        {
            "autoscaling": {
                "metrics": {
                    "source": "prometheus",
                    "prometheus": {"url": PROMETHEUS_URL, "gpuUtilizationQuery": "avg(x)\u0000"},
                }
            }
        },
        SCHEMA,
        "gpuUtilizationQuery",
    ),
    _invalid(
        "prometheus-url-with-credentials",
        {
            "autoscaling": {
                "metrics": {
                    "source": "prometheus",
                    "prometheus": {"url": "http://admin:pw@prom:9090"},
                }
            }
        },
        SCHEMA,
        "url",
    ),
    _invalid(
        "prometheus-url-with-query",
        {
            "autoscaling": {
                "metrics": {"source": "prometheus", "prometheus": {"url": "http://prom:9090/?x=1"}}
            }
        },
        SCHEMA,
        "url",
    ),
    # what Kubernetes refuses in the children, caught by the schema
    _invalid(
        "toleration-key-with-space",
        {"pod": {"tolerations": [{"key": "bad key", "value": "x"}]}},
        SCHEMA,
        "key",
    ),
    _invalid(
        "toleration-value-with-slash",
        {"pod": {"tolerations": [{"key": "k", "value": "a/b"}]}},
        SCHEMA,
        "value",
    ),
    _invalid(
        "node-selector-value-with-space",
        {"pod": {"nodeSelector": {"zone": "eu west"}}},
        SCHEMA,
        "zone",
    ),
    _invalid("pod-label-value-too-long", {"pod": {"labels": {"team": "x" * 64}}}, SCHEMA, "team"),
    # --- CEL rules ---------------------------------------------------------------------------
    _invalid("min-above-max", {"replicas": {"min": 5, "max": 2}}, CEL, cel.MIN_NOT_ABOVE_MAX),
    _invalid("min-zero", {"replicas": {"min": 0, "max": 4}}, CEL, cel.MIN_AT_LEAST_ONE),
    _invalid(
        "fixed-while-autoscaling", {"replicas": {"fixed": 2}}, CEL, cel.FIXED_EXCLUDES_AUTOSCALING
    ),
    _invalid(
        "float16-without-gpu",
        {"precision": "float16"},
        CEL,
        cel.PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
    ),
    _invalid(
        "int8-bfloat16-without-gpu",
        {"precision": "int8_bfloat16"},
        CEL,
        cel.PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
    ),
    _invalid(
        "faster-whisper-bfloat16-on-cpu",
        {"precision": "bfloat16"},
        CEL,
        cel.PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
    ),
    _invalid(
        "torch-int8-on-gpu",
        {"engine": "torch", "gpu": GPU, "precision": "int8"},
        CEL,
        cel.PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
    ),
    _invalid(
        "torch-int8-float16-on-gpu",
        {"engine": "torch", "gpu": GPU, "precision": "int8_float16"},
        CEL,
        cel.PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
    ),
    _invalid(
        "torch-int8-on-cpu",
        {"engine": "torch", "precision": "int8"},
        CEL,
        cel.PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
    ),
    _invalid(
        "torch-float16-on-cpu",
        {"engine": "torch", "precision": "float16"},
        CEL,
        cel.PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
    ),
    _invalid(
        "cpu-fallback-float16",
        {"gpu": {**GPU, "fallbacks": [{"cpu": {"precision": "float16"}}]}},
        CEL,
        cel.CPU_FALLBACK_PRECISION,
    ),
    _invalid(
        "torch-cpu-fallback-int8",
        {"engine": "torch", "gpu": {**GPU, "fallbacks": [{"cpu": {"precision": "int8"}}]}},
        CEL,
        cel.CPU_FALLBACK_PRECISION,
    ),
    _invalid(
        "cpu-fallback-not-last",
        {"gpu": {**GPU, "fallbacks": [{"cpu": {}}, {"type": "NVIDIA-L4"}]}},
        CEL,
        cel.CPU_FALLBACK_LAST,
    ),
    _invalid(
        "fallback-both-gpu-and-cpu",
        {"gpu": {**GPU, "fallbacks": [{"type": "NVIDIA-L4", "cpu": {}}]}},
        CEL,
        cel.FALLBACK_GPU_XOR_CPU,
    ),
    _invalid(
        "fallback-neither", {"gpu": {**GPU, "fallbacks": [{}]}}, CEL, cel.FALLBACK_GPU_XOR_CPU
    ),
    _invalid(
        "torch-vad-on",
        {"engine": "torch", "runtime": {"vad": "on"}},
        CEL,
        cel.VAD_NEEDS_AN_ENGINE_WITH_VAD,
    ),
    _invalid(
        "translate-with-english-only-model",
        {"task": "translate", "model": {"name": "small.en"}},
        CEL,
        cel.TRANSLATE_NEEDS_MULTILINGUAL,
    ),
    _invalid(
        "pvc-source-without-pvc",
        {"model": {"name": "base", "source": "pvc"}},
        CEL,
        cel.PVC_IFF_SOURCE_PVC,
    ),
    _invalid(
        "pvc-with-image-source",
        {"model": {"name": "base", "pvc": {"claimName": "models"}}},
        CEL,
        cel.PVC_IFF_SOURCE_PVC,
    ),
    _invalid(
        "download-settings-with-image-source",
        {"model": {"name": "base", "download": {"cacheSize": "4Gi"}}},
        CEL,
        cel.DOWNLOAD_ONLY_WITH_SOURCE_DOWNLOAD,
    ),
    _invalid(
        "model-path-with-pvc-source",
        {"model": {"name": "/models/base", "source": "pvc", "pvc": {"claimName": "models"}}},
        CEL,
        cel.MODEL_PATH_ONLY_FROM_IMAGE,
    ),
    _invalid(
        "download-name-too-long-for-a-repository",
        {"model": {"name": "whisper-" + "x" * 80, "source": "download"}},
        CEL,
        cel.DOWNLOAD_REPOSITORY_FITS,
    ),
    _invalid(
        "prometheus-source-without-url",
        {"autoscaling": {"metrics": {"source": "prometheus"}}},
        CEL,
        cel.PROMETHEUS_SOURCE_NEEDS_SETTINGS,
    ),
    _invalid(
        "keda-without-prometheus", {"autoscaling": {"mode": "keda"}}, CEL, cel.KEDA_NEEDS_PROMETHEUS
    ),
    _invalid(
        "hpa-with-custom-queries",
        {
            "autoscaling": {
                "mode": "hpa",
                "metrics": {"prometheus": {"url": PROMETHEUS_URL, "queueDepthQuery": "sum(q)"}},
            }
        },
        CEL,
        cel.HPA_TAKES_NO_QUERIES,
    ),
    _invalid(
        "schedule-with-keda",
        {
            "autoscaling": {
                "mode": "keda",
                "metrics": PROMETHEUS,
                **schedule("0 8 * * *", "0 18 * * *"),
            }
        },
        CEL,
        cel.SCHEDULE_NEEDS_BUILTIN,
    ),
    _invalid(
        "schedule-with-autoscaling-off",
        {"autoscaling": {"mode": "off", **schedule("0 8 * * *", "0 18 * * *")}},
        CEL,
        cel.SCHEDULE_NEEDS_BUILTIN,
    ),
    _invalid(
        "burst-window-above-stable",
        {"autoscaling": {"burstWindowSeconds": 60, "stableWindowSeconds": 30}},
        CEL,
        cel.BURST_WITHIN_STABLE,
    ),
    _invalid(
        "schedule-above-max",
        {
            "replicas": {"max": 3},
            "autoscaling": {
                "schedule": [{"start": "0 8 * * *", "end": "0 9 * * *", "minReplicas": 5}]
            },
        },
        CEL,
        cel.SCHEDULE_WITHIN_MAX,
    ),
    _invalid(
        "env-overrides-precision",
        {"runtime": {"env": [{"name": "VOICEFLEET_PRECISION", "value": "float32"}]}},
        CEL,
        cel.ENV_NOT_OPERATOR_OWNED,
    ),
    _invalid(
        "env-sets-api-key",
        {"runtime": {"env": [{"name": "VOICEFLEET_API_KEY", "value": "hunter2"}]}},
        CEL,
        cel.ENV_NOT_OPERATOR_OWNED,
    ),
    _invalid(
        "env-value-and-value-from",
        {
            "runtime": {
                "env": [
                    {
                        "name": "TOKEN",
                        "value": "x",
                        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                    }
                ]
            }
        },
        CEL,
        cel.ENV_VALUE_XOR_VALUE_FROM,
    ),
    _invalid(
        "label-overrides-selector",
        {"pod": {"labels": {"app.kubernetes.io/instance": "other"}}},
        CEL,
        cel.LABELS_NOT_RESERVED,
    ),
    _invalid(
        "label-in-voicefleet-prefix",
        {"pod": {"labels": {"voicefleet.io/x": "y"}}},
        CEL,
        cel.LABELS_NOT_RESERVED,
    ),
    _invalid(
        "toleration-without-key-uses-equal",
        {"pod": {"tolerations": [{"operator": "Equal", "value": "x"}]}},
        CEL,
        cel.TOLERATION_EMPTY_KEY_NEEDS_EXISTS,
    ),
    _invalid(
        "toleration-exists-with-value",
        {"pod": {"tolerations": [{"key": "dedicated", "operator": "Exists", "value": "stt"}]}},
        CEL,
        cel.TOLERATION_EXISTS_HAS_NO_VALUE,
    ),
    _invalid(
        "toleration-seconds-without-no-execute",
        {
            "pod": {
                "tolerations": [
                    {"key": "k", "value": "v", "effect": "NoSchedule", "tolerationSeconds": 60}
                ]
            }
        },
        CEL,
        cel.TOLERATION_SECONDS_ONLY_NO_EXECUTE,
    ),
    _invalid("name-too-long", {}, CEL, cel.NAME_FITS_A_LABEL, name="w" * 64),
    # --- the operator: checks CEL cannot afford (regexes over keys, a time-zone database) -----
    _invalid("name-not-a-dns-label", {}, OPERATOR, "must be a DNS label", name="1whisper"),
    _invalid(
        "node-selector-bad-key", {"pod": {"nodeSelector": {"bad key!": "x"}}}, OPERATOR, "bad key!"
    ),
    _invalid("pod-label-bad-key", {"pod": {"labels": {"team/": "speech"}}}, OPERATOR, "team/"),
    _invalid(
        "pod-annotation-bad-key", {"pod": {"annotations": {"-owner": "speech"}}}, OPERATOR, "-owner"
    ),
    _invalid(
        "service-annotation-bad-key",
        {"service": {"annotations": {"lb type": "nlb"}}},
        OPERATOR,
        "lb type",
    ),
    _invalid(
        "pod-annotations-too-large",
        {"pod": {"annotations": {"example.com/blob": "x" * (260 * 1024)}}},
        OPERATOR,
        "Kubernetes allows 262144",
    ),
    _invalid(
        "schedule-unknown-time-zone",
        {"autoscaling": schedule("0 8 * * *", "0 18 * * *", timezone="Mars/Olympus_Mons")},
        OPERATOR,
        "not in the IANA time-zone database",
    ),
    _invalid(
        "schedule-days-differ",
        {"autoscaling": schedule("0 8 * * 1-5", "0 18 * * *")},
        OPERATOR,
        "same days of the week",
    ),
    _invalid(
        "schedule-start-equals-end",
        {"autoscaling": schedule("0 8 * * *", "00 08 * * *")},
        OPERATOR,
        "the same time of day",
    ),
    _invalid(
        "schedule-backwards-day-range",
        {"autoscaling": schedule("0 8 * * 5-1", "0 18 * * 5-1")},
        OPERATOR,
        "runs backwards",
    ),
    _invalid(
        "requests-above-limits",
        {"runtime": {"resources": {"requests": {"memory": "16Gi"}, "limits": {"memory": "8Gi"}}}},
        OPERATOR,
        "requests.memory (16Gi) exceeds limits.memory (8Gi)",
    ),
    _invalid(
        "cpu-request-above-limit-in-other-units",
        {"runtime": {"resources": {"requests": {"cpu": "2500m"}, "limits": {"cpu": 2}}}},
        OPERATOR,
        "requests.cpu (2500m) exceeds limits.cpu (2)",
    ),
    _invalid(
        "extended-resource-without-limit",
        {"runtime": {"resources": {"requests": {"example.com/fpga": 1}}}},
        OPERATOR,
        "cannot be overcommitted",
    ),
    _invalid(
        "unqualified-resource-name",
        {"runtime": {"resources": {"limits": {"gpu": 1}}}},
        OPERATOR,
        "'gpu' is not a resource name",
    ),
    _invalid(
        "gpu-resource-in-runtime-resources",
        {
            "gpu": GPU,
            "precision": "float16",
            "runtime": {"resources": {"limits": {"nvidia.com/gpu": 2}}},
        },
        OPERATOR,
        "runtime.resources may not name nvidia.com/gpu",
    ),
    _invalid(
        "api-processes-beside-tts",
        {
            "tts": {},
            "runtime": {"env": [{"name": "VOICEFLEET_API_PROCESSES", "value": "4"}]},
        },
        OPERATOR,
        "VOICEFLEET_API_PROCESSES above 1 serves speech-to-text only",
    ),
    _invalid(
        "value-from-two-sources",
        {
            "runtime": {
                "env": [
                    {
                        "name": "X",
                        "valueFrom": {
                            "secretKeyRef": {"name": "s", "key": "k"},
                            "configMapKeyRef": {"name": "c", "key": "k"},
                        },
                    }
                ]
            }
        },
        OPERATOR,
        "valueFrom takes exactly one of",
    ),
    _invalid(
        "env-unknown-runtime-setting",
        {"runtime": {"env": [{"name": "VOICEFLEET_BATCHSIZE", "value": "8"}]}},
        OPERATOR,
        "VOICEFLEET_BATCHSIZE is not a runtime setting",
    ),
    _invalid(
        "env-runtime-setting-bad-value",
        {"runtime": {"env": [{"name": "VOICEFLEET_BATCH_SIZE", "value": "eight"}]}},
        OPERATOR,
        "VOICEFLEET_BATCH_SIZE",
    ),
]


VALID: list[ValidCase] = [
    ValidCase("cpu-minimal", voiceservice({})),
    ValidCase(
        "tts-only-cpu",
        {
            **voiceservice({}),
            "spec": {
                "tts": {"voices": ["af_heart", "am_onyx"], "defaultFormat": "opus"},
                "runtime": {"concurrency": 2},
            },
        },
    ),
    ValidCase(
        "stt-and-tts-on-one-gpu",
        voiceservice({"model": {"name": "large-v3"}, "gpu": GPU, "tts": {"threads": 2}}),
    ),
    ValidCase(
        "cpu-int8-fixed",
        voiceservice(
            {"precision": "int8", "replicas": {"fixed": 3}, "autoscaling": {"mode": "off"}}
        ),
    ),
    ValidCase(
        "paused-with-fixed-zero",
        voiceservice({"replicas": {"fixed": 0}, "autoscaling": {"mode": "off"}}),
    ),
    ValidCase(
        "gpu-a100-float16",
        voiceservice({"model": {"name": "large-v3"}, "gpu": GPU, "precision": "float16"}),
    ),
    ValidCase(
        "mig-slice-int8-float16",
        voiceservice(
            {"gpu": {"resourceName": "nvidia.com/mig-1g.10gb"}, "precision": "int8_float16"}
        ),
    ),
    ValidCase(
        "fallback-to-cpu-auto",
        voiceservice(
            {
                "gpu": {**GPU, "fallbacks": [{"type": "NVIDIA-L4"}, {"cpu": {}}]},
                "precision": "float16",
            }
        ),
        placement_index=2,
    ),
    ValidCase(
        "torch-fallback-to-cpu-bfloat16",
        voiceservice(
            {
                "engine": "torch",
                "gpu": {**GPU, "fallbacks": [{"cpu": {"precision": "bfloat16"}}]},
                "precision": "bfloat16",
            }
        ),
        placement_index=1,
    ),
    ValidCase(
        "torch-on-cpu-vad-off",
        voiceservice({"engine": "torch", "precision": "float32", "runtime": {"vad": "off"}}),
    ),
    ValidCase(
        "pvc-cache-with-subpath",
        voiceservice(
            {
                "model": {
                    "name": "large-v3",
                    "source": "pvc",
                    "pvc": {"claimName": "whisper-models", "subPath": "cache/.v3"},
                }
            }
        ),
    ),
    ValidCase(
        "download-pull-request-revision",
        voiceservice(
            {
                "model": {
                    "name": "small",
                    "source": "download",
                    "revision": "refs/pr/3",
                    "download": {
                        "repository": "Systran/faster-whisper-small",
                        "hfTokenSecretRef": {"name": "hf", "key": "token"},
                    },
                },
                "gpu": {"type": "NVIDIA-L4"},
            }
        ),
    ),
    ValidCase(
        "download-distil-derived-repository",
        voiceservice(
            {"model": {"name": "distil-large-v3", "source": "download", "revision": "v1.0.2"}}
        ),
    ),
    ValidCase(
        "model-path-in-image", voiceservice({"model": {"name": "/opt/models/whisper_small-ct2"}})
    ),
    ValidCase(
        "builtin-prometheus-custom-queries",
        voiceservice(
            {
                "gpu": GPU,
                "autoscaling": {
                    "metrics": {
                        "source": "prometheus",
                        "prometheus": {
                            "url": PROMETHEUS_URL,
                            "queueDepthQuery": "max by (pod) (voicefleet_queue_depth)",
                            "gpuUtilizationQuery": "avg by (pod) (DCGM_FI_DEV_GPU_UTIL\n  / 100)",
                        },
                    }
                },
            }
        ),
    ),
    ValidCase(
        "schedule-across-midnight-berlin",
        voiceservice(
            {
                "replicas": {"min": 1, "max": 8},
                "autoscaling": schedule("30 22 * * 5,6", "0 2 * * 5,6", timezone="Europe/Berlin"),
            }
        ),
    ),
    ValidCase(
        "keda", voiceservice({"gpu": GPU, "autoscaling": {"mode": "keda", "metrics": PROMETHEUS}})
    ),
    ValidCase(
        "hpa",
        voiceservice({"gpu": GPU, "autoscaling": {"mode": "hpa", "targetGpuUtilization": 60}}),
    ),
    ValidCase(
        "longest-name-keda",
        voiceservice({"autoscaling": {"mode": "keda", "metrics": PROMETHEUS}}, name="w" * 63),
    ),
    ValidCase(
        "resources-env-and-secrets",
        voiceservice(
            {
                "runtime": {
                    "resources": {
                        "requests": {"cpu": "1500m", "memory": "6Gi", "example.com/fpga": 1},
                        "limits": {"cpu": 2, "memory": "8Gi", "example.com/fpga": "1"},
                    },
                    "env": [
                        {"name": "VOICEFLEET_BATCH_SIZE", "value": "4"},
                        {"name": "voicefleet_warmup", "value": "false"},
                        {"name": "VOICEFLEET_SERVED_MODEL_NAMES", "value": '["whisper-1", "stt"]'},
                        {
                            "name": "HF_TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
                        },
                    ],
                    "apiKeySecretRef": {"name": "stt-key", "key": "token"},
                },
                "service": {
                    "type": "LoadBalancer",
                    "annotations": {
                        "service.beta.kubernetes.io/aws-load-balancer-internal": "true"
                    },
                },
            }
        ),
    ),
    ValidCase(
        "pod-overrides-and-tolerations",
        voiceservice(
            {
                "gpu": GPU,
                "pod": {
                    "nodeSelector": {"topology.kubernetes.io/zone": "eu-west-1a"},
                    "tolerations": [
                        {"operator": "Exists"},
                        {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
                        {
                            "key": "node.kubernetes.io/unreachable",
                            "operator": "Exists",
                            "effect": "NoExecute",
                            "tolerationSeconds": 30,
                        },
                    ],
                    "labels": {"team": "speech", "example.com/cost-center": "c-42"},
                    "annotations": {"example.com/owner": "speech team"},
                    "priorityClassName": "speech-high",
                    "runtimeClassName": "nvidia",
                    "imagePullSecrets": ["registry"],
                },
            }
        ),
    ),
]
