"""A PyTorch implementation of Whisper that runs the CTranslate2 weights the runtime ships."""

from voicefleet_runtime.engine.torch_whisper.engine import TorchWhisperEngine

__all__ = ["TorchWhisperEngine"]
