"""The Deployment of runtime pods: GPU placement, runtime settings, probes, draining, security."""

from __future__ import annotations

import json
import math
from typing import Any

from voicefleet_operator.builders.cpu import (
    cpu_env,
    decode_processes,
    default_cpu_request,
)
from voicefleet_operator.builders.labels import (
    MODEL_REVISION_ANNOTATION,
    PLACEMENT_ANNOTATION,
    child_metadata,
    common_labels,
    selector_labels,
)
from voicefleet_operator.builders.placement import Placement, placement_for
from voicefleet_operator.crd import cel
from voicefleet_operator.crd.models import (
    DEFAULT_RUNTIME_IMAGE,
    ModelSpec,
    TextToSpeechSpec,
    VoiceService,
    VoiceServiceSpec,
)
from voicefleet_runtime.memory_budget import memory_budget
from voicefleet_runtime.routes import HEALTH_PATH, METRICS_PATH, READY_PATH
from voicefleet_runtime.settings import RuntimeSettings

CONTAINER_NAME = "runtime"
PORT_NAME = "http"
MODEL_DIR = "/models"
TMP_DIR = "/tmp"  # noqa: S108  (an emptyDir: the root filesystem is read-only)
API_KEY_DIR = "/var/run/secrets/voicefleet"
RUN_AS_USER = 10001

GPU_TOLERATION_KEY = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

PRE_STOP_SECONDS = 5
"""Long enough for endpoint controllers and kube-proxy to drop the pod before SIGTERM."""
GRACE_MARGIN_SECONDS = 10
"""Time to flush logs and close sockets after the last request finished."""
GPU_REAL_TIME_FACTOR = 0.25
CPU_REAL_TIME_FACTOR = 1.0
"""Pessimistic processing seconds per audio second: the largest models, a busy device."""

STARTUP_PERIOD_SECONDS = 10
MODEL_SIZES_GB = {
    "tiny": 0.08,
    "base": 0.15,
    "small": 0.5,
    "medium": 1.5,
    "large": 3.1,
    "distil-small": 0.33,
    "distil-medium": 0.8,
    "distil-large": 1.5,
    "turbo": 1.6,
}
KOKORO_SIZE_GB = 0.1
"""Kokoro-82M int8 ONNX (92 MB) and its voices, loaded and warmed up beside any Whisper."""
KOKORO_RESIDENT_MIB = 256
"""Kokoro's share of a runtime process: a TTS-only server measured 452 MiB resident after
warm-up (bench/tts_throughput.py) against the 320 MiB of an idle runtime; the rest is headroom
for onnxruntime's arenas."""
TTS_REQUEST_MIB = 64
"""One synthesis at the longest input (4096 characters, about 5 minutes of 24 kHz float32
audio) and its encoded copy."""
UNKNOWN_MODEL_SIZE_GB = 3.1
"""A path or an unknown name may be anything: size the probe for the largest Whisper."""


def model_size_gb(name: str) -> float:
    """Approximate weight size of a Whisper model by name (tiny.en, large-v3, ...)."""
    stem = name.removesuffix(".en").lower()
    if "turbo" in stem:
        return MODEL_SIZES_GB["turbo"]
    for prefix in sorted(MODEL_SIZES_GB, key=len, reverse=True):
        if stem == prefix or stem.startswith(prefix + "-"):
            return MODEL_SIZES_GB[prefix]
    return UNKNOWN_MODEL_SIZE_GB


def startup_timeout_seconds(spec: VoiceServiceSpec, placement: Placement) -> int:
    """Load plus warm-up time allowed before the kubelet restarts the pod.

    Reading weights runs at disk/network-volume speed (budget ~10 s per GB, times 10 for
    slow PVCs) and a CPU warm-up of a large model takes minutes, hence the generous factors.
    """
    if spec.runtime.startup_timeout_seconds is not None:
        return spec.runtime.startup_timeout_seconds
    per_gb = 100 if placement.gpu else 300
    size = model_size_gb(spec.model.name) if spec.model is not None else 0.0
    if spec.tts is not None:
        size += KOKORO_SIZE_GB
    return max(120, 60 + math.ceil(size * per_gb))


def drain_seconds(spec: VoiceServiceSpec, placement: Placement) -> int:
    """How long the longest accepted request may still need after SIGTERM."""
    if spec.runtime.drain_seconds is not None:
        return spec.runtime.drain_seconds
    factor = GPU_REAL_TIME_FACTOR if placement.gpu else CPU_REAL_TIME_FACTOR
    return math.ceil(spec.runtime.max_audio_seconds * factor)


def termination_grace_seconds(spec: VoiceServiceSpec, placement: Placement) -> int:
    return PRE_STOP_SECONDS + drain_seconds(spec, placement) + GRACE_MARGIN_SECONDS


def runtime_image(spec: VoiceServiceSpec) -> str:
    """The spec's image; the operator fills in its configured default before building."""
    return spec.runtime.image or DEFAULT_RUNTIME_IMAGE


def download_repository(model: ModelSpec) -> str:
    download = model.download
    if download is not None and download.repository:
        return download.repository
    name = model.name
    owner, prefix = cel.DERIVED_REPOSITORY_OWNER, cel.DERIVED_REPOSITORY_PREFIX
    if name.startswith("distil-"):
        return f"{owner}/faster-distil-whisper-{name.removeprefix('distil-')}"
    return f"{owner}/{prefix}{name}"


BATCHED_REQUESTS_PER_GPU = 64
"""Requests one GPU's continuous batching loop decodes at once (bench/results/
batching-notes.md, H200): tiny.en levels off from 32 clients (3.6k audio s/s) to 128
(3.8k), while a large-v3-shaped model still gains from 32 (1.1k) to 64 (1.3k); 64 keeps
large models' GPUs full, and beyond it requests wait in the queue the autoscaler reads
instead of stretching every request's latency. It is also the engine's default decode batch
(VOICEFLEET_BATCH_MAX_SEQUENCES)."""
SEQUENTIAL_QUEUE_SIZE = 16


def runtime_slots(spec: VoiceServiceSpec, placement: Placement) -> tuple[int, int]:
    """(concurrency, queue size): the spec's, or the defaults for this engine and device."""
    batched = placement.gpu and spec.engine == "torch"
    concurrency = spec.runtime.concurrency or (
        BATCHED_REQUESTS_PER_GPU * placement.count if batched else 1
    )
    queue_size = spec.runtime.queue_size
    if queue_size is None:
        queue_size = concurrency if batched else SEQUENTIAL_QUEUE_SIZE
    return concurrency, queue_size


def runtime_env(spec: VoiceServiceSpec, placement: Placement) -> list[dict[str, Any]]:
    """The VOICEFLEET_* settings of the runtime, then the spec's extra env."""
    concurrency, queue_size = runtime_slots(spec, placement)
    settings: dict[str, str] = (
        {"VOICEFLEET_MODEL": spec.model.name}
        if spec.model is not None
        else {"VOICEFLEET_STT_ENABLED": "false"}
    )
    settings |= {
        "VOICEFLEET_ENGINE": spec.engine,
        "VOICEFLEET_DEVICE": placement.device,
        "VOICEFLEET_PRECISION": placement.precision,
        "VOICEFLEET_TASK": spec.task,
        "VOICEFLEET_PORT": str(spec.runtime.port),
        "VOICEFLEET_BEAM_SIZE": str(spec.runtime.beam_size),
        "VOICEFLEET_VAD": spec.runtime.vad,
        "VOICEFLEET_CONCURRENCY": str(concurrency),
        "VOICEFLEET_QUEUE_SIZE": str(queue_size),
        "VOICEFLEET_MAX_UPLOAD_BYTES": str(spec.runtime.max_upload_bytes),
        "VOICEFLEET_MAX_AUDIO_SECONDS": str(spec.runtime.max_audio_seconds),
        "VOICEFLEET_SHUTDOWN_GRACE_SECONDS": str(drain_seconds(spec, placement)),
    }
    if spec.tts is not None:
        settings |= tts_env(spec.tts, gpu=placement.gpu)
    if spec.model is not None and spec.model.source != "image":
        settings["VOICEFLEET_MODEL_DIR"] = MODEL_DIR
    settings |= cpu_env(spec, placement)
    if spec.runtime.api_key_secret_ref is not None:
        settings["VOICEFLEET_API_KEY_FILE"] = f"{API_KEY_DIR}/{spec.runtime.api_key_secret_ref.key}"
    # A read-only root filesystem: caches (assembled models, Hugging Face) go to the /tmp volume.
    settings["HOME"] = TMP_DIR
    settings["XDG_CACHE_HOME"] = f"{TMP_DIR}/.cache"
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in settings.items()]
    for extra in spec.runtime.env:
        env.append(extra.model_dump(exclude_none=True, by_alias=True))
    return env


def tts_env(tts: TextToSpeechSpec, *, gpu: bool) -> dict[str, str]:
    env = {
        "VOICEFLEET_TTS_MODEL": tts.model,
        "VOICEFLEET_TTS_DEFAULT_FORMAT": tts.default_format,
        "VOICEFLEET_TTS_THREADS": str(tts.threads),
        "VOICEFLEET_TTS_ENGINE": tts.engine,
    }
    if tts.engine == "torch":
        env["VOICEFLEET_TTS_DEVICE"] = "cuda" if gpu else "cpu"
    if tts.voices:
        env["VOICEFLEET_TTS_VOICES"] = json.dumps(tts.voices)
    return env


def restricted_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def default_memory_mib(spec: VoiceServiceSpec, placement: Placement) -> int:
    """The runtime's own memory budget for this spec (voicefleet_runtime.memory_budget):
    runtime, model, per-request peaks and spooled uploads. Settings a spec cannot change
    (upload places, the batching threshold) take the runtime's defaults."""
    defaults = RuntimeSettings.model_fields
    batched_from = defaults["batched_min_audio_seconds"].default
    concurrency, queue_size = runtime_slots(spec, placement)
    budget = memory_budget(
        engine=spec.engine,
        gpu=placement.gpu,
        model_weights_mib=model_size_gb(spec.model.name) * 1024 if spec.model else 0.0,
        concurrency=concurrency,
        queue_size=queue_size,
        max_uploads_in_progress=defaults["max_uploads_in_progress"].default,
        max_audio_seconds=spec.runtime.max_audio_seconds,
        batched_min_audio_seconds=None if spec.engine == "torch" else batched_from,
        decode_processes=decode_processes(spec, placement),
        api_processes=spec.api_processes(),
    )
    if spec.tts is None:
        return budget.total_mib
    return budget.total_mib + KOKORO_RESIDENT_MIB + TTS_REQUEST_MIB * concurrency


def _resources(spec: VoiceServiceSpec, placement: Placement) -> dict[str, Any]:
    requests = dict(spec.runtime.resources.requests)
    limits = dict(spec.runtime.resources.limits)
    if "memory" not in requests and "memory" not in limits:
        # Request what the budget says the process can reach: no OOM kill, no overcommit.
        memory = f"{default_memory_mib(spec, placement)}Mi"
        requests["memory"] = memory
        limits["memory"] = memory
    cpu = default_cpu_request(spec, placement)
    if cpu is not None:
        # A request and no limit: the cores are the pod's, idle ones beside them too.
        requests["cpu"] = cpu
    if placement.gpu and placement.resource_name is not None:
        # Extended resources cannot be overcommitted: the limit is also the request.
        limits[placement.resource_name] = str(placement.count)
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def _probes(spec: VoiceServiceSpec, placement: Placement) -> dict[str, Any]:
    startup_failures = math.ceil(startup_timeout_seconds(spec, placement) / STARTUP_PERIOD_SECONDS)
    return {
        "startupProbe": {
            "httpGet": {"path": READY_PATH, "port": PORT_NAME},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failures,
        },
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def _volumes(spec: VoiceServiceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes of the pod and mounts of the runtime container."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP_DIR}]
    model = spec.model
    if model is not None and model.source == "pvc" and model.pvc is not None:
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": model.pvc.claim_name, "readOnly": True},
            }
        )
        mount: dict[str, Any] = {"name": "models", "mountPath": MODEL_DIR, "readOnly": True}
        if model.pvc.sub_path:
            mount["subPath"] = model.pvc.sub_path
        mounts.append(mount)
    elif model is not None and model.source == "download":
        size = model.download.cache_size if model.download is not None else "10Gi"
        volumes.append({"name": "models", "emptyDir": {"sizeLimit": size}})
        mounts.append({"name": "models", "mountPath": MODEL_DIR, "readOnly": True})
    secret_ref = spec.runtime.api_key_secret_ref
    if secret_ref is not None:
        volumes.append(
            {
                "name": "api-key",
                "secret": {
                    "secretName": secret_ref.name,
                    "items": [{"key": secret_ref.key, "path": secret_ref.key}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})
    return volumes, mounts


def _download_init_container(spec: VoiceServiceSpec, model: ModelSpec) -> dict[str, Any]:
    """Fetch the weights with the Hugging Face CLI that the runtime image already ships."""
    command = [
        "hf",
        "download",
        download_repository(model),
        "--local-dir",
        f"{MODEL_DIR}/{model.name}",
    ]
    if model.revision:
        command += ["--revision", model.revision]
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": TMP_DIR},
        {"name": "HF_HOME", "value": f"{TMP_DIR}/hf"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    download = model.download
    if download is not None and download.hf_token_secret_ref is not None:
        ref = download.hf_token_secret_ref
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    return {
        "name": "download-model",
        "image": runtime_image(spec),
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": command,
        "env": env,
        "volumeMounts": [
            {"name": "tmp", "mountPath": TMP_DIR},
            {"name": "models", "mountPath": MODEL_DIR},
        ],
        "securityContext": restricted_security_context(),
    }


def _node_selector(spec: VoiceServiceSpec, placement: Placement) -> dict[str, str]:
    selector = dict(spec.pod.node_selector)
    if placement.gpu_type is not None:
        selector[GPU_PRODUCT_LABEL] = placement.gpu_type
    return selector


def _tolerations(spec: VoiceServiceSpec, placement: Placement) -> list[dict[str, Any]]:
    tolerations = [t.model_dump(exclude_none=True, by_alias=True) for t in spec.pod.tolerations]
    if placement.gpu:
        tolerations.insert(
            0, {"key": GPU_TOLERATION_KEY, "operator": "Exists", "effect": "NoSchedule"}
        )
    return tolerations


def _pod_metadata(vs: VoiceService, placement_index: int) -> dict[str, Any]:
    spec = vs.spec
    labels = {**spec.pod.labels, **common_labels(vs)}
    annotations = {
        **spec.pod.annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.runtime.port),
        "prometheus.io/path": METRICS_PATH,
        PLACEMENT_ANNOTATION: str(placement_index),
    }
    if spec.model is not None and spec.model.revision:
        annotations[MODEL_REVISION_ANNOTATION] = spec.model.revision
    return {"labels": labels, "annotations": annotations}


def build_pod_spec(vs: VoiceService, placement: Placement) -> dict[str, Any]:
    spec = vs.spec
    volumes, mounts = _volumes(spec)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": runtime_image(spec),
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": ["voicefleet", "serve"],
        "ports": [{"name": PORT_NAME, "containerPort": spec.runtime.port, "protocol": "TCP"}],
        "env": runtime_env(spec, placement),
        "resources": _resources(spec, placement),
        **_probes(spec, placement),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "volumeMounts": mounts,
        "securityContext": restricted_security_context(),
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": termination_grace_seconds(spec, placement),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.model is not None and spec.model.source == "download":
        pod["initContainers"] = [_download_init_container(spec, spec.model)]
    node_selector = _node_selector(spec, placement)
    if node_selector:
        pod["nodeSelector"] = node_selector
    tolerations = _tolerations(spec, placement)
    if tolerations:
        pod["tolerations"] = tolerations
    overrides = spec.pod
    if overrides.affinity:
        pod["affinity"] = overrides.affinity
    if overrides.priority_class_name:
        pod["priorityClassName"] = overrides.priority_class_name
    if overrides.runtime_class_name:
        pod["runtimeClassName"] = overrides.runtime_class_name
    if overrides.service_account_name:
        pod["serviceAccountName"] = overrides.service_account_name
    if overrides.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in overrides.image_pull_secrets]
    return pod


def initial_replicas(spec: VoiceServiceSpec) -> int:
    """The count a new Deployment starts with (render and the operator alike): the fixed
    count, else the floor; afterwards the autoscaler (or `kubectl scale`) owns it."""
    return spec.replicas.fixed if spec.replicas.fixed is not None else spec.replicas.min


def build_deployment(
    vs: VoiceService, *, replicas: int | None, placement_index: int = 0
) -> dict[str, Any]:
    """The Deployment for candidate `placement_index` of [gpu, *gpu.fallbacks].

    `replicas=None` leaves spec.replicas out, so applying this never overwrites the count the
    autoscaler (or `kubectl scale`) set on the live object.
    """
    placement = placement_for(vs.spec, placement_index)
    metadata = child_metadata(vs)
    metadata["annotations"][PLACEMENT_ANNOTATION] = str(placement_index)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(vs)},
        "revisionHistoryLimit": 3,
        # A new pod must load its model before it counts: keep old pods until it is ready.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "progressDeadlineSeconds": startup_timeout_seconds(vs.spec, placement) + 300,
        "template": {
            "metadata": _pod_metadata(vs, placement_index),
            "spec": build_pod_spec(vs, placement),
        },
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}
