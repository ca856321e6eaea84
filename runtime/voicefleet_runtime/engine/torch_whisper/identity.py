"""What both torch engines, sequential and batched, report about themselves."""

from __future__ import annotations

from typing import ClassVar

from voicefleet_runtime.engine.capabilities import EngineCapabilities
from voicefleet_runtime.engine.torch_whisper.precision import TorchPlacement
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer


class TorchEngineIdentity:
    """The engine contract's descriptive properties, from the model's name, its placement
    and its tokenizer; each engine sets its own `CAPABILITIES`."""

    CAPABILITIES: ClassVar[EngineCapabilities]

    def __init__(self, model_name: str, placement: TorchPlacement, tokenizer: WhisperTokenizer):
        self.tokenizer = tokenizer
        self._model_name = model_name
        self._placement = placement

    @property
    def backend(self) -> str:
        return "torch"

    @property
    def model_id(self) -> str:
        return self._model_name

    @property
    def device(self) -> str:
        return self._placement.device

    @property
    def compute_type(self) -> str:
        return self._placement.precision

    @property
    def multilingual(self) -> bool:
        return bool(self.tokenizer.vocabulary.language_ids)

    @property
    def languages(self) -> frozenset[str]:
        return frozenset(self.tokenizer.vocabulary.language_ids) or frozenset({"en"})

    @property
    def capabilities(self) -> EngineCapabilities:
        return self.CAPABILITIES
