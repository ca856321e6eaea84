"""Word timestamps as Whisper finds them: cross-attention of its alignment heads, then DTW.

The loop thread runs one extra decoder pass per window that asked for words (the window's
text after <|notimestamps|>, against the window's cached audio keys and values) and keeps
the alignment heads' attention; the request's own thread turns that into words
(`window_words`), so the GPU loop does no per-word Python work.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from voicefleet_runtime.engine.torch_whisper.batched.cache import SlotCache
from voicefleet_runtime.engine.torch_whisper.model import DecoderState, Whisper
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer

MEDIAN_FILTER_WIDTH = 7
AUDIO_POSITIONS_PER_SECOND = 50
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
"""Languages written without spaces: a word is any piece that decodes to whole characters."""
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    end: float
    probability: float
    tokens: tuple[int, ...]


def alignment_heads(
    model: Whisper, configured: tuple[tuple[int, int], ...]
) -> list[tuple[int, int]]:
    """The model's alignment heads, or Whisper's default: every head of the last half of layers."""
    if configured:
        return list(configured)
    layers, heads = model.dims.n_text_layer, model.dims.n_text_head
    return [(layer, head) for layer in range(layers // 2, layers) for head in range(heads)]


def alignment_weights(
    model: Whisper,
    cache: SlotCache,
    slot: int,
    tokenizer: WhisperTokenizer,
    language: str,
    task: str,
    tokens: tuple[int, ...],
    frames: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(attention (heads, text tokens + 1, audio positions), text token probabilities)."""
    vocabulary = tokenizer.vocabulary
    text_tokens = [token for token in tokens if token < vocabulary.eot]
    start = [*tokenizer.sot_sequence(language, task), vocabulary.no_timestamps]
    sequence = [*start, *text_tokens, vocabulary.eot]
    audio = [cache.cross_of_slot(layer, slot) for layer in range(model.dims.n_text_layer)]
    device = cache.cross_keys.device
    logits, _, maps = model.decoder(
        torch.tensor([sequence], device=device), DecoderState(audio), need_weights=True
    )
    positions = max(frames // 2, 1)
    heads = alignment_heads(model, vocabulary.alignment_heads)
    weights = torch.stack([maps[layer][0, head] for layer, head in heads])
    weights = weights[:, len(start) - 1 : -1, :positions].float()
    # Whisper's softmax runs over the window's audio only, not its padding.
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    probabilities = logits[0, len(start) - 1 : len(start) - 1 + len(text_tokens), : vocabulary.eot]
    token_probabilities = probabilities.softmax(dim=-1)[
        torch.arange(len(text_tokens), device=device), torch.tensor(text_tokens, device=device)
    ]
    return weights.cpu().numpy(), token_probabilities.float().cpu().numpy()


def median_filter(x: NDArray[np.float32], width: int) -> NDArray[np.float32]:
    """Median over the last axis with reflected edges (Whisper smooths attention this way)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1).astype(np.float32)


def dtw(cost_matrix: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Cheapest monotonic path through `cost_matrix` (rows: tokens, columns: time), computed
    one anti-diagonal at a time so each Python iteration is a vector operation."""
    rows, columns = cost_matrix.shape
    cost = np.full((rows + 1, columns + 1), np.inf, dtype=np.float64)
    cost[0, 0] = 0.0
    trace = np.full((rows + 1, columns + 1), -1, dtype=np.int8)
    for diagonal in range(2, rows + columns + 1):
        i = np.arange(max(1, diagonal - columns), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        options = np.stack([cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]])
        choice = options.argmin(axis=0)
        cost[i, j] = cost_matrix[i - 1, j - 1] + options[choice, np.arange(len(i))]
        trace[i, j] = choice
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = rows, columns
    path: list[tuple[int, int]] = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    text_indices, time_indices = np.array(path[::-1]).T
    return text_indices, time_indices


def split_words(
    tokenizer: WhisperTokenizer, tokens: list[int], language: str
) -> list[tuple[str, list[int]]]:
    """Whisper's word pieces: whole characters first, then merged at spaces and punctuation."""
    full = tokenizer.decode(tokens)
    pieces: list[tuple[str, list[int]]] = []
    current: list[int] = []
    offset = 0
    for token in tokens:
        current.append(token)
        decoded = tokenizer.decode(current)
        replacement = decoded.find("\ufffd")
        if replacement < 0 or full[offset + replacement : offset + replacement + 1] == "\ufffd":
            pieces.append((decoded, current))
            current = []
            offset += len(decoded)
    if language in UNSPACED_LANGUAGES:
        return pieces
    words: list[tuple[str, list[int]]] = []
    for text, piece_tokens in pieces:
        if not words or text.startswith(" ") or text.strip() in string.punctuation:
            words.append((text, list(piece_tokens)))
        else:
            words[-1] = (words[-1][0] + text, words[-1][1] + piece_tokens)
    return words


def _merge_punctuation(words: list[TimedWord]) -> list[TimedWord]:
    """Opening marks join the next word, closing marks the previous one (as Whisper does)."""
    merged: list[TimedWord] = []
    carried: TimedWord | None = None
    for word in words:
        if carried is not None:
            word = TimedWord(
                carried.word + word.word,
                carried.start,
                word.end,
                word.probability,
                carried.tokens + word.tokens,
            )
            carried = None
        stripped = word.word.strip()
        if merged and stripped and all(c in APPEND_PUNCTUATION for c in stripped):
            previous = merged[-1]
            merged[-1] = TimedWord(
                previous.word + stripped,
                previous.start,
                previous.end,
                previous.probability,
                previous.tokens + word.tokens,
            )
        elif stripped and all(c in PREPEND_PUNCTUATION for c in stripped):
            carried = word
        else:
            merged.append(word)
    if carried is not None:
        merged.append(carried)
    return merged


def window_words(
    weights: NDArray[np.float32],
    token_probabilities: NDArray[np.float32],
    text_tokens: list[int],
    tokenizer: WhisperTokenizer,
    language: str,
    time_offset: float,
) -> list[TimedWord]:
    """The window's words with times (seconds from the start of the audio), in order."""
    if not text_tokens:
        return []
    std = weights.std(axis=-2, keepdims=True)
    mean = weights.mean(axis=-2, keepdims=True)
    normalised = (weights - mean) / np.maximum(std, 1e-8)
    matrix = median_filter(normalised, MEDIAN_FILTER_WIDTH).mean(axis=0)
    text_indices, time_indices = dtw(-matrix)
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / AUDIO_POSITIONS_PER_SECOND
    words = split_words(tokenizer, text_tokens, language)
    boundaries = np.concatenate([[0], np.cumsum([len(tokens) for _, tokens in words])])
    timed: list[TimedWord] = []
    for (text, tokens), first, last in zip(words, boundaries[:-1], boundaries[1:], strict=True):
        start = float(jump_times[min(first, len(jump_times) - 1)])
        end = float(jump_times[min(last, len(jump_times) - 1)])
        probability = float(token_probabilities[first:last].mean()) if last > first else 0.0
        timed.append(
            TimedWord(
                text, time_offset + start, time_offset + max(end, start), probability, tuple(tokens)
            )
        )
    return _merge_punctuation(timed)
