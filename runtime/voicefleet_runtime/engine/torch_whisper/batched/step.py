"""One decoder step for every active sequence at once, Whisper's token rules included.

Everything a step needs lives in preallocated tensors (the slot cache, an input table, a
noise table), so on CUDA the whole step (32 decoder layers, the token rules, the choice of
the next token) is one captured CUDA graph per batch-size and context-length bucket:
replaying it costs one launch instead of hundreds. On CPU the same code runs eagerly at the
exact batch size.

The input table stays on the device: each step ends by writing the next step's row for
every sequence from the token it chose (position, count, the last two tokens, the last
timestamp). The host only patches rows it decides (forced tokens, new windows, padding), so
it can launch step N+1 before it has read step N's tokens, and do its bookkeeping for N while
N+1 runs (loop.py).

Where the Triton kernels run (float8 cross-attention on a GPU), attention, the residual adds
with their norms, and the step's end (token rules, choice, next inputs: token_choice.py) are
kernels of this package; elsewhere the same step runs on torch's operators (the rules in
step_tables.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional
from torch.nn.attention import SDPBackend, sdpa_kernel

from voicefleet_runtime.engine.torch_whisper.batched import step_tables
from voicefleet_runtime.engine.torch_whisper.batched.cache import SlotCache, dequantize_float8
from voicefleet_runtime.engine.torch_whisper.batched.step_tables import (
    INPUT_COLUMNS,
    OUT_LANGUAGE,
    OUT_LANGUAGE_PROB,
    OUT_LOGPROB,
    OUT_NO_SPEECH,
    OUT_TOKEN,
    OUTPUT_COLUMNS,
    POSITION,
    TOKEN,
    RuleTables,
)
from voicefleet_runtime.engine.torch_whisper.model import DecoderLayer, Whisper

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
CONTEXT_BUCKETS = (64, 128, 256)
"""Self-attention lengths a graph is captured for (the model's n_text_ctx is always added):
most windows end well before 448 tokens, and reading the unused positions costs bandwidth."""


CROSS_ATTENTION_BACKENDS = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
"""Asked for in this order when the cross keys and values are in the model's dtype (float8
ones go to decode_attention). One query against 1500 audio keys on an H200 (bf16, batch 64,
32 layers): cuDNN's kernel read them at 4.2 TB/s (3.7 ms), flash attention took 7.1 ms
(bench/batching_step_profile.py); the captured step's kernel list shows cuDNN's
(bench/results/batching-notes.md, run 9)."""


def bucket(value: int, buckets: tuple[int, ...]) -> int:
    return buckets[bisect.bisect_left(buckets, value)]


class StepResult:
    """Host copies of one step's outputs, one row per active sequence."""

    def __init__(self, table: NDArray[np.float32]) -> None:
        self.rows: list[list[float]] = table.tolist()

    def token(self, row: int) -> int:
        return int(self.rows[row][OUT_TOKEN])

    def logprob(self, row: int) -> float:
        return self.rows[row][OUT_LOGPROB]

    def no_speech_prob(self, row: int) -> float:
        return self.rows[row][OUT_NO_SPEECH]

    def language(self, row: int) -> tuple[int, float]:
        """(index into the vocabulary's language ids, probability)."""
        return int(self.rows[row][OUT_LANGUAGE]), self.rows[row][OUT_LANGUAGE_PROB]


def padded_embeddings(embeddings: nn.Embedding, multiple: int = 64) -> torch.Tensor:
    """The token embeddings in a buffer padded with zero rows to a multiple of `multiple`, for
    the step's logits; the embedding layer keeps a view of the real rows (no second copy).
    cuBLAS picks a kernel twice as fast for the padded shape: 0.043 against 0.083 ms for
    large-v3's 51,866 tokens at batch 64 (bench/batching_step_profile.py). The padding's
    logits are zeros, past every column the rules read."""
    weight = embeddings.weight
    vocabulary, width = weight.shape
    with torch.no_grad():
        padded = weight.new_zeros(-(-vocabulary // multiple) * multiple, width)
        padded[:vocabulary] = weight
        embeddings.weight.data = padded[:vocabulary]
    return padded


def timing_events() -> tuple[torch.cuda.Event, torch.cuda.Event]:
    """A (started, ended) pair of CUDA events that can time what runs between them."""
    return (
        torch.cuda.Event(enable_timing=True),  # type: ignore[no-untyped-call]
        torch.cuda.Event(enable_timing=True),  # type: ignore[no-untyped-call]
    )


class Staging:
    """Host-side buffers of one launched step: pinned on CUDA, so that copies to and from the
    device do not wait for it. There are two, so that step N+1 is staged while N's outputs are
    still to be read."""

    def __init__(self, slots: int, device: torch.device) -> None:
        pinned = device.type == "cuda"
        self.patches = torch.zeros(slots, 1 + INPUT_COLUMNS, dtype=torch.long, pin_memory=pinned)
        self.temperatures = torch.zeros(slots, dtype=torch.float32, pin_memory=pinned)
        self.outputs = torch.zeros(slots, OUTPUT_COLUMNS, dtype=torch.float32, pin_memory=pinned)
        self.active = 0
        if pinned:
            self.started, self.ended = timing_events()
            self.copied = torch.cuda.Event()  # type: ignore[no-untyped-call]


class DecodeStep:
    def __init__(
        self,
        model: Whisper,
        rules: RuleTables,
        cache: SlotCache,
        use_graphs: bool,
    ) -> None:
        self.model = model
        self.rules = rules
        self.cache = cache
        dims = model.dims
        self.device = cache.self_keys.device
        slots = cache.slots
        self.heads = dims.n_text_head
        self.head_dim = dims.n_text_state // dims.n_text_head
        self.inputs = torch.zeros(slots, INPUT_COLUMNS, dtype=torch.long, device=self.device)
        self.temperatures = torch.zeros(slots, dtype=torch.float32, device=self.device)
        self.noise = torch.ones(slots, dims.n_vocab, dtype=torch.float32, device=self.device)
        self.row_index = torch.arange(slots, device=self.device)
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.kernel_attention: Callable[..., torch.Tensor] | None = None
        """decode_attention.attend, where the cache is float8 on a GPU (Triton runs there)."""
        self.self_kernel_attention: Callable[..., torch.Tensor] | None = None
        """The same, tuned for the self-attention cache."""
        self.add_layer_norm: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
        """residual_norm.add_layer_norm, where the attention kernel runs (one check for all)."""
        self.choose_tokens: Callable[..., torch.Tensor] = step_tables.choose_tokens
        """The rules, the choice, the next inputs: token_choice.choose_tokens likewise, its
        torch twin elsewhere."""
        if cache.float8_cross and self.device.type == "cuda":
            from voicefleet_runtime.engine.torch_whisper.batched import (
                decode_attention,
                residual_norm,
                token_choice,
            )

            self.kernel_attention = decode_attention.attend
            self.self_kernel_attention = partial(
                decode_attention.attend, tuning=decode_attention.SELF_TUNING
            )
            self.add_layer_norm = residual_norm.add_layer_norm
            self.choose_tokens = token_choice.choose_tokens
        self.logits_weight = (
            padded_embeddings(model.decoder.embeddings)
            if self.device.type == "cuda"
            else model.decoder.embeddings.weight
        )
        self.triton_self_attention = self.kernel_attention is not None
        """Self-attention through the kernel too, reading each row's filled positions only
        (bench/float8_cross_attention.py turns it off to compare)."""
        self.processors = (
            torch.cuda.get_device_properties(self.device).multi_processor_count
            if self.device.type == "cuda"
            else 0
        )
        self.batch_buckets = (*(b for b in BATCH_BUCKETS if b < slots), slots)
        self.context_buckets = (
            *(c for c in CONTEXT_BUCKETS if c < dims.n_text_ctx),
            dims.n_text_ctx,
        )
        self.gpu_seconds = 0.0
        """GPU time of the steps (CUDA events), to tell it from the host's share."""
        self._staging = (Staging(slots, self.device), Staging(slots, self.device))
        self._launched = 0
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def _compute(self, batch: int, context: int) -> torch.Tensor:
        """The step for rows 0..batch-1 over `context` self-attention positions."""
        decoder = self.model.decoder
        rows = self.inputs[:batch]
        tokens, positions = rows[:, TOKEN], rows[:, POSITION]
        row_index = self.row_index[:batch]
        # Built once a step, not once a layer: each is a kernel in the captured graph. The
        # kernel reads each row's length; SDPA needs the mask.
        lengths = positions + 1
        visible = (
            None
            if self.triton_self_attention
            else (torch.arange(context, device=self.device)[None, :] < lengths[:, None])[
                :, None, None, :
            ]
        )
        cache = self.cache
        layers: list[DecoderLayer] = list(decoder.layers)  # type: ignore[arg-type]
        # Each residual add is taken with the layer norm that reads its sum (_add_norm).
        x, normed = self._add_norm(
            decoder.embeddings(tokens),
            decoder.position_encodings[positions],
            layers[0].self_attention.layer_norm,
        )
        for index, layer in enumerate(layers):
            attention = layer.self_attention
            query, key, value = (
                part.view(batch, self.heads, self.head_dim)
                for part in attention.linear_0(normed).chunk(3, dim=-1)
            )
            keys, values = cache.self_keys[index], cache.self_values[index]
            if not self.triton_self_attention:  # the kernel writes them as it reads
                keys[row_index, :, positions] = key
                values[row_index, :, positions] = value
            keys, values = keys[:batch, :, :context], values[:batch, :, :context]
            attended = self._self_attention(query, (key, value), keys, values, lengths, visible)
            cross = layer.attention
            x, normed = self._add_norm(
                x, attention.linear_1(attended.reshape(batch, -1)), cross.layer_norm
            )
            query = cross.linear_0(normed).view(batch, self.heads, self.head_dim)
            attended = self._cross_attention(index, query)
            ffn = layer.ffn
            x, normed = self._add_norm(
                x, cross.linear_2(attended.reshape(batch, -1)), ffn.layer_norm
            )
            hidden = functional.gelu(ffn.linear_0(normed))
            following = (
                layers[index + 1].self_attention.layer_norm
                if index + 1 < len(layers)
                else decoder.layer_norm
            )
            x, normed = self._add_norm(x, ffn.linear_1(hidden), following)
        logits = normed @ self.logits_weight.transpose(0, 1)
        return self.choose_tokens(
            logits, rows, self.temperatures[:batch], self.noise[:batch], self.rules
        )

    def _add_norm(
        self, residual: torch.Tensor, update: torch.Tensor, norm: nn.LayerNorm
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual + update, norm of that): one kernel where Triton runs (residual_norm.py),
        two torch operations elsewhere."""
        if self.add_layer_norm is not None:
            return self.add_layer_norm(residual, update, norm)
        total = residual + update
        return total, norm(total)

    def _self_attention(
        self,
        query: torch.Tensor,
        newest: tuple[torch.Tensor, torch.Tensor],
        keys: torch.Tensor,
        values: torch.Tensor,
        lengths: torch.Tensor,
        visible: torch.Tensor | None,
    ) -> torch.Tensor:
        """(batch, heads, head_dim) queries against each row's first `lengths` keys: through
        the kernel, which also stores the `newest` key and value at each row's position; or
        through SDPA with the `visible` mask, after the caller stored them."""
        if self.triton_self_attention:
            assert self.self_kernel_attention is not None
            return self.self_kernel_attention(
                query, keys, values, None, self.processors, lengths=lengths, appended=newest
            )
        attended = functional.scaled_dot_product_attention(
            query[:, :, None], keys, values, attn_mask=visible
        )
        return attended[:, :, 0]

    def _cross_attention(self, layer: int, query: torch.Tensor) -> torch.Tensor:
        """(batch, heads, head_dim) queries against the first `batch` slots' audio."""
        batch = query.shape[0]
        cache = self.cache
        keys, values = cache.cross_keys[layer, :batch], cache.cross_values[layer, :batch]
        if cache.cross_scales is not None:
            scales = cache.cross_scales[layer, :batch]
            if self.kernel_attention is not None:
                return self.kernel_attention(query, keys, values, scales, self.processors)
            # CPUs read no faster from float8: this path exists to check the numbers.
            keys = dequantize_float8(keys, scales[..., 0], query.dtype)
            values = dequantize_float8(values, scales[..., 1], query.dtype)
        with sdpa_kernel(CROSS_ATTENTION_BACKENDS, set_priority=True):
            attended = functional.scaled_dot_product_attention(query[:, :, None], keys, values)
        return attended[:, :, 0]

    def capture(self) -> int:
        """Capture every (batch, context) bucket's graph up front; returns how many."""
        if not self.use_graphs:
            return 0
        with torch.cuda.device(self.device):
            return self._capture_on_device()

    def _capture_on_device(self) -> int:
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for batch in self.batch_buckets:
                for context in self.context_buckets:
                    self._compute(batch, context)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        for batch in self.batch_buckets:
            for context in self.context_buckets:
                graph = torch.cuda.CUDAGraph()
                # The capture stream must be this device's: torch's default one belongs to
                # whichever device captured first.
                with torch.cuda.graph(
                    graph, pool=pool, stream=stream, capture_error_mode="thread_local"
                ):
                    output = self._compute(batch, context)
                self._graphs[(batch, context)] = (graph, output)
        self.inputs.zero_()
        return len(self._graphs)

    def launch(
        self,
        active: int,
        context_needed: int,
        patches: NDArray[np.int64],
        temperatures: NDArray[np.float32],
    ) -> int:
        """Start one step for rows 0..active-1 and return its ticket for `collect`.

        `patches` (n, 1 + INPUT_COLUMNS): a row index, then that row's inputs, written over
        the table before the step; rows not patched step from where the last step left them.
        `temperatures` (active,). Nothing here waits for the device."""
        if self.use_graphs:
            batch = bucket(active, self.batch_buckets)
            context = bucket(context_needed, self.context_buckets)
        else:
            batch, context = active, context_needed
        ticket = self._launched % 2
        self._launched += 1
        staged = self._staging[ticket]
        staged.patches[: len(patches)] = torch.from_numpy(patches)
        staged.temperatures[:active] = torch.from_numpy(temperatures)
        staged.temperatures[active:batch] = 0.0
        on_device = staged.patches[: len(patches)].to(self.device, non_blocking=True)
        self.inputs.index_copy_(0, on_device[:, 0], on_device[:, 1:])
        self.inputs[active:batch].zero_()  # the bucket's padding: free slots, fed token 0 at 0
        self.temperatures[:batch].copy_(staged.temperatures[:batch], non_blocking=True)
        if (temperatures > 0).any():
            self.noise[:batch].exponential_()
        timed = self.device.type == "cuda"
        if timed:
            staged.started.record()
        if self.use_graphs:
            graph, output = self._graphs[(batch, context)]
            graph.replay()
        else:
            output = self._compute(batch, context)
        if timed:
            staged.ended.record()
        staged.outputs[:active].copy_(output[:active], non_blocking=True)
        staged.active = active
        if timed:
            staged.copied.record()
        return ticket

    def collect(self, ticket: int) -> StepResult:
        """Wait for the step `ticket` names and read its outputs (one row per active row)."""
        staged = self._staging[ticket]
        if self.device.type == "cuda":
            staged.copied.synchronize()
            self.gpu_seconds += staged.started.elapsed_time(staged.ended) / 1000
        return StepResult(staged.outputs[: staged.active].numpy())

    def move(self, source: int, target: int) -> None:
        """Copy row `source`'s inputs into `target` (with the cache's compaction)."""
        self.inputs[target].copy_(self.inputs[source])
