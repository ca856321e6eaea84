"""The cross-field rules of the VoiceService API, as data.

Each rule is attached to the generated CRD as an `x-kubernetes-validations` entry (so the API
server enforces it) and mirrored by a pydantic validator in `models.py` that raises the same
message (so `voicefleet render`, the operator and the tests enforce it without a cluster).
Rules are written against the object *after* the API server applied the schema defaults:
only fields without a default need `has()`.

No rule runs a regex over map keys or an unbounded string: the API server estimates a rule's
cost from the schema's bounds and rejects the whole CRD when a rule could be too expensive.
Label-key syntax and DNS-label names are therefore checked by the pydantic models only (the
operator reports them as Degraded, `voicefleet render` refuses them), and by Kubernetes itself
when the children are created.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicefleet_runtime.engine.models import ENGLISH_ONLY_SUFFIX
from voicefleet_runtime.engine.support import ENGINE_CAPABILITIES, ENGINE_PRECISIONS

ENGINES = tuple(ENGINE_PRECISIONS)
GPU_ONLY_PRECISIONS = tuple(
    p
    for p in ENGINE_PRECISIONS["faster-whisper"]["cuda"]
    if all(p not in by_device["cpu"] for by_device in ENGINE_PRECISIONS.values())
)
"""Precisions no engine runs on a CPU: float16, bfloat16 and their int8 variants."""
ENGINES_WITHOUT_VAD = tuple(e for e, can in ENGINE_CAPABILITIES.items() if not can.vad)

HF_REPOSITORY_NAME_MAX = 96
"""Hugging Face's limit on the name part of owner/name."""
DERIVED_REPOSITORY_OWNER = "Systran"
DERIVED_REPOSITORY_PREFIX = "faster-whisper-"
"""model.name tiny.en downloads Systran/faster-whisper-tiny.en; distil-<rest> downloads
Systran/faster-distil-whisper-<rest>, which is exactly as long."""
MAX_DERIVED_REPOSITORY_NAME = HF_REPOSITORY_NAME_MAX - len(DERIVED_REPOSITORY_PREFIX)


RESERVED_LABEL_KEYS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
)
"""Labels the operator sets on every child and selects pods by; overriding them breaks it."""

RESERVED_LABEL_PREFIX = "voicefleet.io/"

OPERATOR_ENV_NAMES = (
    "VOICEFLEET_MODEL",
    "VOICEFLEET_MODEL_DIR",
    "VOICEFLEET_ENGINE",
    "VOICEFLEET_DEVICE",
    "VOICEFLEET_PRECISION",
    "VOICEFLEET_TASK",
    "VOICEFLEET_HOST",
    "VOICEFLEET_PORT",
    "VOICEFLEET_BEAM_SIZE",
    "VOICEFLEET_VAD",
    "VOICEFLEET_CONCURRENCY",
    "VOICEFLEET_QUEUE_SIZE",
    "VOICEFLEET_MAX_UPLOAD_BYTES",
    "VOICEFLEET_MAX_AUDIO_SECONDS",
    "VOICEFLEET_SHUTDOWN_GRACE_SECONDS",
    "VOICEFLEET_API_KEY",
    "VOICEFLEET_API_KEY_FILE",
    "VOICEFLEET_STT_ENABLED",
    "VOICEFLEET_TTS_MODEL",
    "VOICEFLEET_TTS_VOICES",
    "VOICEFLEET_TTS_DEFAULT_FORMAT",
    "VOICEFLEET_TTS_THREADS",
    "VOICEFLEET_TTS_ENGINE",
    "VOICEFLEET_TTS_DEVICE",
)
"""Runtime settings the operator derives from the spec; `runtime.env` may not override them.

VOICEFLEET_API_KEY is here too: the key is only ever mounted as a file from a Secret. And
VOICEFLEET_HOST: the probes and the Service reach the pod's IP, so the server binds all
addresses.
"""


@dataclass(frozen=True)
class CelRule:
    path: tuple[str, ...]
    """Where the rule sits in the schema: property names, `[]` for list items."""
    rule: str
    message: str


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


NAME_FITS_A_LABEL = CelRule(
    path=(),
    rule="size(self.metadata.name) <= 63",
    message="metadata.name must be at most 63 characters: the Service and pod labels take it",
)
FIXED_EXCLUDES_AUTOSCALING = CelRule(
    path=("spec",),
    rule="!has(self.replicas.fixed) || self.autoscaling.mode == 'off'",
    message="replicas.fixed pins the replica count: set autoscaling.mode to off, "
    "or remove replicas.fixed",
)


def _precisions_by_engine(device: str) -> str:
    """The precisions of `device` for the spec's engine, as a CEL expression."""
    *first, last = ENGINES
    expression = _cel_list(ENGINE_PRECISIONS[last][device])
    for engine in reversed(first):
        expression = (
            f"(self.engine == '{engine}' ? {_cel_list(ENGINE_PRECISIONS[engine][device])} "
            f": {expression})"
        )
    return expression


def _precision_table(device: str) -> str:
    where = "a GPU" if device == "cuda" else "a CPU"
    return "; ".join(
        f"{engine} on {where}: {', '.join(by_device[device])}"
        for engine, by_device in ENGINE_PRECISIONS.items()
    )


PRECISION_RUNS_ON_ENGINE_AND_DEVICE = CelRule(
    path=("spec",),
    rule=f"has(self.gpu) ? self.precision in {_precisions_by_engine('cuda')} "
    f": self.precision in {_precisions_by_engine('cpu')}",
    message="the engine cannot run this precision on this device, and the pods would fail "
    f"at start-up ({_precision_table('cpu')}; {_precision_table('cuda')}): pick another "
    "precision or engine, or set spec.gpu",
)
CPU_FALLBACK_PRECISION = CelRule(
    path=("spec",),
    rule="!has(self.gpu) || self.gpu.fallbacks.all(f, !has(f.cpu) || "
    f"f.cpu.precision in {_precisions_by_engine('cpu')})",
    message="a cpu fallback's precision must be one the engine runs on a CPU "
    f"({_precision_table('cpu')})",
)
VAD_NEEDS_AN_ENGINE_WITH_VAD = CelRule(
    path=("spec",),
    rule=f"!(self.engine in {_cel_list(ENGINES_WITHOUT_VAD)}) || self.runtime.vad != 'on'",
    message="runtime.vad on needs the faster-whisper engine: "
    f"{', '.join(ENGINES_WITHOUT_VAD)} has no voice activity detection (use vad auto or off)",
)
SCHEDULE_WITHIN_MAX = CelRule(
    path=("spec",),
    rule="self.autoscaling.schedule.all(w, w.minReplicas <= self.replicas.max)",
    message="an autoscaling.schedule window's minReplicas must not exceed replicas.max",
)
MIN_NOT_ABOVE_MAX = CelRule(
    path=("spec", "replicas"),
    rule="self.min <= self.max",
    message="replicas.min must not exceed replicas.max",
)
PVC_IFF_SOURCE_PVC = CelRule(
    path=("spec", "model"),
    rule="(self.source == 'pvc') == has(self.pvc)",
    message="model.pvc is required when model.source is pvc, and allowed only then",
)
DOWNLOAD_ONLY_WITH_SOURCE_DOWNLOAD = CelRule(
    path=("spec", "model"),
    rule="!has(self.download) || self.source == 'download'",
    message="model.download is allowed only when model.source is download",
)
FALLBACK_GPU_XOR_CPU = CelRule(
    path=("spec", "gpu", "fallbacks", "[]"),
    rule="has(self.type) != has(self.cpu)",
    message="a gpu fallback names either a GPU type or cpu, not both and not neither",
)
CPU_FALLBACK_LAST = CelRule(
    path=("spec", "gpu"),
    rule="self.fallbacks.all(f, !has(f.cpu)) || "
    "(self.fallbacks.exists_one(f, has(f.cpu)) && "
    "has(self.fallbacks[size(self.fallbacks) - 1].cpu))",
    message="gpu.fallbacks may hold one cpu fallback, and it must come last",
)
PROMETHEUS_SOURCE_NEEDS_SETTINGS = CelRule(
    path=("spec", "autoscaling", "metrics"),
    rule="self.source != 'prometheus' || has(self.prometheus)",
    message="autoscaling.metrics.prometheus is required when metrics.source is prometheus",
)
ENV_NOT_OPERATOR_OWNED = CelRule(
    path=("spec", "runtime", "env"),
    rule=f"self.all(e, !(e.name in {_cel_list(OPERATOR_ENV_NAMES)}))",
    message="runtime.env may not set a variable the operator derives from the spec "
    "(VOICEFLEET_MODEL, _PRECISION, _API_KEY, ...): use the matching spec field",
)
LABELS_NOT_RESERVED = CelRule(
    path=("spec", "pod", "labels"),
    rule=f"self.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}') && "
    f"!(k in {_cel_list(RESERVED_LABEL_KEYS)}))",
    message="pod.labels may not set voicefleet.io/* or the app.kubernetes.io labels "
    "the operator selects pods by",
)

TRANSLATE_NEEDS_MULTILINGUAL = CelRule(
    path=("spec",),
    rule=f"self.task != 'translate' || !has(self.model) "
    f"|| !self.model.name.endsWith('{ENGLISH_ONLY_SUFFIX}')",
    message=f"task translate needs a multilingual model: a *{ENGLISH_ONLY_SUFFIX} model is "
    "English-only, and every /transcribe request would fail (pick base, small, large-v3, ...)",
)
MIN_AT_LEAST_ONE = CelRule(
    path=("spec", "replicas"),
    rule="self.min >= 1",
    message="replicas.min must be at least 1: voicefleet cannot scale from zero (with no pod "
    "left, the pods' own metrics vanish and nothing holds the first requests while a pod "
    "starts, so they would fail); to pause a service, set autoscaling.mode off and "
    "replicas.fixed 0",
)
KEDA_NEEDS_PROMETHEUS = CelRule(
    path=("spec", "autoscaling"),
    rule="self.mode != 'keda' || has(self.metrics.prometheus)",
    message="autoscaling.mode keda needs autoscaling.metrics.prometheus: "
    "KEDA reads the load from that Prometheus server",
)
HPA_TAKES_NO_QUERIES = CelRule(
    path=("spec", "autoscaling"),
    rule="self.mode != 'hpa' || !has(self.metrics.prometheus) || "
    "(!has(self.metrics.prometheus.queueDepthQuery) && "
    "!has(self.metrics.prometheus.gpuUtilizationQuery))",
    message="autoscaling.mode hpa reads the runtime's metrics through a metrics adapter "
    "(prometheus-adapter) and would ignore metrics.prometheus queries: configure them in "
    "the adapter's rules, or use mode builtin or keda",
)
SCHEDULE_NEEDS_BUILTIN = CelRule(
    path=("spec", "autoscaling"),
    rule="size(self.schedule) == 0 || self.mode == 'builtin'",
    message="autoscaling.schedule is applied by the builtin autoscaler only: "
    "set autoscaling.mode builtin, or remove the schedule",
)
BURST_WITHIN_STABLE = CelRule(
    path=("spec", "autoscaling"),
    rule="self.burstWindowSeconds <= self.stableWindowSeconds",
    message="autoscaling.burstWindowSeconds must not exceed stableWindowSeconds",
)
MODEL_PATH_ONLY_FROM_IMAGE = CelRule(
    path=("spec", "model"),
    rule="self.source == 'image' || !self.name.startsWith('/')",
    message="model.name must be a model name, not a path, when model.source is pvc or "
    "download: the weights are looked up as <cache>/<name>",
)
DOWNLOAD_REPOSITORY_FITS = CelRule(
    path=("spec", "model"),
    rule="self.source != 'download' || (has(self.download) && has(self.download.repository)) "
    f"|| size(self.name) <= {MAX_DERIVED_REPOSITORY_NAME}",
    message="model.name is too long to derive a Hugging Face repository from "
    "(Systran/faster-whisper-<name> holds at most 96 characters after the owner): "
    "set model.download.repository",
)
TOLERATION_EMPTY_KEY_NEEDS_EXISTS = CelRule(
    path=("spec", "pod", "tolerations", "[]"),
    rule="(has(self.key) && self.key != '') || self.operator == 'Exists'",
    message="a toleration without a key must use operator Exists (it matches every taint)",
)
TOLERATION_EXISTS_HAS_NO_VALUE = CelRule(
    path=("spec", "pod", "tolerations", "[]"),
    rule="self.operator != 'Exists' || !has(self.value) || self.value == ''",
    message="a toleration with operator Exists takes no value",
)
TOLERATION_SECONDS_ONLY_NO_EXECUTE = CelRule(
    path=("spec", "pod", "tolerations", "[]"),
    rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
    message="tolerationSeconds applies only to effect NoExecute",
)
ENV_VALUE_XOR_VALUE_FROM = CelRule(
    path=("spec", "runtime", "env", "[]"),
    rule="!(has(self.value) && has(self.valueFrom))",
    message="an env variable takes value or valueFrom, not both",
)

SERVES_A_DIRECTION = CelRule(
    path=("spec",),
    rule="has(self.model) || has(self.tts)",
    message="set model (speech-to-text), tts (text-to-speech), or both",
)

ALL_RULES: tuple[CelRule, ...] = (
    NAME_FITS_A_LABEL,
    SERVES_A_DIRECTION,
    FIXED_EXCLUDES_AUTOSCALING,
    PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
    VAD_NEEDS_AN_ENGINE_WITH_VAD,
    SCHEDULE_WITHIN_MAX,
    MIN_NOT_ABOVE_MAX,
    PVC_IFF_SOURCE_PVC,
    DOWNLOAD_ONLY_WITH_SOURCE_DOWNLOAD,
    FALLBACK_GPU_XOR_CPU,
    CPU_FALLBACK_LAST,
    CPU_FALLBACK_PRECISION,
    PROMETHEUS_SOURCE_NEEDS_SETTINGS,
    ENV_NOT_OPERATOR_OWNED,
    LABELS_NOT_RESERVED,
    TRANSLATE_NEEDS_MULTILINGUAL,
    MIN_AT_LEAST_ONE,
    KEDA_NEEDS_PROMETHEUS,
    HPA_TAKES_NO_QUERIES,
    SCHEDULE_NEEDS_BUILTIN,
    BURST_WITHIN_STABLE,
    MODEL_PATH_ONLY_FROM_IMAGE,
    DOWNLOAD_REPOSITORY_FITS,
    TOLERATION_EMPTY_KEY_NEEDS_EXISTS,
    TOLERATION_EXISTS_HAS_NO_VALUE,
    TOLERATION_SECONDS_ONLY_NO_EXECUTE,
    ENV_VALUE_XOR_VALUE_FROM,
)


def rules_at(path: tuple[str, ...]) -> list[CelRule]:
    return [rule for rule in ALL_RULES if rule.path == path]
