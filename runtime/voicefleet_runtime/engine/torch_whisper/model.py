"""Whisper's encoder-decoder as torch modules, laid out like CTranslate2's WhisperSpec.

Module names mirror the CTranslate2 variable scopes (`encoder/layer_0/self_attention/linear_0`
becomes `encoder.layers.0.self_attention.linear_0`), so loading is a rename, not a remap.
Self-attention q/k/v are one fused projection (`linear_0`, the key part has a zero bias);
cross-attention has the query in `linear_0` and fused key/value in `linear_1`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from voicefleet_runtime.engine.torch_whisper.ct2_weights import Ct2Weights, WeightFormatError

LAYER_NORM_EPS = 1e-5
MULTILINGUAL_MIN_VOCAB = 51865
"""English-only Whisper vocabularies have 51864 tokens; multilingual ones add language tokens."""

LayerCache = tuple[torch.Tensor, torch.Tensor]
"""Keys and values of one attention layer, (batch, heads, positions, head_dim)."""


@dataclass(frozen=True)
class WhisperDimensions:
    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @property
    def is_multilingual(self) -> bool:
        return self.n_vocab >= MULTILINGUAL_MIN_VOCAB

    @classmethod
    def from_weights(cls, weights: Ct2Weights) -> WhisperDimensions:
        if weights.spec_name != "WhisperSpec":
            raise WeightFormatError(
                f"expected a Whisper model (WhisperSpec), the file holds a {weights.spec_name}"
            )
        conv1 = weights.get("encoder/conv1/weight")
        embeddings = weights.get("decoder/embeddings/weight")
        return cls(
            n_mels=conv1.shape[1],
            n_audio_ctx=weights.get("encoder/position_encodings/encodings").shape[0],
            n_audio_state=conv1.shape[0],
            n_audio_head=int(weights.get("encoder/num_heads").item()),
            n_audio_layer=_count_layers(weights, "encoder"),
            n_vocab=embeddings.shape[0],
            n_text_ctx=weights.get("decoder/position_encodings/encodings").shape[0],
            n_text_state=embeddings.shape[1],
            n_text_head=int(weights.get("decoder/num_heads").item()),
            n_text_layer=_count_layers(weights, "decoder"),
        )


LARGE_V3_DIMENSIONS = WhisperDimensions(
    n_mels=128,
    n_audio_ctx=1500,
    n_audio_state=1280,
    n_audio_head=20,
    n_audio_layer=32,
    n_vocab=51866,
    n_text_ctx=448,
    n_text_state=1280,
    n_text_head=20,
    n_text_layer=32,
)
"""Whisper large-v3's shape, for benchmarks with random weights (no weights ship here)."""


def _count_layers(weights: Ct2Weights, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(match[1]) for name in weights.variables if (match := pattern.match(name))}
    if not indices or indices != set(range(len(indices))):
        raise WeightFormatError(f"the {stack} layers are missing or not numbered 0..n-1")
    return len(indices)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, positions, width = x.shape
    return x.view(batch, positions, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, positions, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, positions, heads * head_dim)


def _attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    causal_offset: int | None,
    need_weights: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention; `causal_offset` is how many cached positions precede."""
    mask: torch.Tensor | None = None
    new_positions = query.shape[-2]
    if causal_offset is not None and new_positions > 1:
        rows = torch.arange(new_positions, device=query.device)[:, None] + causal_offset
        columns = torch.arange(key.shape[-2], device=query.device)[None, :]
        mask = columns <= rows
    if not need_weights:
        return functional.scaled_dot_product_attention(query, key, value, attn_mask=mask), None
    scores = (query @ key.transpose(-1, -2)) * query.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.float().softmax(dim=-1).to(query.dtype)
    return weights @ value, weights


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.layer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.linear_0 = nn.Linear(width, 3 * width)
        self.linear_1 = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, causal: bool, cache: LayerCache | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        query, key, value = self.linear_0(self.layer_norm(x)).chunk(3, dim=-1)
        query, key, value = (_split_heads(t, self.heads) for t in (query, key, value))
        offset = 0
        if cache is not None:
            offset = cache[0].shape[-2]
            key = torch.cat([cache[0], key], dim=-2)
            value = torch.cat([cache[1], value], dim=-2)
        attended, _ = _attend(query, key, value, offset if causal else None, need_weights=False)
        return x + self.linear_1(_merge_heads(attended)), (key, value)


class CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.layer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.linear_0 = nn.Linear(width, width)
        self.linear_1 = nn.Linear(width, 2 * width)
        self.linear_2 = nn.Linear(width, width)

    def project_audio(self, audio_features: torch.Tensor) -> LayerCache:
        key, value = self.linear_1(audio_features).chunk(2, dim=-1)
        return _split_heads(key, self.heads), _split_heads(value, self.heads)

    def forward(
        self, x: torch.Tensor, audio: LayerCache, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        query = _split_heads(self.linear_0(self.layer_norm(x)), self.heads)
        attended, weights = _attend(query, audio[0], audio[1], None, need_weights)
        return x + self.linear_2(_merge_heads(attended)), weights


class FeedForward(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.linear_0 = nn.Linear(width, 4 * width)
        self.linear_1 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = functional.gelu(self.linear_0(self.layer_norm(x)))
        projected: torch.Tensor = self.linear_1(hidden)
        return x + projected


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.self_attention = SelfAttention(width, heads)
        self.ffn = FeedForward(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.self_attention(x, causal=False)
        output: torch.Tensor = self.ffn(x)
        return output


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.self_attention = SelfAttention(width, heads)
        self.attention = CrossAttention(width, heads)
        self.ffn = FeedForward(width)

    def forward(
        self,
        x: torch.Tensor,
        audio: LayerCache,
        cache: LayerCache | None,
        need_weights: bool,
    ) -> tuple[torch.Tensor, LayerCache, torch.Tensor | None]:
        x, new_cache = self.self_attention(x, causal=True, cache=cache)
        x, weights = self.attention(x, audio, need_weights)
        return self.ffn(x), new_cache, weights


class AudioEncoder(nn.Module):
    def __init__(self, dims: WhisperDimensions) -> None:
        super().__init__()
        width = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        self.position_encodings = nn.Parameter(torch.empty(dims.n_audio_ctx, width))
        self.layers = nn.ModuleList(
            EncoderLayer(width, dims.n_audio_head) for _ in range(dims.n_audio_layer)
        )
        self.layer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, 3000) log-mel frames -> (batch, 1500, width) audio features."""
        x = functional.gelu(self.conv1(mel))
        x = functional.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.position_encodings[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)  # type: ignore[no-any-return]


@dataclass
class DecoderState:
    """What the decoder reuses between steps of one decode: projected audio and past keys."""

    audio: list[LayerCache]
    self_attention: list[LayerCache] | None = None

    @property
    def positions(self) -> int:
        return 0 if self.self_attention is None else self.self_attention[0][0].shape[-2]

    def reorder(self, batch_indices: torch.Tensor) -> DecoderState:
        """Keep (and duplicate) the hypotheses at `batch_indices`, for beam search."""

        def pick(cache: LayerCache) -> LayerCache:
            return cache[0].index_select(0, batch_indices), cache[1].index_select(0, batch_indices)

        audio = [pick(layer) for layer in self.audio]
        past = None if self.self_attention is None else [pick(c) for c in self.self_attention]
        return DecoderState(audio, past)


class TextDecoder(nn.Module):
    def __init__(self, dims: WhisperDimensions) -> None:
        super().__init__()
        width = dims.n_text_state
        self.embeddings = nn.Embedding(dims.n_vocab, width)
        self.position_encodings = nn.Parameter(torch.empty(dims.n_text_ctx, width))
        self.layers = nn.ModuleList(
            DecoderLayer(width, dims.n_text_head) for _ in range(dims.n_text_layer)
        )
        self.layer_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def start(self, audio_features: torch.Tensor) -> DecoderState:
        layers: list[DecoderLayer] = list(self.layers)  # type: ignore[arg-type]
        return DecoderState([layer.attention.project_audio(audio_features) for layer in layers])

    def forward(
        self, tokens: torch.Tensor, state: DecoderState, need_weights: bool = False
    ) -> tuple[torch.Tensor, DecoderState, list[torch.Tensor]]:
        """Logits (float32) for the new `tokens`, the extended state, cross-attention maps."""
        offset = state.positions
        x = self.embeddings(tokens) + self.position_encodings[offset : offset + tokens.shape[1]]
        past: list[LayerCache | None] = [None] * len(self.layers)
        if state.self_attention is not None:
            past = list(state.self_attention)
        new_past: list[LayerCache] = []
        attention_maps: list[torch.Tensor] = []
        for layer, cache in zip(self.layers, past, strict=True):
            x, layer_cache, weights = layer(x, state.audio[len(new_past)], cache, need_weights)
            new_past.append(layer_cache)
            if weights is not None:
                attention_maps.append(weights)
        x = self.layer_norm(x)
        logits = (x @ self.embeddings.weight.transpose(0, 1)).float()
        return logits, DecoderState(state.audio, new_past), attention_maps


class Whisper(nn.Module):
    def __init__(self, dims: WhisperDimensions) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)


_LAYER_SCOPE = re.compile(r"/layer_(\d+)/")


def _torch_name(ct2_name: str) -> str:
    name = _LAYER_SCOPE.sub(r"/layers/\1/", ct2_name)
    name = name.replace("position_encodings/encodings", "position_encodings")
    name = re.sub(r"/gamma$", "/weight", name)
    name = re.sub(r"/beta$", "/bias", name)
    return name.replace("/", ".")


def build_whisper(weights: Ct2Weights, device: torch.device, dtype: torch.dtype) -> Whisper:
    """A Whisper module holding the file's weights, converted to `dtype` on `device`."""
    dims = WhisperDimensions.from_weights(weights)
    with torch.device("meta"):
        model = Whisper(dims)
    state = {
        _torch_name(name): tensor
        for name, tensor in weights.variables.items()
        if tensor.ndim > 0  # 0-d variables are spec flags (num_heads, activation...)
    }
    # The output projection is tied to the token embeddings (stored as an alias).
    state.pop("decoder.projection.weight", None)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise WeightFormatError(
            f"the weights do not fit a Whisper model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise WeightFormatError(
                f"{name} is stored as {tensor.dtype} (a quantized model); the torch engine "
                "needs float weights: convert the model with --quantization float16"
            )
    converted = {name: tensor.to(device=device, dtype=dtype) for name, tensor in state.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def random_whisper(
    dims: WhisperDimensions, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> Whisper:
    """A Whisper module of shape `dims` with random weights: what benchmarks of a model size
    whose weights are not at hand run on (the arithmetic is the same, the text is noise)."""
    with torch.device("meta"):
        model = Whisper(dims)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.fill_(1.0)
            elif name.endswith(".bias"):
                parameter.zero_()
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    return model.to(dtype).eval().requires_grad_(False)
