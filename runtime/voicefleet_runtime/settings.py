"""Runtime settings, read from `VOICEFLEET_*` environment variables.

The operator configures pods through these variables, so the field names here are an API:
`VOICEFLEET_<FIELD NAME IN UPPER CASE>`. Renaming a field breaks running fleets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voicefleet_runtime.cpu_budget import AUTO_MAX_DECODE_PROCESSES
from voicefleet_runtime.engine.batching import BatchedMode
from voicefleet_runtime.tts.assets import DEFAULT_ASSETS_DIR
from voicefleet_runtime.tts.formats import SpeechFormat

Engine = Literal["faster-whisper", "torch"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal[
    "auto",
    "float32",
    "float16",
    "bfloat16",
    "int8",
    "int8_float16",
    "int8_bfloat16",
    "int8_float32",
]
Task = Literal["transcribe", "translate"]
TtsModel = Literal["kokoro"]
TtsBackend = Literal["onnx", "torch"]
TtsPrecision = Literal["float32", "float16", "bfloat16"]
Switch = Literal["auto", "on", "off"]
"""On, off, or auto: the runtime decides (each setting says how)."""
VadMode = Switch


def on_gpu_unless_off(mode: Switch, device: str) -> bool:
    """A switch whose auto means on where the device is (or resolves to) cuda: features that
    pay on GPUs only."""
    if mode != "auto":
        return mode == "on"
    if device == "auto":
        import torch  # only asked on the torch paths; faster-whisper servers never import it

        return bool(torch.cuda.is_available())
    return device.startswith("cuda")


class RuntimeSettings(BaseSettings):
    # hide_input_in_errors: a start-up validation error must never echo a value (the API key).
    model_config = SettingsConfigDict(
        env_prefix="VOICEFLEET_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    host: str = Field("0.0.0.0", description="Address the HTTP server binds.")  # noqa: S104
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server binds.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the server."
    )

    model: str = Field("tiny.en", description="Model name (tiny.en, base, large-v3, ...) or path.")
    model_dir: Path | None = Field(
        None,
        description="A model cache folder searched first for a named model "
        "(<model_dir>/<name> or <model_dir>/faster-whisper-<name>); in pods, the mounted cache.",
    )
    served_model_names: tuple[str, ...] = Field(
        ("whisper-1",),
        description="Extra names clients may send as `model` for the loaded model; "
        "whisper-1 keeps OpenAI clients working unchanged.",
    )
    engine: Engine = Field("faster-whisper", description="Inference backend.")
    device: Device = Field("auto", description="cuda when a GPU is visible under auto.")
    precision: Precision = Field(
        "auto",
        description="CTranslate2 compute type; unsupported on the device is a startup error.",
    )
    cpu_threads: int = Field(
        0, ge=0, description="Threads per CPU inference; 0 lets the engine pick."
    )
    num_workers: int = Field(
        1, ge=1, description="Model replicas inside the engine (parallel CTranslate2 workers)."
    )
    beam_size: int = Field(5, ge=1, le=20, description="Beam size for decoding.")
    vad: VadMode = Field(
        "auto", description="Voice activity detection: auto turns it on for long audio only."
    )
    vad_min_audio_seconds: float = Field(
        30.0, ge=0, description="With vad=auto, audio at least this long is VAD-filtered."
    )
    batched: BatchedMode = Field(
        "auto",
        description="Batched inference (BatchedInferencePipeline) for audio at least "
        "batched_min_audio_seconds long, faster-whisper engine: on, off, or auto = on for cpu "
        "and cuda (measured faster on CPU too: bench/batched_inference.py).",
    )
    batch_size: int = Field(
        8, ge=1, description="Chunks per batched decode for long audio (BatchedInferencePipeline)."
    )
    batched_min_audio_seconds: float = Field(
        60.0,
        ge=0,
        description="When batching is on, audio at least this long is batched; 0 disables it.",
    )
    continuous_batching: BatchedMode = Field(
        "auto",
        description="Torch engine: decode concurrent requests as one batch (a continuous "
        "batching loop per GPU, with word timestamps and VAD): on, off (sequential decoding, "
        "no word timestamps or VAD), or auto = on for cuda, off for cpu (where batching does "
        "not pay: bench/cpu_batching.py).",
    )
    batch_max_sequences: int = Field(
        64, ge=1, le=1024, description="Torch batching: windows decoded at once per GPU."
    )
    batch_memory_gib: float = Field(
        8.0,
        gt=0,
        description="Torch batching: key/value cache budget per GPU; the decode batch is what "
        "fits (at most batch_max_sequences), a request that does not fit waits.",
    )
    batch_windows_per_request: int = Field(
        8,
        ge=1,
        description="Torch batching: 30 s windows one request may decode at once while others "
        "wait, so a long file cannot starve short requests.",
    )
    batch_admission_wait_ms: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="Torch batching: while sequences decode, how long an arriving window may "
        "wait for others (up to 8) to share its encoder pass; 0 admits each at once.",
    )
    batch_compile_encoder: Switch = Field(
        "auto",
        description="Torch batching: torch.compile the encoder at load (fused norms and "
        "activations; tens of seconds more start-up): on, off, or auto = on for cuda.",
    )
    batch_float8_cross_attention: Switch = Field(
        "auto",
        description="Torch batching: keep the decoder's cross-attention keys and values as "
        "float8 (one scale per head), half the bytes each decode step reads, and run both of "
        "its attentions in a Triton kernel: on, off, or auto = on for GPUs of compute "
        "capability 8.9 or later (Ada, Hopper) where Triton builds and runs its kernels.",
    )
    batch_overlap_steps: Switch = Field(
        "auto",
        description="Torch batching: launch each decode step before reading the last one's "
        "tokens (the step feeds them forward on the device), so the host's bookkeeping runs "
        "while the GPU works: on, off, or auto = on for cuda.",
    )
    cuda_graphs: bool = Field(
        True, description="Torch batching: replay the decoder step as CUDA graphs."
    )
    decode_processes: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="Processes that decode uploads (0: each request's engine thread). auto = "
        f"one per available CPU but one (at most {AUTO_MAX_DECODE_PROCESSES}) when the engine "
        "batches requests in this process (the torch engine's continuous batching), else 0: "
        "decoding in threads holds the interpreter the batching loop needs.",
    )
    task: Task = Field("transcribe", description="What the legacy POST /transcribe endpoint does.")

    stt_enabled: bool = Field(
        True, description="Serve speech-to-text (`model`); false with tts_model set: TTS only."
    )
    tts_model: TtsModel | None = Field(
        None, description="Text-to-speech model to serve on /v1/audio/speech; none: no TTS."
    )
    tts_served_model_names: tuple[str, ...] = Field(
        ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"),
        description="Names clients may send as `model` for the TTS model (OpenAI's).",
    )
    tts_assets_dir: Path = Field(
        DEFAULT_ASSETS_DIR,
        description="Folder with Kokoro's voices/ and vocab.json "
        "(scripts/install_kokoro_assets.py fills it).",
    )
    tts_voices: tuple[str, ...] = Field(
        (), description="Kokoro voice ids to load and offer; empty: every installed voice."
    )
    tts_default_format: SpeechFormat = Field(
        "mp3", description="response_format when a speech request leaves it out."
    )
    tts_threads: int = Field(
        1, ge=1, description="onnxruntime threads per TTS inference (spinning is off)."
    )
    tts_engine: TtsBackend = Field(
        "onnx",
        description="TTS backend: onnx (the packaged int8 graph on onnxruntime's CPU kernels) "
        "or torch (the same weights, dequantised, in a native batched PyTorch Kokoro, for "
        "GPUs; needs the torch extra).",
    )
    tts_device: Device = Field(
        "auto", description="Device of the torch TTS backend; auto: cuda when a GPU is visible."
    )
    tts_precision: TtsPrecision = Field(
        "float32",
        description="Precision of the torch TTS backend's decoder and vocoder (the prosody "
        "predictor, which sets durations and pitch, stays float32).",
    )
    tts_compile: Switch = Field(
        "auto",
        description="Torch TTS backend: compile each instance norm and Snake activation into "
        "fused kernels (torch.compile; about 20 s more start-up on a GPU host, spent before "
        "/readyz turns ready): on, off, or auto = on for cuda, off for cpu (bench/tts_gpu.py).",
    )
    tts_max_batch: int = Field(
        32, ge=1, description="Torch TTS backend: most sentence chunks spoken in one batch."
    )
    tts_batch_wait_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="Torch TTS backend: how long a waiting chunk waits for others to batch with.",
    )

    cache_max_bytes: int = Field(
        0,
        ge=0,
        description="Byte budget of the in-process result cache (both directions); 0: no "
        "cache. Off by default: it keeps users' audio and transcripts in memory.",
    )
    cache_ttl_seconds: float = Field(
        3600.0, gt=0, description="How long a cached result stays valid."
    )
    cache_redis_url: SecretStr | None = Field(
        None,
        description="redis:// URL of a cache shared by the service's pods; unset: in-process "
        "only. Redis being down never fails a request.",
    )

    concurrency: int = Field(1, ge=1, description="Requests the engine runs at once.")
    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes that serve HTTP. Above 1, one more process holds the "
        "speech-to-text engine and the API processes reach it over a local socket, so their "
        "Python (HTTP, uploads, decoding, formatting) does not share the batching loop's "
        "interpreter lock. Each applies the admission limits (concurrency, queue_size, "
        "max_uploads_in_progress) to its own requests. Speech-to-text only.",
    )
    queue_size: int = Field(
        16, ge=0, description="Accepted requests that may wait for the engine; beyond it: 429."
    )
    max_upload_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="Largest request body accepted; beyond it: 413."
    )
    max_audio_seconds: float = Field(
        1800.0, gt=0, description="Longest audio accepted after decoding; beyond it: 413."
    )
    # What one client may cost before its request is accepted (README: "Hostile clients").
    upload_timeout_seconds: float = Field(
        300.0, gt=0, description="The whole request body must arrive within this; beyond it: 408."
    )
    upload_min_bytes_per_second: int = Field(
        4096,
        ge=0,
        description="Slowest average upload rate accepted once upload_rate_grace_seconds have "
        "passed (32 kbit/s: a poor mobile link still meets it); slower: 408. 0 turns it off.",
    )
    upload_rate_grace_seconds: float = Field(
        10.0, ge=0, description="Time an upload gets before its average rate is enforced."
    )
    max_uploads_in_progress: int = Field(
        128,
        ge=1,
        description="Request bodies being received at once; beyond it: 429. They hold no "
        "engine place: a request is admitted only once its body is complete.",
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A connection must send a request's headers within this."
    )
    keep_alive_timeout_seconds: int = Field(
        5, ge=1, description="An idle keep-alive connection is closed after this."
    )
    min_upload_bytes_per_audio_second: float = Field(
        16.0,
        ge=0,
        description="Refuse audio that decodes to more seconds than one per this many uploaded "
        "bytes (beyond 30 s): no real speech codec stores a second in fewer than ~50 bytes.",
    )
    warmup: bool = Field(True, description="Run one inference before /readyz turns ready.")
    shutdown_grace_seconds: float = Field(
        120.0,
        ge=0,
        description="On SIGTERM, how long accepted requests may take to finish before exit.",
    )

    api_key: SecretStr | None = Field(
        None, description="Bearer token clients must send; prefer api_key_file."
    )
    api_key_file: Path | None = Field(
        None, description="File holding the bearer token (a mounted Secret)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> RuntimeSettings:
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set VOICEFLEET_API_KEY or VOICEFLEET_API_KEY_FILE, not both")
        return self

    @model_validator(mode="after")
    def _serves_something(self) -> RuntimeSettings:
        if not self.stt_enabled and self.tts_model is None:
            raise ValueError("VOICEFLEET_STT_ENABLED=false needs VOICEFLEET_TTS_MODEL")
        return self

    @model_validator(mode="after")
    def _api_processes_serve_speech_to_text(self) -> RuntimeSettings:
        if self.api_processes > 1 and (self.tts_model is not None or not self.stt_enabled):
            raise ValueError(
                "VOICEFLEET_API_PROCESSES above 1 serves speech-to-text only; serve "
                "VOICEFLEET_TTS_MODEL from a server with one API process"
            )
        return self

    def resolved_api_key(self) -> SecretStr | None:
        """The bearer token, read from its file at start-up so rotation means a restart."""
        if self.api_key_file is not None:
            return SecretStr(self.api_key_file.read_text().strip())
        return self.api_key
