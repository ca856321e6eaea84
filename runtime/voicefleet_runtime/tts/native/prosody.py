"""The prosody predictor: how long each phoneme lasts, then the pitch (F0) and energy (N)
curves of the frames those durations make."""

from __future__ import annotations

import torch
from torch import nn

from voicefleet_runtime.tts.native.layers import AdaLayerNorm, Span, StyledResidualBlock, run_lstm
from voicefleet_runtime.tts.native.weights import KokoroWeights

PREFIX = "encoder.predictor"
DURATION_LAYERS = 3
CURVE_BLOCKS = 3
"""Three residual blocks per curve; the second doubles the frame rate."""


class DurationEncoder(nn.Module):
    """PL-BERT's features and the style through BiLSTMs with style-conditioned layer norms."""

    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        name = f"{PREFIX}.text_encoder.lstms"
        self.lstms = nn.ModuleList(weights.lstm(f"{name}.{2 * i}") for i in range(DURATION_LAYERS))
        self.norms = nn.ModuleList(
            AdaLayerNorm(weights, f"{name}.{2 * i + 1}") for i in range(DURATION_LAYERS)
        )

    def forward(self, features: torch.Tensor, style: torch.Tensor, span: Span) -> torch.Tensor:
        """[B, L, 512] and the prosody style [B, 128] -> [B, L, 640] (the style appended)."""
        styles = style[:, None, :].expand(-1, features.shape[1], -1)
        mask = span.mask.transpose(1, 2)
        x = torch.cat([features, styles], dim=-1) * mask
        for lstm, norm in zip(self.lstms, self.norms, strict=True):
            assert isinstance(lstm, nn.LSTM)
            x = norm(run_lstm(lstm, x, span.lengths), style)
            x = torch.cat([x, styles], dim=-1) * mask
        return x


class DurationHead(nn.Module):
    """Encoded phonemes -> frames per phoneme (at least 1; 0 for padding)."""

    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.lstm = weights.lstm(f"{PREFIX}.lstm")
        self.project = weights.linear(f"{PREFIX}.duration_proj.linear_layer")

    def forward(self, encoded: torch.Tensor, speed: torch.Tensor, span: Span) -> torch.Tensor:
        logits = self.project(run_lstm(self.lstm, encoded, span.lengths))
        frames = torch.sigmoid(logits.float()).sum(dim=-1) / speed[:, None]
        frames = torch.round(frames).clamp(min=1).long()
        return frames * span.mask[:, 0].long()


class CurvePredictor(nn.Module):
    """Aligned phoneme features -> F0 and N curves at twice the frame rate."""

    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.shared = weights.lstm("encoder.shared")
        self.f0_blocks = nn.ModuleList(
            StyledResidualBlock(weights, f"{PREFIX}.F0.{i}", upsample=i == 1)
            for i in range(CURVE_BLOCKS)
        )
        self.n_blocks = nn.ModuleList(
            StyledResidualBlock(weights, f"{PREFIX}.N.{i}", upsample=i == 1)
            for i in range(CURVE_BLOCKS)
        )
        self.f0_project = weights.conv(f"{PREFIX}.F0_proj")
        self.n_project = weights.conv(f"{PREFIX}.N_proj")

    def _curve(
        self,
        blocks: nn.ModuleList,
        project: nn.Module,
        x: torch.Tensor,
        style: torch.Tensor,
        frames: Span,
        doubled: Span,
    ) -> torch.Tensor:
        spans = ((frames, frames), (frames, doubled), (doubled, doubled))
        for block, (span, out_span) in zip(blocks, spans, strict=True):
            x = block(x, style, span, out_span)
        return doubled.apply(project(x))[:, 0]

    def forward(
        self, aligned: torch.Tensor, style: torch.Tensor, frames: Span, doubled: Span
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, 640] -> (F0, N), each [B, 2T], zero past each chunk's end."""
        x = run_lstm(self.shared, aligned, frames.lengths).transpose(1, 2)
        f0 = self._curve(self.f0_blocks, self.f0_project, x, style, frames, doubled)
        n = self._curve(self.n_blocks, self.n_project, x, style, frames, doubled)
        return f0, n
