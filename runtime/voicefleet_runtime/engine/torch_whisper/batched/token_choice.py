"""The end of the decode step in one Triton kernel: Whisper's token rules, the choice of the
next token, and each row's next input.

In torch the rules and the choice are about 30 kernels over (batch, vocabulary) tensors
(masks, log-softmaxes, argmaxes) plus eight small ones that write the next inputs: 0.3 ms of
the large-v3 step at batch 64, all waiting on memory or on their own launch
(bench/results/batching-notes.md). Here one program per row reads its logits once: it
builds the row's mask from the columns' flags and the row's inputs as it goes, and keeps
running log-sum-exps and maxima for the raw logits, the text columns and the timestamp
columns. A row that samples (temperature above 0) reads its logits a second time, with its
noise. The result is the same as RuleTables.choose (tests/runtime_torch/
test_token_choice.py holds the two side by side).

Imported only where it runs: on a CUDA device, or on the CPU under TRITON_INTERPRET=1 (the
tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from voicefleet_runtime.engine.torch_whisper.batched import step_tables
from voicefleet_runtime.engine.torch_whisper.batched.step_tables import (
    INPUT_COLUMNS,
    OUTPUT_COLUMNS,
    RuleTables,
)

# step_tables' column layout, as compile-time constants the kernel reads (one definition).
_TOKEN = tl.constexpr(step_tables.TOKEN)
_POSITION = tl.constexpr(step_tables.POSITION)
_COUNT = tl.constexpr(step_tables.COUNT)
_LAST = tl.constexpr(step_tables.LAST)
_PENULTIMATE = tl.constexpr(step_tables.PENULTIMATE)
_LAST_TIME = tl.constexpr(step_tables.LAST_TIME)
_TIMESTAMPS = tl.constexpr(step_tables.TIMESTAMPS)
_FORCED_LENGTH = tl.constexpr(step_tables.FORCED_LENGTH)
_INPUT_COLUMNS = tl.constexpr(INPUT_COLUMNS)
_OUT_TOKEN = tl.constexpr(step_tables.OUT_TOKEN)
_OUT_LOGPROB = tl.constexpr(step_tables.OUT_LOGPROB)
_OUT_NO_SPEECH = tl.constexpr(step_tables.OUT_NO_SPEECH)
_OUT_LANGUAGE = tl.constexpr(step_tables.OUT_LANGUAGE)
_OUT_LANGUAGE_PROB = tl.constexpr(step_tables.OUT_LANGUAGE_PROB)
_OUTPUT_COLUMNS = tl.constexpr(OUTPUT_COLUMNS)

BLOCK = 4096
"""Vocabulary columns per loop iteration (Whisper's 51,865: 13 iterations)."""
WARPS = 8


@triton.jit
def _merge_lse(best, total, values):
    """A running (max, sum of exp(value - max)) with `values` added; -inf values count 0."""
    new_best = tl.maximum(best, tl.max(values, axis=0))
    finite = new_best > float("-inf")
    rescale = tl.where(finite, tl.exp(best - new_best), 0.0)
    added = tl.where(values > float("-inf"), tl.exp(values - new_best), 0.0)
    return new_best, total * rescale + tl.sum(added, axis=0)


@triton.jit
def _merge_argmax(best, best_at, values, columns):
    """A running (max, its first column) with `values` at `columns` added."""
    block_best = tl.max(values, axis=0)
    block_at = tl.min(tl.where(values == block_best, columns, 2147483647), axis=0)
    better = block_best > best
    return tl.where(better, block_best, best), tl.where(better, block_at, best_at)


@triton.jit
def _block(logits, flags_ptr, inputs, columns, vocabulary, timestamp_begin, eot, max_initial):
    """(raw logits, the same with what the row may not emit set to -inf) at `columns`, from the
    row's logits and its input row (RuleTables.mask: the same rules in the same order)."""
    inside = columns < vocabulary
    raw = tl.load(logits + columns, mask=inside, other=float("-inf")).to(tl.float32)
    flags = tl.load(flags_ptr + columns, mask=inside, other=0)
    count = tl.load(inputs + _COUNT)
    last = tl.load(inputs + _LAST)
    penultimate = tl.load(inputs + _PENULTIMATE)
    last_time = tl.load(inputs + _LAST_TIME)
    timed = tl.load(inputs + _TIMESTAMPS) > 0
    forced_length = tl.load(inputs + _FORCED_LENGTH)
    first = count == 0
    last_was_time = (last >= timestamp_begin) & (~first)
    penultimate_was_time = (count < 2) | (penultimate >= timestamp_begin)
    floor = tl.where(last_was_time & (~penultimate_was_time), last_time, last_time + 1)
    forcing = forced_length > 0
    forced_open = count < forced_length
    is_time = columns >= timestamp_begin
    blocked = (flags & 1) != 0
    blocked = blocked | (first & ((flags & 2) != 0))
    blocked = blocked | ((~timed) & is_time)
    blocked = blocked | (timed & first & ((~is_time) | (columns > max_initial)))
    blocked = blocked | (timed & last_was_time & penultimate_was_time & is_time)
    blocked = blocked | (timed & last_was_time & (~penultimate_was_time) & (columns < eot))
    blocked = blocked | (timed & (last_time >= 0) & is_time & (columns < floor))
    blocked = blocked | (forcing & forced_open & (columns == eot))
    blocked = blocked | (forcing & (~forced_open) & (columns != eot))
    return raw, tl.where(blocked, float("-inf"), raw)


@triton.jit
def _choose_tokens(
    logits_ptr,
    logits_row_stride,
    vocabulary,
    flags_ptr,
    language_ids_ptr,
    languages,
    inputs_ptr,
    temperatures_ptr,
    noise_ptr,
    noise_row_stride,
    out_ptr,
    timestamp_begin,
    eot,
    no_speech,
    max_initial_timestamp,
    BLOCK: tl.constexpr,
    LANGUAGE_BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    inputs = inputs_ptr + row * _INPUT_COLUMNS
    logits = logits_ptr + row * logits_row_stride
    offsets = tl.arange(0, BLOCK)

    raw_best = float("-inf")
    raw_total = 0.0
    text_best = float("-inf")
    text_total = 0.0
    text_top = float("-inf")
    text_at = 0
    time_best = float("-inf")
    time_total = 0.0
    time_top = float("-inf")
    time_at = 0
    for start in range(0, vocabulary, BLOCK):
        columns = start + offsets
        raw, allowed = _block(
            logits,
            flags_ptr,
            inputs,
            columns,
            vocabulary,
            timestamp_begin,
            eot,
            max_initial_timestamp,
        )
        raw_best, raw_total = _merge_lse(raw_best, raw_total, raw)
        is_time = columns >= timestamp_begin
        text = tl.where(is_time, float("-inf"), allowed)
        time = tl.where(is_time, allowed, float("-inf"))
        text_best, text_total = _merge_lse(text_best, text_total, text)
        time_best, time_total = _merge_lse(time_best, time_total, time)
        text_top, text_at = _merge_argmax(text_top, text_at, text, columns)
        time_top, time_at = _merge_argmax(time_top, time_at, time, columns)

    raw_lse = raw_best + tl.log(raw_total)
    no_speech_prob = tl.exp(tl.load(logits + no_speech).to(tl.float32) - raw_lse)
    text_lse = text_best + tl.log(text_total)
    time_lse = time_best + tl.log(time_total)
    # When time tokens together outweigh every text token, emit a timestamp.
    time_only = (time_lse > text_top) & (tl.load(inputs + _FORCED_LENGTH) <= 0)  # not forced
    both_best = tl.maximum(text_lse, time_lse)
    both_lse = tl.where(
        both_best > float("-inf"),
        both_best + tl.log(tl.exp(text_lse - both_best) + tl.exp(time_lse - both_best)),
        float("-inf"),
    )
    final_lse = tl.where(time_only, time_lse, both_lse)
    time_wins = time_only | (time_top > text_top)
    token = tl.where(time_wins, time_at, text_at)
    top = tl.where(time_wins, time_top, text_top)

    temperature = tl.load(temperatures_ptr + row)
    if temperature > 0:
        # Gumbel-max, as step.py: argmax(logits / T - log E), E ~ Exp(1) in the noise table.
        noise = noise_ptr + row * noise_row_stride
        drawn_top = float("-inf")
        drawn_at = 0
        for start in range(0, vocabulary, BLOCK):
            columns = start + offsets
            inside = columns < vocabulary
            _, allowed = _block(
                logits,
                flags_ptr,
                inputs,
                columns,
                vocabulary,
                timestamp_begin,
                eot,
                max_initial_timestamp,
            )
            if time_only:
                allowed = tl.where(columns < timestamp_begin, float("-inf"), allowed)
            drawn = allowed / tl.maximum(temperature, 1e-6) - tl.log(
                tl.load(noise + columns, mask=inside, other=1.0)
            )
            drawn = tl.where(inside, drawn, float("-inf"))
            drawn_top, drawn_at = _merge_argmax(drawn_top, drawn_at, drawn, columns)
        token = drawn_at
        top = tl.load(logits + token).to(tl.float32)
    logprob = top - final_lse

    if LANGUAGE_BLOCK > 0:
        slots = tl.arange(0, LANGUAGE_BLOCK)
        listed = slots < languages
        ids = tl.load(language_ids_ptr + slots, mask=listed, other=0)
        scores = tl.load(logits + ids, mask=listed, other=float("-inf")).to(tl.float32)
        score_top = tl.max(scores, axis=0)
        language_prob = 1.0 / tl.sum(tl.where(listed, tl.exp(scores - score_top), 0.0), axis=0)
        language = tl.min(tl.where(scores == score_top, slots, LANGUAGE_BLOCK), axis=0)
    else:
        language_prob = tl.full([], 1.0, tl.float32)
        language = tl.full([], 0, tl.int32)

    out = out_ptr + row * _OUTPUT_COLUMNS
    tl.store(out + _OUT_TOKEN, token.to(tl.float32))
    tl.store(out + _OUT_LOGPROB, logprob)
    tl.store(out + _OUT_NO_SPEECH, no_speech_prob)
    tl.store(out + _OUT_LANGUAGE, language.to(tl.float32))  # an index into the language ids
    tl.store(out + _OUT_LANGUAGE_PROB, language_prob)
    # The row's next input, as if `token` were sampled (RuleTables.advance_inputs): every
    # value read before any is written.
    position = tl.load(inputs + _POSITION)
    count = tl.load(inputs + _COUNT)
    last = tl.load(inputs + _LAST)
    last_time = tl.load(inputs + _LAST_TIME)
    token = token.to(tl.int64)
    tl.store(inputs + _TOKEN, token)
    tl.store(inputs + _POSITION, position + 1)
    tl.store(inputs + _COUNT, count + 1)
    tl.store(inputs + _LAST, token)
    tl.store(inputs + _PENULTIMATE, last)
    tl.store(inputs + _LAST_TIME, tl.where(token >= timestamp_begin, token, last_time))


def choose_tokens(
    logits: torch.Tensor,
    inputs: torch.Tensor,
    temperatures: torch.Tensor,
    noise: torch.Tensor,
    rules: RuleTables,
) -> torch.Tensor:
    """The step's outputs (batch, OUTPUT_COLUMNS) float32 from `logits` (batch, at least the
    vocabulary; columns past it are ignored), writing each row's next input over `inputs`
    (batch, INPUT_COLUMNS) int64, contiguous. `temperatures` (batch,) and `noise` (batch,
    vocabulary) as DecodeStep keeps them."""
    batch = logits.shape[0]
    vocabulary = rules.columns.numel()
    if inputs.shape != (batch, INPUT_COLUMNS) or not inputs.is_contiguous():
        raise ValueError("inputs need one contiguous row of INPUT_COLUMNS per logits row")
    if logits.stride(1) != 1 or noise.stride(1) != 1 or logits.shape[1] < vocabulary:
        raise ValueError("logits and noise need contiguous rows covering the vocabulary")
    out = torch.empty(batch, OUTPUT_COLUMNS, device=logits.device, dtype=torch.float32)
    vocabulary_ids = rules.vocabulary
    languages = rules.language_ids.numel()
    _choose_tokens[(batch,)](
        logits,
        logits.stride(0),
        vocabulary,
        rules.column_flags,
        rules.language_ids,
        languages,
        inputs,
        temperatures,
        noise,
        noise.stride(0),
        out,
        vocabulary_ids.timestamp_begin,
        vocabulary_ids.eot,
        vocabulary_ids.no_speech,
        rules.max_initial_timestamp,
        BLOCK=BLOCK,
        LANGUAGE_BLOCK=triton.next_power_of_2(languages) if languages else 0,
        num_warps=WARPS,
    )
    return out
