"""Turn one decoded window into the request's segments (and words), in the request's thread."""

from __future__ import annotations

from voicefleet_runtime.engine.base import Segment, Word
from voicefleet_runtime.engine.torch_whisper.batched.alignment import TimedWord, window_words
from voicefleet_runtime.engine.torch_whisper.batched.requests import WindowJob, WindowOutcome
from voicefleet_runtime.engine.torch_whisper.decoding import compression_ratio
from voicefleet_runtime.engine.torch_whisper.engine import FallbackPolicy
from voicefleet_runtime.engine.torch_whisper.features import SECONDS_PER_FRAME
from voicefleet_runtime.engine.torch_whisper.segments import split_window
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer


def _words_in(
    words: list[TimedWord], first_token: int, last_token: int, start: float, end: float
) -> tuple[Word, ...]:
    """Words whose first token lies in [first_token, last_token), kept inside [start, end]."""
    chosen: list[Word] = []
    position = 0
    for word in words:
        if first_token <= position < last_token:
            word_start = min(max(word.start, start), end)
            if chosen:
                word_start = max(word_start, chosen[-1].end)
            word_end = min(max(word.end, word_start), end)
            chosen.append(
                Word(
                    round(word_start, 3), round(word_end, 3), word.word, round(word.probability, 4)
                )
            )
        position += len(word.tokens)
    return tuple(chosen)


def window_segments(
    tokenizer: WhisperTokenizer,
    policy: FallbackPolicy,
    job: WindowJob,
    outcome: WindowOutcome,
    language: str,
    first_id: int,
    duration: float,
) -> list[Segment]:
    result = outcome.decoding
    if policy.is_silence(result):
        return []
    vocabulary = tokenizer.vocabulary
    time_offset = job.start_frame * SECONDS_PER_FRAME
    split = split_window(result.tokens, vocabulary.timestamp_begin, time_offset, job.frames)
    window_end = min(time_offset + job.frames * SECONDS_PER_FRAME, duration)
    ratio = compression_ratio(tokenizer.decode(result.tokens))
    words: list[TimedWord] = []
    if outcome.alignment is not None:
        weights, probabilities = outcome.alignment
        text_tokens = [token for token in result.tokens if token < vocabulary.eot]
        words = window_words(weights, probabilities, text_tokens, tokenizer, language, time_offset)
    segments: list[Segment] = []
    text_position = 0
    for piece in split.pieces:
        text = tokenizer.decode(piece.tokens)
        text_count = sum(1 for token in piece.tokens if token < vocabulary.eot)
        first_text, text_position = text_position, text_position + text_count
        if not text.strip():
            continue
        start = round(min(piece.start, window_end), 3)
        end = round(min(max(piece.end, piece.start), window_end), 3)
        segments.append(
            Segment(
                id=first_id + len(segments),
                start=start,
                end=end,
                text=text,
                tokens=piece.tokens,
                avg_logprob=result.avg_logprob,
                compression_ratio=ratio,
                no_speech_prob=result.no_speech_prob,
                temperature=result.temperature,
                words=_words_in(words, first_text, text_position, start, end),
            )
        )
    return segments
