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

GPU_ONLY_PRECISIONS = ("float16", "bfloat16", "int8_float16", "int8_bfloat16")
"""CTranslate2 compute types that need CUDA: on a CPU they are a start-up error."""


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
)
"""Runtime settings the operator derives from the spec; `runtime.env` may not override them.

VOICEFLEET_API_KEY is here too: the key is only ever mounted as a file from a Secret.
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
GPU_PRECISION_NEEDS_GPU = CelRule(
    path=("spec",),
    rule=f"has(self.gpu) || !(self.precision in {_cel_list(GPU_ONLY_PRECISIONS)})",
    message="precision float16, bfloat16, int8_float16 and int8_bfloat16 need a GPU: "
    "set spec.gpu, or pick auto, float32, int8 or int8_float32",
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
CPU_FALLBACK_PRECISION = CelRule(
    path=("spec", "gpu", "fallbacks", "[]", "cpu"),
    rule=f"!(self.precision in {_cel_list(GPU_ONLY_PRECISIONS)})",
    message="a cpu fallback's precision must run on a CPU: auto, float32, int8 or int8_float32",
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

ALL_RULES: tuple[CelRule, ...] = (
    NAME_FITS_A_LABEL,
    FIXED_EXCLUDES_AUTOSCALING,
    GPU_PRECISION_NEEDS_GPU,
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
)


def rules_at(path: tuple[str, ...]) -> list[CelRule]:
    return [rule for rule in ALL_RULES if rule.path == path]
