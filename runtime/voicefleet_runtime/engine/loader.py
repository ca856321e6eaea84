"""Pick and load the engine named by the settings; backends are imported only when chosen."""

from __future__ import annotations

from voicefleet_runtime.engine.base import SpeechEngine
from voicefleet_runtime.engine.capabilities import EngineCapabilities
from voicefleet_runtime.engine.models import resolve_model
from voicefleet_runtime.settings import RuntimeSettings, on_gpu_unless_off


def check_capabilities(settings: RuntimeSettings, capabilities: EngineCapabilities) -> None:
    """Refuse, before the slow load, settings the engine cannot honour (no silent fallback)."""
    if settings.vad == "on" and not capabilities.vad:
        raise ValueError(
            f"VOICEFLEET_VAD=on needs the faster-whisper engine or the torch engine's "
            f"continuous batching; the {settings.engine} engine as configured has no voice "
            "activity detection (set VOICEFLEET_VAD=auto or off, or "
            "VOICEFLEET_CONTINUOUS_BATCHING=on)"
        )


def torch_batching_enabled(settings: RuntimeSettings) -> bool:
    """Whether the torch engine runs its continuous batching loop (auto: on GPUs only)."""
    return on_gpu_unless_off(settings.continuous_batching, settings.device)


def load_engine(settings: RuntimeSettings) -> SpeechEngine:
    """Resolve the model offline and load it on the configured device; slow, call in a thread."""
    model = resolve_model(settings.model, settings.model_dir)
    if settings.engine == "torch" and torch_batching_enabled(settings):
        from voicefleet_runtime.engine.torch_whisper.batched import (
            BatchedWhisperEngine,
            BatchingConfig,
        )

        check_capabilities(settings, BatchedWhisperEngine.CAPABILITIES)
        batched: SpeechEngine = BatchedWhisperEngine.load(
            model=model,
            device=settings.device,
            precision=settings.precision,
            cpu_threads=settings.cpu_threads,
            config=BatchingConfig(
                max_sequences=settings.batch_max_sequences,
                memory_gib=settings.batch_memory_gib,
                windows_per_request=settings.batch_windows_per_request,
                admission_wait_s=settings.batch_admission_wait_ms / 1000,
                compile_encoder=on_gpu_unless_off(settings.batch_compile_encoder, settings.device),
                float8_cross_attention=settings.batch_float8_cross_attention,
                overlap_steps=settings.batch_overlap_steps,
                cuda_graphs=settings.cuda_graphs,
            ),
        )
        return batched
    if settings.engine == "torch":
        from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine

        check_capabilities(settings, TorchWhisperEngine.CAPABILITIES)
        torch_engine: SpeechEngine = TorchWhisperEngine.load(
            model=model,
            device=settings.device,
            precision=settings.precision,
            cpu_threads=settings.cpu_threads,
        )
        return torch_engine

    from voicefleet_runtime.engine.faster_whisper_engine import FasterWhisperEngine

    check_capabilities(settings, FasterWhisperEngine.CAPABILITIES)
    return FasterWhisperEngine.load(
        model,
        device=settings.device,
        precision=settings.precision,
        cpu_threads=settings.cpu_threads,
        num_workers=settings.num_workers,
        batched=settings.batched,
        batch_size=settings.batch_size,
        batched_min_audio_seconds=settings.batched_min_audio_seconds,
    )
