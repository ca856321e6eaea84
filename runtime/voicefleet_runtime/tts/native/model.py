"""Kokoro-82M as native PyTorch modules, batched: several chunks (any lengths, voices and
speeds) in one forward pass.

The stages (albert.py, text_encoder.py, prosody.py, decoder.py, generator.py) take right-padded
batches with each chunk's lengths (layers.Span), so a chunk sounds the same alone or in a batch.
One forward makes one host round trip: the predicted durations decide how many frames each
chunk has, and every later shape depends on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from voicefleet_runtime.tts.native.albert import Albert
from voicefleet_runtime.tts.native.decoder import Decoder
from voicefleet_runtime.tts.native.fused import Tails
from voicefleet_runtime.tts.native.layers import AdaIN, Span, to_device
from voicefleet_runtime.tts.native.prosody import CurvePredictor, DurationEncoder, DurationHead
from voicefleet_runtime.tts.native.text_encoder import TextEncoder
from voicefleet_runtime.tts.native.weights import KokoroWeights

STYLE_SPLIT = 128
"""A voice's style row: the decoder's half first, then the prosody predictor's."""


@dataclass(frozen=True)
class ChunkRequest:
    """One chunk to speak: token ids (pads included), the voice's style row, the model speed."""

    token_ids: Sequence[int]
    style: NDArray[np.float32]
    speed: float


@dataclass(frozen=True)
class Intermediates:
    """What the stages computed for a batch, for checks against another implementation."""

    durations: torch.Tensor  # [B, L] frames per token
    f0: torch.Tensor  # [B, 2T]
    n: torch.Tensor  # [B, 2T]
    audio: list[torch.Tensor]


class KokoroNet(nn.Module):
    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.albert = Albert(weights)
        self.bert_project = weights.linear("encoder.bert_encoder")
        self.durations = DurationEncoder(weights)
        self.duration_head = DurationHead(weights)
        self.text_encoder = TextEncoder(weights)
        self.curves = CurvePredictor(weights)
        self.decoder = Decoder(weights)
        self.norms = [module for module in self.modules() if isinstance(module, AdaIN)]
        """Every AdaIN, found once: `use_tails` runs before each batch."""

    def place(self, device: torch.device, decoder_dtype: torch.dtype) -> KokoroNet:
        """Move to `device`, the decoder in `decoder_dtype` (float32, float16 or bfloat16).

        Everything before the decoder stays float32: it is cheap (it runs per token, or per
        frame at 80 Hz), and the durations it rounds and the F0 it predicts must not move.
        """
        self.to(device=device, dtype=torch.float32)
        self.decoder.to(dtype=decoder_dtype)
        self.decoder.generator.keep_float32_parts()
        return self.eval()

    def use_tails(self, tails: Tails | None) -> None:
        """Every AdaIN's tail: op by op (None) or `tails` (fused.py)."""
        for norm in self.norms:
            norm.tails = tails

    @property
    def dtype(self) -> torch.dtype:
        return self.bert_project.weight.dtype

    @property
    def decoder_dtype(self) -> torch.dtype:
        return self.decoder.generator.conv_post.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.bert_project.weight.device

    def forward(self, requests: Sequence[ChunkRequest]) -> Intermediates:
        device, dtype = self.device, self.dtype
        token_lengths = [len(request.token_ids) for request in requests]
        tokens_host = np.zeros((len(requests), max(token_lengths)), dtype=np.int64)
        for row, request in enumerate(requests):
            tokens_host[row, : len(request.token_ids)] = request.token_ids
        tokens = to_device(tokens_host, device)
        styles_host = np.stack([np.asarray(r.style, np.float32).reshape(-1) for r in requests])
        styles = to_device(styles_host, device).to(dtype)
        speeds = to_device(np.asarray([r.speed for r in requests], dtype=np.float32), device)
        decoder_style, prosody_style = styles[:, :STYLE_SPLIT], styles[:, STYLE_SPLIT:]

        span = Span.of(token_lengths, device, dtype)
        token_mask = None if span.full else span.mask[:, 0].bool()
        features = self.bert_project(self.albert(tokens, token_mask))
        encoded = self.durations(features, prosody_style, span)
        durations = self.duration_head(encoded, speeds, span)
        text = self.text_encoder(tokens, span)

        # The one host round trip: each chunk's frames, and which token each frame speaks.
        durations_host = durations.cpu().numpy()
        frame_counts = [int(row.sum()) for row in durations_host]
        token_of_frame = np.zeros((len(requests), max(frame_counts)), dtype=np.int64)
        for row, (counts, length) in enumerate(zip(durations_host, token_lengths, strict=True)):
            token_of_frame[row, : frame_counts[row]] = np.repeat(np.arange(length), counts[:length])
        frame_tokens = to_device(token_of_frame, device)
        frames = Span.of(frame_counts, device, dtype)
        doubled = frames.scaled(2)

        aligned = encoded.gather(1, frame_tokens[:, :, None].expand(-1, -1, encoded.shape[-1]))
        aligned = aligned * frames.mask.transpose(1, 2)
        aligned_text = frames.apply(
            text.gather(2, frame_tokens[:, None, :].expand(-1, text.shape[1], -1))
        )
        f0, n = self.curves(aligned, prosody_style, frames, doubled)
        half = self.decoder_dtype
        if half != dtype:
            frames, doubled = frames.cast(half), doubled.cast(half)
            aligned_text, decoder_style = aligned_text.to(half), decoder_style.to(half)
        audio, samples = self.decoder(aligned_text, f0, n, decoder_style, frames, doubled)
        pieces = [audio[row, :length] for row, length in enumerate(samples.lengths)]
        return Intermediates(durations, f0, n, pieces)
