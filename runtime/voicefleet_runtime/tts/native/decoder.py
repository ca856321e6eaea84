"""The decoder: aligned text features, F0 and N -> the vocoder's input at twice the frame rate."""

from __future__ import annotations

import torch
from torch import nn

from voicefleet_runtime.tts.native.generator import Generator
from voicefleet_runtime.tts.native.layers import Span, StyledResidualBlock
from voicefleet_runtime.tts.native.weights import KokoroWeights

PREFIX = "decoder.decoder"
DECODE_BLOCKS = 4
"""The last one doubles the frame rate back to the curves' rate."""


class Decoder(nn.Module):
    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.f0_conv = weights.conv(f"{PREFIX}.F0_conv")
        self.n_conv = weights.conv(f"{PREFIX}.N_conv")
        self.encode = StyledResidualBlock(weights, f"{PREFIX}.encode")
        self.asr_residual = weights.conv(f"{PREFIX}.asr_res.0")
        self.decode = nn.ModuleList(
            StyledResidualBlock(weights, f"{PREFIX}.decode.{i}", upsample=i == DECODE_BLOCKS - 1)
            for i in range(DECODE_BLOCKS)
        )
        self.generator = Generator(weights)

    def forward(
        self,
        text: torch.Tensor,
        f0: torch.Tensor,
        n: torch.Tensor,
        style: torch.Tensor,
        frames: Span,
        doubled: Span,
    ) -> tuple[torch.Tensor, Span]:
        """Text [B, 512, T], F0 and N [B, 2T] (float32, zero past the ends), the decoder style
        [B, 128] -> audio [B, samples] and its span. The harmonic source reads F0 in float32."""
        f0_down = frames.apply(self.f0_conv(f0[:, None].to(text.dtype)))
        n_down = frames.apply(self.n_conv(n[:, None].to(text.dtype)))
        x = self.encode(torch.cat([text, f0_down, n_down], dim=1), style, frames, frames)
        residual = self.asr_residual(text)
        for index, block in enumerate(self.decode):
            out_span = doubled if index == DECODE_BLOCKS - 1 else frames
            x = block(torch.cat([x, residual, f0_down, n_down], dim=1), style, frames, out_span)
        audio: tuple[torch.Tensor, Span] = self.generator(x, style, f0, doubled)
        return audio
