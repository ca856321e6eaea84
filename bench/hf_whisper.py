"""CTranslate2 Whisper weights as a Hugging Face `WhisperForConditionalGeneration`.

The benchmark's anchor runs the off-the-shelf library on the very weights our engine runs.
A CTranslate2 Whisper model.bin maps onto HF's parameters one to one: CTranslate2 fuses the
self-attention q/k/v projections into one `linear_0` (the key part has a zero bias, HF's key
projection has none) and the cross-attention k/v into one `linear_1`; everything else is a
rename. `hf_state_dict` checks that every stored tensor lands somewhere and every HF
parameter is filled, so a silent half-conversion cannot happen.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration
from transformers.utils import logging as transformers_logging

from voicefleet_runtime.engine.torch_whisper.ct2_weights import (
    Ct2Weights,
    WeightFormatError,
    load_ct2_model,
)
from voicefleet_runtime.engine.torch_whisper.features import LogMelExtractor, pad_or_trim_frames
from voicefleet_runtime.engine.torch_whisper.model import WhisperDimensions
from voicefleet_runtime.engine.torch_whisper.precision import resolve_torch_placement
from voicefleet_runtime.engine.torch_whisper.tokens import DecodingVocabulary, WhisperTokenizer

FFN_MULTIPLIER = 4
MAX_INITIAL_TIMESTAMP_INDEX = 50
"""Whisper's default: the first timestamp of a window is at most 1 s (50 x 20 ms)."""

# generate() warns on every call about settings this anchor chose on purpose (no attention
# mask: every window is a full 30 s; max_new_tokens over max_length).
transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]

_STACK = {"encoder": "model.encoder", "decoder": "model.decoder"}
_LAYER_PART = {
    "self_attention/layer_norm": "self_attn_layer_norm",
    "self_attention/linear_1": "self_attn.out_proj",
    "attention/layer_norm": "encoder_attn_layer_norm",
    "attention/linear_0": "encoder_attn.q_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "ffn/layer_norm": "final_layer_norm",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
}
_FUSED = {
    # CTranslate2 part -> the HF projections it holds, in order.
    "self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
}
_KEY_PROJECTIONS_WITHOUT_BIAS = frozenset({"self_attn.k_proj", "encoder_attn.k_proj"})
_LAYER_NAME = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)/(weight|bias|gamma|beta)$")
_PARAMETER_SUFFIX = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_TOP_LEVEL = {
    "encoder/conv1/weight": "model.encoder.conv1.weight",
    "encoder/conv1/bias": "model.encoder.conv1.bias",
    "encoder/conv2/weight": "model.encoder.conv2.weight",
    "encoder/conv2/bias": "model.encoder.conv2.bias",
    "encoder/position_encodings/encodings": "model.encoder.embed_positions.weight",
    "encoder/layer_norm/gamma": "model.encoder.layer_norm.weight",
    "encoder/layer_norm/beta": "model.encoder.layer_norm.bias",
    "decoder/embeddings/weight": "model.decoder.embed_tokens.weight",
    "decoder/position_encodings/encodings": "model.decoder.embed_positions.weight",
    "decoder/layer_norm/gamma": "model.decoder.layer_norm.weight",
    "decoder/layer_norm/beta": "model.decoder.layer_norm.bias",
}


def _split_fused(
    prefix: str, parts: tuple[str, ...], suffix: str, tensor: torch.Tensor, name: str
) -> dict[str, torch.Tensor]:
    pieces = tensor.chunk(len(parts), dim=0)
    mapped: dict[str, torch.Tensor] = {}
    for part, piece in zip(parts, pieces, strict=True):
        if suffix == "bias" and part in _KEY_PROJECTIONS_WITHOUT_BIAS:
            if bool(piece.float().abs().max() > 0):
                raise WeightFormatError(f"{name}: the key projection's bias is not zero")
            continue
        mapped[f"{prefix}.{part}.{suffix}"] = piece
    return mapped


def _map_variable(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    if name in _TOP_LEVEL:
        return {_TOP_LEVEL[name]: tensor}
    match = _LAYER_NAME.match(name)
    if match is None:
        raise WeightFormatError(f"{name} has no Hugging Face counterpart")
    stack, index, part, raw_suffix = match.groups()
    prefix = f"{_STACK[stack]}.layers.{index}"
    suffix = _PARAMETER_SUFFIX[raw_suffix]
    if part in _FUSED:
        return _split_fused(prefix, _FUSED[part], suffix, tensor, name)
    if part in _LAYER_PART:
        return {f"{prefix}.{_LAYER_PART[part]}.{suffix}": tensor}
    raise WeightFormatError(f"{name} has no Hugging Face counterpart")


def hf_state_dict(weights: Ct2Weights) -> dict[str, torch.Tensor]:
    """HF parameter name -> tensor; 0-d spec flags and the tied output projection are skipped."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in weights.variables.items():
        if tensor.ndim == 0 or name == "decoder/projection/weight":
            continue
        state.update(_map_variable(name, tensor))
    return state


def hf_config(dims: WhisperDimensions, vocabulary: DecodingVocabulary) -> WhisperConfig:
    """A WhisperConfig of the same shape and special tokens."""
    eot = vocabulary.eot
    return WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer,
        encoder_attention_heads=dims.n_audio_head,
        encoder_ffn_dim=FFN_MULTIPLIER * dims.n_audio_state,
        decoder_layers=dims.n_text_layer,
        decoder_attention_heads=dims.n_text_head,
        decoder_ffn_dim=FFN_MULTIPLIER * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        decoder_start_token_id=vocabulary.sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
    )


def generation_config(vocabulary: DecodingVocabulary, n_text_ctx: int) -> GenerationConfig:
    """What Whisper's `generate` reads: the special tokens, languages and tasks."""
    languages: dict[str, object] = {}
    if vocabulary.language_ids:
        # Only multilingual models get these: their mere presence makes `generate` detect a
        # language and insert its token.
        languages = {
            "lang_to_id": {f"<|{code}|>": token for code, token in vocabulary.language_ids.items()},
            "task_to_id": {"transcribe": vocabulary.transcribe, "translate": vocabulary.translate},
        }
    return GenerationConfig(  # type: ignore[no-untyped-call]
        decoder_start_token_id=vocabulary.sot,
        eos_token_id=vocabulary.eot,
        pad_token_id=vocabulary.eot,
        bos_token_id=vocabulary.eot,
        no_timestamps_token_id=vocabulary.no_timestamps,
        is_multilingual=bool(vocabulary.language_ids),
        suppress_tokens=list(vocabulary.suppress_ids),
        begin_suppress_tokens=list(vocabulary.suppress_ids_begin),
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        max_length=n_text_ctx,
        alignment_heads=[list(head) for head in vocabulary.alignment_heads],
        **languages,
    )


def build_hf_whisper(
    weights: Ct2Weights,
    device: torch.device,
    dtype: torch.dtype,
    vocabulary: DecodingVocabulary,
    attn_implementation: str = "sdpa",
) -> WhisperForConditionalGeneration:
    """`WhisperForConditionalGeneration` holding the file's weights, in `dtype` on `device`."""
    dims = WhisperDimensions.from_weights(weights)
    config = hf_config(dims, vocabulary)
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = hf_state_dict(weights)
    expected = {name for name in model.state_dict() if name != "proj_out.weight"}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise WeightFormatError(
            f"the weights do not fit HF's Whisper: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    converted = {name: t.to(device=device, dtype=dtype) for name, t in state.items()}
    model.load_state_dict(converted, strict=False, assign=True)
    # The output projection shares the token embeddings, as Whisper's does.
    model.proj_out.weight = model.model.decoder.embed_tokens.weight
    model.generation_config = generation_config(vocabulary, dims.n_text_ctx)
    model.eval()  # type: ignore[no-untyped-call]
    return model.requires_grad_(False)


@dataclass(frozen=True)
class HfBatch:
    texts: list[str]
    seconds: float
    """Wall time of the batch: log-mel features, encoder and generate."""
    step_ms: float
    """(generate time - encoder time) / decode steps: one step for the whole batch."""


class _EncoderClock:
    """CUDA events (or the host clock on CPU) around every encoder forward."""

    def __init__(self, encoder: nn.Module, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._spans: list[tuple[object, object]] = []
        self._begun: object = None
        encoder.register_forward_pre_hook(self._before)
        encoder.register_forward_hook(self._after)

    def _mark(self) -> object:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            return event
        return time.perf_counter()

    def _before(self, *_: object) -> None:
        self._begun = self._mark()

    def _after(self, *_: object) -> None:
        self._spans.append((self._begun, self._mark()))

    def take_seconds(self) -> float:
        """Encoder seconds since the last call (after the caller synchronised)."""
        total = 0.0
        for start, end in self._spans:
            if isinstance(start, torch.cuda.Event) and isinstance(end, torch.cuda.Event):
                total += start.elapsed_time(end) / 1000
            elif isinstance(start, float) and isinstance(end, float):
                total += end - start
        self._spans.clear()
        return total


class HfAnchor:
    """HF Whisper on 30 s windows, batched, greedy, without timestamps: the anchor rows.

    Features come from our log-mel extractor on the same device (Whisper's own recipe), so
    both sides pay the same for them; text comes from our tokenizer.
    """

    def __init__(
        self,
        model: WhisperForConditionalGeneration,
        tokenizer: WhisperTokenizer,
        dims: WhisperDimensions,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.dimensions = dims
        self._device = device
        self._dtype = dtype
        self._features = LogMelExtractor(dims.n_mels, device)
        self._clock = _EncoderClock(model.model.encoder, device)

    @property
    def encoder(self) -> nn.Module:
        encoder: nn.Module = self.model.model.encoder
        return encoder

    @classmethod
    def from_model_folder(cls, folder: Path, device: str, precision: str) -> HfAnchor:
        placement = resolve_torch_placement(device, precision)
        weights = load_ct2_model(folder / "model.bin")
        dims = WhisperDimensions.from_weights(weights)
        tokenizer = WhisperTokenizer.from_model_folder(folder, dims.is_multilingual)
        model = build_hf_whisper(
            weights, placement.torch_device, placement.dtype, tokenizer.vocabulary
        )
        return cls(model, tokenizer, dims, placement.torch_device, placement.dtype)

    @classmethod
    def random(
        cls, dims: WhisperDimensions, tokenizer_folder: Path, device: str, precision: str
    ) -> HfAnchor:
        """Random weights of shape `dims` (pair with a forced length); tokens from a folder."""
        placement = resolve_torch_placement(device, precision)
        tokenizer = WhisperTokenizer.from_model_folder(tokenizer_folder, dims.is_multilingual)
        config = hf_config(dims, tokenizer.vocabulary)
        config._attn_implementation = "sdpa"
        torch.manual_seed(0)
        with torch.device(placement.torch_device):
            model = WhisperForConditionalGeneration(config)
        model.to(placement.dtype)  # type: ignore[arg-type]
        model.eval()  # type: ignore[no-untyped-call]
        model.requires_grad_(False)
        model.generation_config = generation_config(tokenizer.vocabulary, dims.n_text_ctx)
        return cls(model, tokenizer, dims, placement.torch_device, placement.dtype)

    def _synchronise(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    @torch.inference_mode()
    def transcribe(self, audios: Sequence[NDArray[np.float32]], forced_length: int = 0) -> HfBatch:
        self._synchronise()
        self._clock.take_seconds()
        started = time.perf_counter()
        mel = torch.stack(
            [pad_or_trim_frames(self._features(np.ascontiguousarray(a))) for a in audios]
        ).to(self._dtype)
        self._synchronise()
        generate_started = time.perf_counter()
        vocabulary = self.tokenizer.vocabulary
        multilingual = bool(vocabulary.language_ids)
        lengths: dict[str, int] = {"max_new_tokens": self.dimensions.n_text_ctx // 2}
        if forced_length:
            lengths = {"max_new_tokens": forced_length, "min_new_tokens": forced_length}
        sequences = self.model.generate(
            input_features=mel,
            language="en" if multilingual else None,
            task="transcribe" if multilingual else None,
            return_timestamps=False,
            **lengths,
        )
        self._synchronise()
        finished = time.perf_counter()
        encoder_seconds = self._clock.take_seconds()
        rows = sequences.tolist()
        texts = [self.tokenizer.decode(row) for row in rows]
        steps = forced_length or max(
            sum(1 for token in row if token < vocabulary.eot) + 1 for row in rows
        )
        decode_seconds = finished - generate_started - encoder_seconds
        return HfBatch(texts, finished - started, 1000 * decode_seconds / steps)

    def warm_up(self, audios: Sequence[NDArray[np.float32]], forced_length: int = 0) -> None:
        for _ in range(2):
            self.transcribe(audios, forced_length)
