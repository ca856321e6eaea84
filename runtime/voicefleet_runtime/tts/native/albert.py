"""PL-BERT, Kokoro's phoneme encoder: an ALBERT (one transformer layer applied 12 times)."""

from __future__ import annotations

import torch
from torch import nn

from voicefleet_runtime.tts.native.weights import KokoroWeights

PREFIX = "encoder.bert"
LAYER = f"{PREFIX}.encoder.albert_layer_groups.0.albert_layers.0"
LAYER_NORM_EPS = 1e-12
HEADS = 12
REPEATS = 12


class SharedLayer(nn.Module):
    """Self-attention and a GELU feed-forward, each with a residual and a layer norm."""

    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.query = weights.linear(f"{LAYER}.attention.query")
        self.key = weights.linear(f"{LAYER}.attention.key")
        self.value = weights.linear(f"{LAYER}.attention.value")
        self.dense = weights.linear(f"{LAYER}.attention.dense")
        self.attention_norm = weights.layer_norm(f"{LAYER}.attention.LayerNorm", LAYER_NORM_EPS)
        self.ffn = weights.linear(f"{LAYER}.ffn")
        self.ffn_output = weights.linear(f"{LAYER}.ffn_output")
        self.output_norm = weights.layer_norm(f"{LAYER}.full_layer_layer_norm", LAYER_NORM_EPS)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        return x.view(batch, steps, HEADS, width // HEADS).transpose(1, 2)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        batch, steps, width = x.shape
        attended = nn.functional.scaled_dot_product_attention(
            self._heads(self.query(x)),
            self._heads(self.key(x)),
            self._heads(self.value(x)),
            attn_mask=key_bias,
        )
        attended = attended.transpose(1, 2).reshape(batch, steps, width)
        x = self.attention_norm(x + self.dense(attended))
        hidden = nn.functional.gelu(self.ffn(x), approximate="tanh")
        output: torch.Tensor = self.output_norm(x + self.ffn_output(hidden))
        return output


class Albert(nn.Module):
    """Token ids [B, L] -> hidden states [B, L, 768]; padded tokens are never attended to."""

    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.words = weights.embedding(f"{PREFIX}.embeddings.word_embeddings")
        self.positions = weights.embedding(f"{PREFIX}.embeddings.position_embeddings")
        self.token_types = weights.embedding(f"{PREFIX}.embeddings.token_type_embeddings")
        self.embedding_norm = weights.layer_norm(f"{PREFIX}.embeddings.LayerNorm", LAYER_NORM_EPS)
        self.project = weights.linear(f"{PREFIX}.encoder.embedding_hidden_mapping_in")
        self.layer = SharedLayer(weights)

    @property
    def max_tokens(self) -> int:
        return int(self.positions.weight.shape[0])

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        steps = tokens.shape[1]
        x = self.words(tokens) + self.token_types.weight[0] + self.positions.weight[:steps]
        x = self.project(self.embedding_norm(x))
        key_bias = None
        if token_mask is not None:
            blocked = torch.finfo(x.dtype).min
            key_bias = torch.zeros_like(token_mask, dtype=x.dtype).masked_fill(~token_mask, blocked)
            key_bias = key_bias[:, None, None, :]
        for _ in range(REPEATS):
            x = self.layer(x, key_bias)
        assert isinstance(x, torch.Tensor)
        return x
