"""The VoiceService API as pydantic models: the single source of truth for the CRD.

Python uses snake_case, YAML camelCase (an alias generator maps one to the other). Every
field carries a description: it becomes the `kubectl explain` text. Cross-field rules live
in `cel.py` and are enforced twice, by the API server (CEL) and here (validators that raise
the same messages).
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from voicefleet_operator.crd import cel
from voicefleet_operator.crd.cron import DAILY_CRON_PATTERN, parse_daily_cron
from voicefleet_operator.crd.quantity import QUANTITY_PATTERN, parse_quantity
from voicefleet_operator.crd.syntax import (
    ANNOTATIONS_MAX_BYTES,
    DNS_SUBDOMAIN_PATTERN,
    ENV_NAME_PATTERN,
    EXTENDED_RESOURCE_PATTERN,
    HF_REPOSITORY_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    MODEL_NAME_PATTERN,
    PROMETHEUS_URL_PATTERN,
    PROMQL_PATTERN,
    RELATIVE_PATH_PATTERN,
    REVISION_PATTERN,
    annotations_size,
    is_dns_label,
    is_label_key,
)
from voicefleet_runtime.engine.models import ENGLISH_ONLY_SUFFIX
from voicefleet_runtime.engine.support import ENGINE_CAPABILITIES, runs
from voicefleet_runtime.settings import (
    Engine,
    Precision,
    RuntimeSettings,
    Task,
    TtsBackend,
    TtsModel,
    VadMode,
)
from voicefleet_runtime.tts.formats import SpeechFormat
from voicefleet_runtime.tts.voice_names import ENGLISH_VOICES

DEFAULT_RUNTIME_IMAGE = "ghcr.io/voicefleet/voicefleet:0.1.0"
"""The image children run when neither the VoiceService nor the operator's settings name one
(the same image runs the operator)."""

API_GROUP = "voicefleet.io"
API_VERSION = "v1alpha1"
KIND = "VoiceService"
PLURAL = "voiceservices"


def _quantity_as_text(value: object) -> object:
    # YAML turns `cpu: 2` into an int; Kubernetes accepts both, so do we.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    parse_quantity(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_as_text),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity: an integer or a string such as 500m or 16Gi."""

ResourceName = Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
    )


def _raise_broken(rules: list[tuple[cel.CelRule, bool]]) -> None:
    """Report every broken rule at once, with the messages the API server would give."""
    broken = [rule.message for rule, holds in rules if not holds]
    if broken:
        raise ValueError("; ".join(broken))


def _check_label_keys(field: str, keys: Mapping[str, str]) -> None:
    """Checked here only: a CEL regex over map keys would blow the API server's cost budget."""
    bad = sorted(key for key in keys if not is_label_key(key))
    if bad:
        raise ValueError(
            f"{field} keys must be Kubernetes label keys ([dns-prefix/]name, name at most 63 "
            f"characters): {', '.join(repr(key) for key in bad)}"
        )


def _check_annotations(field: str, annotations: Mapping[str, str]) -> None:
    """Checked here only: key syntax and total size are beyond what CEL may afford."""
    _check_label_keys(field, annotations)
    size = annotations_size(annotations)
    if size > ANNOTATIONS_MAX_BYTES - ANNOTATIONS_RESERVED_BYTES:
        raise ValueError(
            f"{field} take {size} bytes: Kubernetes allows {ANNOTATIONS_MAX_BYTES} per object, "
            f"of which the operator keeps {ANNOTATIONS_RESERVED_BYTES} for its own"
        )


ANNOTATIONS_RESERVED_BYTES = 4096
"""Room for the annotations the operator adds (spec hash, placement, Prometheus, revision)."""


class SecretKeyRef(ApiModel):
    """A key in a Secret of the VoiceService's namespace."""

    name: ResourceName = Field(description="Name of the Secret.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret.",
    )


# --- model ----------------------------------------------------------------------------------


class PvcModelSource(ApiModel):
    """A PersistentVolumeClaim that holds the model weights (a shared model cache)."""

    claim_name: ResourceName = Field(
        description="Name of the PersistentVolumeClaim, in the VoiceService's namespace."
    )
    sub_path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=RELATIVE_PATH_PATTERN,
        description="Folder inside the volume mounted as the model cache: a relative path "
        "without . or .. segments; default: the volume's root.",
    )


class DownloadModelSource(ApiModel):
    """How the init container downloads the weights (needs network access to the hub)."""

    repository: str | None = Field(
        default=None,
        max_length=200,
        pattern=HF_REPOSITORY_PATTERN,
        description="Hugging Face repository of CTranslate2 weights to download (owner/name; "
        "both engines read that format); default: Systran/faster-whisper-<model.name> "
        "(Systran/faster-distil-whisper-<rest> for distil-<rest>).",
    )
    cache_size: Quantity = Field(
        default="10Gi",
        description="Size limit of the emptyDir volume the weights are downloaded into.",
    )
    hf_token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face token, for gated or private repositories.",
    )


class ModelSpec(ApiModel):
    """Which Whisper model to serve and where its weights come from."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=MODEL_NAME_PATTERN,
        description="Model name (tiny, tiny.en, base, small, medium, large-v3, "
        "distil-large-v3, ...: letters, digits, _, and single - or . between them) or, with "
        "source image, an absolute path inside the container.",
    )
    source: Literal["image", "pvc", "download"] = Field(
        default="image",
        description="Where the weights come from: image (baked into the runtime image), "
        "pvc (a model cache volume: set model.pvc), download (an init container downloads "
        "them into an emptyDir at start-up; needs network).",
    )
    revision: str | None = Field(
        default=None,
        max_length=128,
        pattern=REVISION_PATTERN,
        description="Repository revision (branch, tag, commit or a ref such as refs/pr/3) to "
        "download; pins the weights for source download, recorded as a pod annotation "
        "otherwise.",
    )
    pvc: PvcModelSource | None = Field(
        default=None, description="The model cache volume; required when source is pvc."
    )
    download: DownloadModelSource | None = Field(
        default=None, description="Download settings; only with source download (defaults apply)."
    )

    @model_validator(mode="after")
    def _check_rules(self) -> ModelSpec:
        _raise_broken(
            [
                (cel.PVC_IFF_SOURCE_PVC, (self.source == "pvc") == (self.pvc is not None)),
                (
                    cel.DOWNLOAD_ONLY_WITH_SOURCE_DOWNLOAD,
                    self.download is None or self.source == "download",
                ),
                (
                    cel.MODEL_PATH_ONLY_FROM_IMAGE,
                    self.source == "image" or not self.name.startswith("/"),
                ),
                (
                    cel.DOWNLOAD_REPOSITORY_FITS,
                    self.source != "download"
                    or (self.download is not None and self.download.repository is not None)
                    or len(self.name) <= cel.MAX_DERIVED_REPOSITORY_NAME,
                ),
            ]
        )
        return self


# --- gpu ------------------------------------------------------------------------------------

GpuProduct = Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)]


class CpuFallback(ApiModel):
    """Run on CPU nodes when no GPU can be had."""

    precision: Precision = Field(
        default="auto",
        description="Compute type on the CPU, one the engine runs there: auto (the engine's "
        "CPU default), float32, int8 or int8_float32 for faster-whisper; auto, float32 or "
        "bfloat16 for torch.",
    )


class GpuFallback(ApiModel):
    """One alternative placement: another GPU product, or CPU."""

    type: GpuProduct | None = Field(
        default=None,
        description="GPU product to try instead (value of the nvidia.com/gpu.product node "
        "label, such as NVIDIA-L4).",
    )
    resource_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=EXTENDED_RESOURCE_PATTERN,
        description="Extended resource on that GPU type (such as nvidia.com/gpu when the "
        "first choice was a MIG slice); default: gpu.resourceName.",
    )
    cpu: CpuFallback | None = Field(
        default=None, description="Run on CPU instead, at this precision."
    )

    @model_validator(mode="after")
    def _check_rules(self) -> GpuFallback:
        _raise_broken([(cel.FALLBACK_GPU_XOR_CPU, (self.type is None) != (self.cpu is None))])
        return self


class GpuSpec(ApiModel):
    """The GPUs each pod gets; absent means a CPU service."""

    type: GpuProduct | None = Field(
        default=None,
        description="GPU product (value of the nvidia.com/gpu.product node label set by GPU "
        "feature discovery, such as NVIDIA-A100-SXM4-80GB); becomes a nodeSelector. "
        "Default: any node offering the resource.",
    )
    count: int = Field(default=1, ge=1, le=16, description="GPUs (or GPU slices) per pod.")
    resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=253,
        pattern=EXTENDED_RESOURCE_PATTERN,
        description="Extended resource to request: nvidia.com/gpu, a MIG profile such as "
        "nvidia.com/mig-1g.10gb, or a time-sliced/shared resource name.",
    )
    fallbacks: list[GpuFallback] = Field(
        default_factory=list,
        max_length=8,
        description="Ordered alternatives used when the pods of the current choice stay "
        "unschedulable for fallbackAfterSeconds: other GPU types, and at most one cpu "
        "fallback, last.",
    )
    fallback_after_seconds: int = Field(
        default=300,
        ge=30,
        le=86400,
        description="How long pods may stay unschedulable before the next fallback is tried.",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> GpuSpec:
        cpu_positions = [i for i, f in enumerate(self.fallbacks) if f.cpu is not None]
        cpu_last_ok = not cpu_positions or cpu_positions == [len(self.fallbacks) - 1]
        _raise_broken([(cel.CPU_FALLBACK_LAST, cpu_last_ok)])
        return self


# --- replicas and autoscaling ---------------------------------------------------------------


class ReplicasSpec(ApiModel):
    """How many pods run."""

    min: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Fewest pods, at least 1: there is no scale from zero (see the README).",
    )
    max: int = Field(default=4, ge=1, le=1000, description="Most pods the autoscaler may run.")
    fixed: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="A fixed pod count, only with autoscaling.mode off; `kubectl scale` and "
        "external autoscalers write it through the scale subresource.",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> ReplicasSpec:
        _raise_broken(
            [(cel.MIN_NOT_ABOVE_MAX, self.min <= self.max), (cel.MIN_AT_LEAST_ONE, self.min >= 1)]
        )
        return self


class ScalingRate(ApiModel):
    """How far one scaling step may go: the larger of pods and percent, per period."""

    pods: int = Field(ge=1, le=1000, description="Pods added or removed per period, at most.")
    percent: int = Field(
        ge=1, le=1000, description="Percent of the current pods added or removed per period."
    )
    period_seconds: int = Field(default=60, ge=1, le=1800, description="Length of a period.")


class PrometheusMetrics(ApiModel):
    """Where the autoscaler reads fleet-wide metrics from a Prometheus server."""

    url: str = Field(
        max_length=2048,
        pattern=PROMETHEUS_URL_PATTERN,
        description="Base URL of the Prometheus HTTP API, such as "
        "http://prometheus-operated.monitoring:9090.",
    )
    queue_depth_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        pattern=PROMQL_PATTERN,
        description="PromQL instant vector of the requests waiting in this service's queues "
        "(by pod, or one total); default: voicefleet_queue_depth of the pods labelled "
        "voicefleet.io/voiceservice=<name>. Used by the builtin autoscaler and KEDA alike.",
    )
    gpu_utilization_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        pattern=PROMQL_PATTERN,
        description="PromQL instant vector of the GPU utilisation (0..1) of this service's "
        "pods (by pod, or one mean); default: voicefleet_gpu_utilization_ratio of its pods.",
    )
    timeout_seconds: int = Field(default=5, ge=1, le=60, description="Timeout of one query.")


class MetricsSpec(ApiModel):
    """Where the autoscaler reads load from."""

    source: Literal["pods", "prometheus"] = Field(
        default="pods",
        description="pods: scrape each ready pod's /metrics; prometheus: query a Prometheus "
        "server (set metrics.prometheus).",
    )
    prometheus: PrometheusMetrics | None = Field(
        default=None,
        description="Prometheus server and queries; required when source is prometheus.",
    )
    poll_interval_seconds: int = Field(
        default=15, ge=1, le=300, description="How often the autoscaler reads the metrics."
    )

    @model_validator(mode="after")
    def _check_rules(self) -> MetricsSpec:
        _raise_broken(
            [
                (
                    cel.PROMETHEUS_SOURCE_NEEDS_SETTINGS,
                    self.source != "prometheus" or self.prometheus is not None,
                )
            ]
        )
        return self


class ScheduleWindow(ApiModel):
    """A recurring time window with a higher replica floor (for known peaks)."""

    start: str = Field(
        max_length=100,
        pattern=DAILY_CRON_PATTERN,
        description="When the window opens, as cron `M H * * DOW` (daily windows only: no "
        "day of month, no month), such as 0 8 * * 1-5.",
    )
    end: str = Field(
        max_length=100,
        pattern=DAILY_CRON_PATTERN,
        description="When the window closes, as cron `M H * * DOW` with the same days of the "
        "week as start (a window across midnight ends on the next day).",
    )
    timezone: str = Field(
        default="UTC",
        max_length=64,
        pattern=r"^[A-Za-z][-A-Za-z0-9_+/]*$",
        description="IANA time zone of the cron expressions, such as Europe/Berlin.",
    )
    min_replicas: int = Field(ge=0, le=1000, description="Fewest pods while the window is open.")

    @model_validator(mode="after")
    def _check_times(self) -> ScheduleWindow:
        """Checked here only: CEL has no time-zone database and no cron parser."""
        start, end = parse_daily_cron(self.start), parse_daily_cron(self.end)
        if start.weekdays != end.weekdays:
            raise ValueError(
                "a schedule window's start and end must name the same days of the week "
                "(the days it opens on)"
            )
        if start.second_of_day == end.second_of_day:
            raise ValueError("a schedule window's start and end are the same time of day")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(
                f"timezone {self.timezone!r} is not in the IANA time-zone database "
                "(such as UTC or Europe/Berlin)"
            ) from error
        return self


class AutoscalingSpec(ApiModel):
    """How the pod count follows the load, between replicas.min and replicas.max."""

    mode: Literal["builtin", "keda", "hpa", "off"] = Field(
        default="builtin",
        description="builtin: the operator's own autoscaler; keda: a KEDA ScaledObject; hpa: a "
        "HorizontalPodAutoscaler; off: replicas.fixed (or replicas.min) pods.",
    )
    target_queue_depth_per_replica: float = Field(
        default=2.0,
        gt=0,
        le=10000,
        description="Waiting requests per pod the autoscaler aims for.",
    )
    target_gpu_utilization: int = Field(
        default=70,
        ge=1,
        le=100,
        description="GPU utilisation the autoscaler aims for, in percent (1-100).",
    )
    scale_up_stabilization_seconds: int = Field(
        default=0,
        ge=0,
        le=3600,
        description="Scale up only to the lowest recommendation of this trailing window.",
    )
    scale_down_stabilization_seconds: int = Field(
        default=180,
        ge=0,
        le=3600,
        description="Scale down only to the highest recommendation of this trailing window.",
    )
    scale_up_rate: ScalingRate = Field(
        default_factory=lambda: ScalingRate(pods=10, percent=300, period_seconds=15),
        description="Fastest scale-up: max(pods, percent of current) per period.",
    )
    scale_down_rate: ScalingRate = Field(
        default_factory=lambda: ScalingRate(pods=100, percent=100, period_seconds=15),
        description="Fastest scale-down: max(pods, percent of current) per period.",
    )
    panic_scale_up_rate: ScalingRate = Field(
        default_factory=lambda: ScalingRate(pods=100, percent=1000, period_seconds=15),
        description="Fastest scale-up while the burst window decides (panic): max(pods, "
        "percent of current) per period; the larger of this and scaleUpRate applies.",
    )
    panic_drain_seconds: int = Field(
        default=30,
        ge=1,
        le=600,
        description="In a burst (panic), the backlog expected by the time new pods serve is "
        "sized to drain within this many seconds of their arrival.",
    )
    burst_window_seconds: int = Field(
        default=6,
        ge=1,
        le=600,
        description="Short averaging window used to react to bursts (scale up); at most the "
        "stable window.",
    )
    stable_window_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Long averaging window used in steady state (scale down).",
    )
    panic_threshold: float = Field(
        default=1.2,
        ge=1,
        le=10,
        description="The burst window decides once its load reaches this multiple of the "
        "current pods (Knative's panic threshold is 2.0).",
    )
    startup_seconds: int = Field(
        default=60,
        ge=0,
        le=1800,
        description="How long a new pod takes to serve (scheduling, image pull, model load): "
        "a significantly rising load is projected this far ahead. 0 disables the look-ahead.",
    )
    tolerance: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Relative deviation from the targets that is ignored (0.1 = 10 percent).",
    )
    metrics: MetricsSpec = Field(
        default_factory=MetricsSpec, description="Where the load is read from."
    )
    schedule: list[ScheduleWindow] = Field(
        default_factory=list,
        max_length=16,
        description="Recurring windows that raise the replica floor (builtin mode only).",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> AutoscalingSpec:
        prometheus = self.metrics.prometheus
        custom_queries = prometheus is not None and (
            prometheus.queue_depth_query is not None or prometheus.gpu_utilization_query is not None
        )
        _raise_broken(
            [
                (cel.KEDA_NEEDS_PROMETHEUS, self.mode != "keda" or prometheus is not None),
                (cel.HPA_TAKES_NO_QUERIES, self.mode != "hpa" or not custom_queries),
                (cel.SCHEDULE_NEEDS_BUILTIN, not self.schedule or self.mode == "builtin"),
                (
                    cel.BURST_WITHIN_STABLE,
                    self.burst_window_seconds <= self.stable_window_seconds,
                ),
            ]
        )
        return self


# --- runtime --------------------------------------------------------------------------------


STANDARD_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def _resource_name_ok(name: str) -> bool:
    if name in STANDARD_RESOURCE_NAMES or name.startswith("hugepages-"):
        return True
    return "/" in name and re.fullmatch(EXTENDED_RESOURCE_PATTERN, name) is not None


def _needs_equal_limit(name: str) -> bool:
    """Extended resources and huge pages: Kubernetes wants the limit, equal to any request."""
    native = name in STANDARD_RESOURCE_NAMES or name.startswith("kubernetes.io/")
    return not native


class ResourceRequirements(ApiModel):
    """Compute resources of the runtime container (GPU resources are added from spec.gpu)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Minimum resources, such as cpu: 2, memory: 8Gi.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Maximum resources, such as memory: 16Gi.",
    )

    @model_validator(mode="after")
    def _check_as_kubernetes_does(self) -> ResourceRequirements:
        """What the API server refuses in a container's resources, checked before sending."""
        problems = [
            f"{name!r} is not a resource name (cpu, memory, ephemeral-storage, hugepages-<size> "
            "or a domain-qualified name such as example.com/device)"
            for name in sorted({*self.requests, *self.limits})
            if not _resource_name_ok(name)
        ]
        for name, requested in sorted(self.requests.items()):
            limit = self.limits.get(name)
            if limit is not None and parse_quantity(requested) > parse_quantity(limit):
                problems.append(f"requests.{name} ({requested}) exceeds limits.{name} ({limit})")
            if _needs_equal_limit(name) and (
                limit is None or parse_quantity(requested) != parse_quantity(limit)
            ):
                problems.append(
                    f"{name} cannot be overcommitted: set limits.{name} equal to the request"
                )
        if problems:
            raise ValueError("runtime.resources: " + "; ".join(problems))
        return self


ENV_VAR_SOURCES = ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")


class EnvVar(ApiModel):
    """An extra environment variable of the runtime container."""

    name: str = Field(
        min_length=1, max_length=256, pattern=ENV_NAME_PATTERN, description="Variable name."
    )
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes EnvVarSource: exactly one of secretKeyRef, configMapKeyRef, "
        "fieldRef or resourceFieldRef.",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> EnvVar:
        _raise_broken(
            [(cel.ENV_VALUE_XOR_VALUE_FROM, self.value is None or self.value_from is None)]
        )
        if self.value_from is not None and (
            len(self.value_from) != 1 or not set(self.value_from) <= set(ENV_VAR_SOURCES)
        ):
            raise ValueError(
                f"runtime.env {self.name}: valueFrom takes exactly one of "
                f"{', '.join(ENV_VAR_SOURCES)}"
            )
        return self


RUNTIME_ENV_PREFIX = "VOICEFLEET_"
API_PROCESSES_ENV = "VOICEFLEET_API_PROCESSES"


def _runtime_setting_problem(variable: EnvVar) -> str | None:
    """Why the runtime would refuse this VOICEFLEET_* variable at start-up (or ignore it)."""
    field = variable.name.upper().removeprefix(RUNTIME_ENV_PREFIX).lower()
    if field not in RuntimeSettings.model_fields:
        return f"{variable.name} is not a runtime setting (a typo would be ignored silently)"
    if variable.value is None:
        return None  # from a Secret or ConfigMap: only the pod can read it
    try:
        # model_validate reads no environment: only this one value is checked.
        RuntimeSettings.model_validate({field: variable.value})
    except ValidationError as error:
        if not _valid_as_json(field, variable.value):  # list settings arrive as JSON
            reason = error.errors()[0]["msg"]
            return f"{variable.name}={variable.value!r} would stop the runtime: {reason}"
    return None


def _valid_as_json(field: str, text: str) -> bool:
    try:
        RuntimeSettings.model_validate({field: json.loads(text)})
    except ValueError:  # not JSON, or still invalid (ValidationError is a ValueError)
        return False
    return True


class RuntimeSpec(ApiModel):
    """The inference server in each pod (its VOICEFLEET_* settings)."""

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Container image running `voicefleet serve`; default: the operator's "
        "default runtime image (the chart's operator.defaultRuntimeImage).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="CPU and memory requests and limits of the runtime container. Without "
        "memory, request and limit come from the runtime's memory budget; without CPU, a GPU "
        "pod requests a core plus one per upload-decoding process (torch engine: 2 per GPU), "
        "and VOICEFLEET_DECODE_PROCESSES follows the CPUs given.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables (for example other VOICEFLEET_* settings); "
        "variables derived from the spec may not be overridden.",
    )
    port: int = Field(default=8000, ge=1024, le=65535, description="Port the server listens on.")
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Requests the engine runs at once; default: 64 per GPU for the torch "
        "engine on GPUs (its continuous batching decodes them as one batch), else 1.",
    )
    queue_size: int | None = Field(
        default=None,
        ge=0,
        le=10000,
        description="Requests that may wait per pod, beyond it: 429; default: as many as "
        "run at once for the batched torch engine on GPUs, else 16.",
    )
    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1024,
        le=2 * 1024 * 1024 * 1024,
        description="Largest request body accepted; beyond it: 413.",
    )
    max_audio_seconds: int = Field(
        default=1800,
        ge=1,
        le=14400,
        description="Longest audio accepted, in seconds; beyond it: 413.",
    )
    beam_size: int = Field(default=5, ge=1, le=20, description="Beam size for decoding.")
    vad: VadMode = Field(
        default="auto", description="Voice activity detection: auto (long audio only), on or off."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the bearer token clients must send; mounted as a file.",
    )
    startup_timeout_seconds: int | None = Field(
        default=None,
        ge=30,
        le=7200,
        description="How long a pod may take to load and warm up the model before it is "
        "restarted; default: derived from the model size.",
    )
    drain_seconds: int | None = Field(
        default=None,
        ge=0,
        le=14400,
        description="How long accepted requests may run after SIGTERM; default: "
        "maxAudioSeconds times a conservative real-time factor (0.25 on GPU, 1 on CPU).",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> RuntimeSpec:
        reserved = set(cel.OPERATOR_ENV_NAMES)
        _raise_broken([(cel.ENV_NOT_OPERATOR_OWNED, not any(e.name in reserved for e in self.env))])
        problems = [
            problem
            for variable in self.env
            if variable.name.upper().startswith(RUNTIME_ENV_PREFIX)
            and (problem := _runtime_setting_problem(variable)) is not None
        ]
        if problems:
            raise ValueError("runtime.env: " + "; ".join(problems))
        return self


# --- service and pod overrides --------------------------------------------------------------


class ServiceSpec(ApiModel):
    """The Service in front of the pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Kubernetes Service type."
    )
    port: int = Field(default=80, ge=1, le=65535, description="Port of the Service (named http).")
    annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Annotations of the Service (for example for a cloud load balancer).",
    )

    @model_validator(mode="after")
    def _check_annotations(self) -> ServiceSpec:
        _check_annotations("service.annotations", self.annotations)
        return self


class Toleration(ApiModel):
    """A Kubernetes toleration."""

    key: str | None = Field(
        default=None,
        max_length=317,
        pattern=LABEL_KEY_PATTERN,
        description="Taint key (a label key); absent with Exists matches every taint.",
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="Taint value for Equal (a label value).",
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty: all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound after the taint."
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Toleration:
        _raise_broken(
            [
                (
                    cel.TOLERATION_EMPTY_KEY_NEEDS_EXISTS,
                    bool(self.key) or self.operator == "Exists",
                ),
                (
                    cel.TOLERATION_EXISTS_HAS_NO_VALUE,
                    self.operator != "Exists" or not self.value,
                ),
                (
                    cel.TOLERATION_SECONDS_ONLY_NO_EXECUTE,
                    self.toleration_seconds is None or self.effect == "NoExecute",
                ),
            ]
        )
        if self.key:
            _check_label_keys("pod.tolerations key", {self.key: ""})
        return self


class PodOverrides(ApiModel):
    """Pod template settings merged into what the operator builds."""

    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra node labels the pods require (added to the GPU product selector).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Extra tolerations (the nvidia.com/gpu toleration is added for GPU pods).",
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="A Kubernetes Affinity (nodeAffinity, podAntiAffinity, ...)."
    )
    priority_class_name: ResourceName | None = Field(
        default=None, description="PriorityClass of the pods."
    )
    runtime_class_name: ResourceName | None = Field(
        default=None, description="RuntimeClass of the pods (such as nvidia)."
    )
    service_account_name: ResourceName | None = Field(
        default=None, description="ServiceAccount of the pods; its token is never mounted."
    )
    image_pull_secrets: list[ResourceName] = Field(
        default_factory=list, max_length=16, description="Names of image pull Secrets."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Extra pod annotations."
    )
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra pod labels (not voicefleet.io/* nor the selector labels).",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> PodOverrides:
        reserved = set(cel.RESERVED_LABEL_KEYS)
        _raise_broken(
            [
                (
                    cel.LABELS_NOT_RESERVED,
                    not any(
                        k.startswith(cel.RESERVED_LABEL_PREFIX) or k in reserved
                        for k in self.labels
                    ),
                ),
            ]
        )
        _check_label_keys("pod.nodeSelector", self.node_selector)
        _check_label_keys("pod.labels", self.labels)
        _check_annotations("pod.annotations", self.annotations)
        return self


# --- the spec -------------------------------------------------------------------------------


def _known_voice(voice: str) -> str:
    if voice not in ENGLISH_VOICES:
        raise ValueError(f"{voice!r} is not a Kokoro English voice ({', '.join(ENGLISH_VOICES)})")
    return voice


KokoroVoice = Annotated[
    str,
    AfterValidator(_known_voice),
    WithJsonSchema({"type": "string", "enum": list(ENGLISH_VOICES)}),
]
"""A Kokoro voice id; the CRD lists them, so the API server refuses a typo at admission."""


class TextToSpeechSpec(ApiModel):
    """Text-to-speech (OpenAI's /v1/audio/speech) in the same pods, beside speech-to-text or
    alone. Kokoro-82M runs on the pods' CPUs (onnxruntime) or, with engine torch, on the GPU."""

    model: Annotated[TtsModel, WithJsonSchema({"type": "string", "enum": ["kokoro"]})] = Field(
        default="kokoro", description="The TTS model: kokoro (Kokoro-82M)."
    )
    voices: list[KokoroVoice] = Field(
        default_factory=list,
        max_length=len(ENGLISH_VOICES),
        description="Kokoro voice ids to load and offer (af_heart, am_onyx, ...); empty: all "
        "28 English voices. OpenAI's voice names map onto the loaded ones.",
    )
    default_format: SpeechFormat = Field(
        default="mp3",
        description="response_format when a request leaves it out: mp3, opus, aac, flac, wav "
        "or pcm.",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="onnxruntime threads per synthesis; runtime.concurrency requests "
        "synthesise at once.",
    )
    engine: TtsBackend = Field(
        default="onnx",
        description="onnx: the int8 model on the CPUs (onnxruntime); torch: the same model "
        "converted to PyTorch at load, on the pod's GPU when it has one (needs an image with "
        "the torch extra, as engine torch does).",
    )


class VoiceServiceSpec(ApiModel):
    """The desired state of a speech service: speech-to-text, text-to-speech, or both."""

    task: Task = Field(
        default="transcribe",
        description="What the legacy POST /transcribe endpoint does: transcribe or translate "
        "(to English). The OpenAI-compatible endpoints serve both.",
    )
    model: ModelSpec | None = Field(
        default=None,
        description="The Whisper model (speech-to-text) and where its weights come from; "
        "omit for a text-to-speech-only service.",
    )
    tts: TextToSpeechSpec | None = Field(
        default=None, description="Text-to-speech on the same pods; absent: none."
    )
    engine: Engine = Field(
        default="faster-whisper", description="Inference backend: faster-whisper or torch."
    )
    precision: Precision = Field(
        default="auto",
        description="Compute type: auto, float32, float16, bfloat16, int8, int8_float16, "
        "int8_bfloat16, int8_float32. float16, bfloat16 and the int8_*16 types need a GPU.",
    )
    gpu: GpuSpec | None = Field(default=None, description="GPUs per pod; absent: a CPU service.")
    replicas: ReplicasSpec = Field(
        default_factory=ReplicasSpec, description="Bounds (or a fixed count) of the pod count."
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="How the pod count follows the load."
    )
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec, description="Image, resources and server settings."
    )
    service: ServiceSpec = Field(
        default_factory=ServiceSpec, description="The Service in front of the pods."
    )
    pod: PodOverrides = Field(
        default_factory=PodOverrides,
        description="Pod template overrides: nodeSelector, tolerations, affinity, ...",
    )

    @model_validator(mode="after")
    def _check_rules(self) -> VoiceServiceSpec:
        _raise_broken(
            [
                (cel.SERVES_A_DIRECTION, self.model is not None or self.tts is not None),
                (
                    cel.FIXED_EXCLUDES_AUTOSCALING,
                    self.replicas.fixed is None or self.autoscaling.mode == "off",
                ),
                (
                    cel.PRECISION_RUNS_ON_ENGINE_AND_DEVICE,
                    runs(self.engine, "cpu" if self.gpu is None else "cuda", self.precision),
                ),
                (
                    cel.CPU_FALLBACK_PRECISION,
                    self.gpu is None
                    or all(
                        runs(self.engine, "cpu", f.cpu.precision)
                        for f in self.gpu.fallbacks
                        if f.cpu is not None
                    ),
                ),
                (
                    cel.TRANSLATE_NEEDS_MULTILINGUAL,
                    self.task != "translate"
                    or self.model is None
                    or not self.model.name.endswith(ENGLISH_ONLY_SUFFIX),
                ),
                (
                    cel.VAD_NEEDS_AN_ENGINE_WITH_VAD,
                    ENGINE_CAPABILITIES[self.engine].vad or self.runtime.vad != "on",
                ),
                (
                    cel.SCHEDULE_WITHIN_MAX,
                    all(w.min_replicas <= self.replicas.max for w in self.autoscaling.schedule),
                ),
            ]
        )
        gpu_resources = self._gpu_resource_names()
        claimed = sorted(
            gpu_resources & {*self.runtime.resources.requests, *self.runtime.resources.limits}
        )
        if claimed:
            raise ValueError(
                f"runtime.resources may not name {', '.join(claimed)}: spec.gpu sets the GPU "
                "resources of each placement"
            )
        if self.tts is not None and self.api_processes() > 1:
            # The runtime refuses the pair at start-up; a pod that cannot start says so late.
            raise ValueError(
                f"runtime.env {API_PROCESSES_ENV} above 1 serves speech-to-text only, and this "
                "service has tts: serve text-to-speech from another VoiceService"
            )
        return self

    def api_processes(self) -> int:
        """The runtime's VOICEFLEET_API_PROCESSES from runtime.env (each value is checked
        against the runtime's settings by RuntimeSpec); 1 when unset or from a Secret: one
        process serves HTTP and runs the engine."""
        for variable in self.runtime.env:
            if variable.name == API_PROCESSES_ENV and variable.value is not None:
                return int(variable.value)
        return 1

    def served_models(self) -> str:
        """The models the pods serve, as status shows them: large-v3, kokoro, tiny.en+kokoro."""
        names = [self.model.name if self.model else "", self.tts.model if self.tts else ""]
        return "+".join(name for name in names if name)

    def _gpu_resource_names(self) -> set[str]:
        if self.gpu is None:
            return set()
        names = {self.gpu.resource_name}
        names.update(f.resource_name for f in self.gpu.fallbacks if f.resource_name)
        return names


# --- status ---------------------------------------------------------------------------------


class Condition(ApiModel):
    """A metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=316, description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set from."
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed status.",
        json_schema_extra={"format": "date-time"},
    )
    reason: str = Field(
        max_length=1024, description="CamelCase reason for the condition's last transition."
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")


class FallbackStatus(ApiModel):
    """Which placement candidate ([gpu, *gpu.fallbacks]) the pods use now."""

    model_config = ConfigDict(extra="ignore")

    index: int = Field(default=0, ge=0, description="0: spec.gpu; n: gpu.fallbacks[n-1].")
    unschedulable_since: datetime | None = Field(
        default=None, description="Since when pods of the current candidate are unschedulable."
    )


class VoiceServiceStatus(ApiModel):
    """What the operator observes."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status describes."
    )
    phase: Literal["Pending", "Progressing", "Ready", "Degraded"] | None = Field(
        default=None, description="Summary: Pending, Progressing, Ready or Degraded."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready, Progressing and Degraded conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(default=None, description="Pods of the current Deployment.")
    ready_replicas: int | None = Field(default=None, description="Pods that are ready.")
    ready: str | None = Field(default=None, description="readyReplicas/replicas, for kubectl get.")
    selector: str | None = Field(
        default=None, description="Label selector of the pods (for the scale subresource)."
    )
    endpoint: str | None = Field(default=None, description="In-cluster URL of the service.")
    model: str | None = Field(default=None, description="Model the pods run.")
    precision: str | None = Field(default=None, description="Precision the pods run.")
    gpu: str | None = Field(
        default=None, description="GPU type the pods are scheduled for (any, a product, or cpu)."
    )
    fallback: FallbackStatus | None = Field(
        default=None, description="The placement candidate in use (GPU fallbacks)."
    )
    autoscaler: dict[str, Any] | None = Field(
        default=None, description="State and decisions of the builtin autoscaler (owned by it)."
    )


# --- the object -----------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta the operator reads; everything else is kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class VoiceService(ApiModel):
    """A fleet of speech-to-text pods serving one Whisper model."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["voicefleet.io/v1alpha1"] = "voicefleet.io/v1alpha1"
    kind: Literal["VoiceService"] = "VoiceService"
    metadata: ObjectMeta
    spec: VoiceServiceSpec
    status: VoiceServiceStatus | None = None

    @model_validator(mode="after")
    def _check_rules(self) -> VoiceService:
        name = self.metadata.name
        _raise_broken([(cel.NAME_FITS_A_LABEL, len(name) <= 63)])
        if not is_dns_label(name):
            raise ValueError(
                f"metadata.name {name!r} must be a DNS label (lowercase letters, digits and '-', "
                "starting with a letter): the Service takes it"
            )
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


class InvalidVoiceServiceError(ValueError):
    """A VoiceService that breaks the API's rules; the message lists every problem."""


def describe_errors(error: ValidationError) -> str:
    """Each problem with its camelCase YAML path, readable by people: one problem on the same
    line, several as a list with one line each."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(object)"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    if len(lines) == 1:
        return f" {lines[0]}"
    return "".join(f"\n- {line}" for line in lines)


def parse_voiceservice(body: Mapping[str, Any]) -> VoiceService:
    """Validate a VoiceService body (as kopf or a YAML file gives it)."""
    try:
        return VoiceService.model_validate(dict(body))
    except ValidationError as error:
        name = body.get("metadata", {}).get("name", "?") if isinstance(body, Mapping) else "?"
        raise InvalidVoiceServiceError(
            f"VoiceService {name} is invalid:{describe_errors(error)}"
        ) from error
