"""The acoustic text encoder: token embeddings, three conv + layer-norm layers, a BiLSTM."""

from __future__ import annotations

import torch
from torch import nn

from voicefleet_runtime.tts.native.layers import LAYER_NORM_EPS, Span, run_lstm
from voicefleet_runtime.tts.native.weights import KokoroWeights

PREFIX = "encoder.text_encoder"
DEPTH = 3


class TextEncoder(nn.Module):
    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.embedding = weights.embedding(f"{PREFIX}.embedding")
        self.convs = nn.ModuleList(weights.conv(f"{PREFIX}.cnn.{i}.0") for i in range(DEPTH))
        self.gammas = nn.ParameterList(
            nn.Parameter(weights.tensor(f"{PREFIX}.cnn.{i}.1.gamma"), requires_grad=False)
            for i in range(DEPTH)
        )
        self.betas = nn.ParameterList(
            nn.Parameter(weights.tensor(f"{PREFIX}.cnn.{i}.1.beta"), requires_grad=False)
            for i in range(DEPTH)
        )
        self.lstm = weights.lstm(PREFIX + ".lstm")

    def forward(self, tokens: torch.Tensor, span: Span) -> torch.Tensor:
        """Token ids [B, L] -> features [B, 512, L], zero past each chunk's end."""
        x = span.apply(self.embedding(tokens).transpose(1, 2))
        for conv, gamma, beta in zip(self.convs, self.gammas, self.betas, strict=True):
            x = conv(x).transpose(1, 2)
            x = nn.functional.layer_norm(x, (x.shape[-1],), gamma, beta, LAYER_NORM_EPS)
            x = span.apply(nn.functional.leaky_relu(x, 0.2).transpose(1, 2))
        return span.apply(run_lstm(self.lstm, x.transpose(1, 2), span.lengths).transpose(1, 2))
