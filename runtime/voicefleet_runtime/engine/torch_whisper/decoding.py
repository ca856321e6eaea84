"""Decode one 30-second window: greedy, sampling or beam search, under Whisper's token rules."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from voicefleet_runtime.engine.torch_whisper.model import DecoderState, Whisper
from voicefleet_runtime.engine.torch_whisper.tokens import SECONDS_PER_TIMESTAMP, DecodingVocabulary

MAX_INITIAL_TIMESTAMP_SECONDS = 1.0
"""The first timestamp of a window may not be later than this (Whisper's default)."""


@dataclass(frozen=True)
class WindowDecoding:
    tokens: tuple[int, ...]
    """Sampled tokens (text and timestamps), without the end-of-text token."""
    sum_logprob: float
    no_speech_prob: float
    temperature: float

    @property
    def avg_logprob(self) -> float:
        # +1 counts the end-of-text token, whose log-probability is part of the sum.
        return self.sum_logprob / (len(self.tokens) + 1)


def compression_ratio(text: str) -> float:
    """How repetitive the text is; loops of the same phrase compress very well."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


class TokenRules:
    """Masks what Whisper may not emit next: blanks first, specials, out-of-order timestamps."""

    def __init__(self, vocabulary: DecodingVocabulary, n_vocab: int, device: torch.device) -> None:
        self.vocabulary = vocabulary
        self._suppressed = torch.zeros(n_vocab, dtype=torch.bool, device=device)
        suppressed = [
            i for i in (*vocabulary.suppress_ids, vocabulary.no_timestamps) if i < n_vocab
        ]
        self._suppressed[suppressed] = True
        self._suppressed_at_begin = torch.zeros(n_vocab, dtype=torch.bool, device=device)
        self._suppressed_at_begin[list(vocabulary.suppress_ids_begin)] = True
        self._max_initial_timestamp = vocabulary.timestamp_begin + round(
            MAX_INITIAL_TIMESTAMP_SECONDS / SECONDS_PER_TIMESTAMP
        )

    def apply(self, logits: torch.Tensor, sampled: list[list[int]]) -> torch.Tensor:
        """`logits` (hypotheses, vocab) float32, masked in place; `sampled` per hypothesis."""
        blocked = float("-inf")
        logits.masked_fill_(self._suppressed, blocked)
        eot, begin = self.vocabulary.eot, self.vocabulary.timestamp_begin
        for row, tokens in enumerate(sampled):
            if not tokens:
                logits[row].masked_fill_(self._suppressed_at_begin, blocked)
                # A window starts with a timestamp, and not a late one.
                logits[row, :begin] = blocked
                logits[row, self._max_initial_timestamp + 1 :] = blocked
                continue
            last_was_timestamp = tokens[-1] >= begin
            penultimate_was_timestamp = len(tokens) < 2 or tokens[-2] >= begin
            if last_was_timestamp:
                if penultimate_was_timestamp:
                    logits[row, begin:] = blocked  # a segment was just closed: text next
                else:
                    logits[row, :eot] = blocked  # a pair closes the segment, or the window ends
            timestamps = [token for token in tokens if token >= begin]
            if timestamps:
                # Time never goes backwards, and a segment has a nonzero length.
                floor = (
                    timestamps[-1]
                    if last_was_timestamp and not penultimate_was_timestamp
                    else timestamps[-1] + 1
                )
                logits[row, begin:floor] = blocked
        logprobs = torch.log_softmax(logits, dim=-1)
        timestamp_mass = logprobs[:, begin:].logsumexp(dim=-1)
        best_text = logprobs[:, :begin].max(dim=-1).values
        # When time tokens together outweigh every text token, emit a timestamp.
        logits[timestamp_mass > best_text, :begin] = blocked
        return logits


@dataclass(frozen=True)
class WindowDecoder:
    model: Whisper
    rules: TokenRules

    @property
    def sample_len(self) -> int:
        return self.model.dims.n_text_ctx // 2

    def _start(
        self, audio_features: torch.Tensor, initial_tokens: list[int], sot_index: int
    ) -> tuple[torch.Tensor, DecoderState, float]:
        state = self.model.decoder.start(audio_features)
        device = audio_features.device
        logits, state, _ = self.model.decoder(torch.tensor([initial_tokens], device=device), state)
        no_speech = logits[0, sot_index].softmax(dim=-1)[self.rules.vocabulary.no_speech]
        return logits[:, -1], state, float(no_speech)

    def _room(self, initial_tokens: list[int]) -> int:
        return min(self.sample_len, self.model.dims.n_text_ctx - len(initial_tokens))

    def decode(
        self,
        audio_features: torch.Tensor,
        initial_tokens: list[int],
        sot_index: int,
        temperature: float,
        beam_size: int,
        generator: torch.Generator,
    ) -> WindowDecoding:
        if temperature == 0.0 and beam_size > 1:
            return self._beam_search(audio_features, initial_tokens, sot_index, beam_size)
        return self._sample(audio_features, initial_tokens, sot_index, temperature, generator)

    def _sample(
        self,
        audio_features: torch.Tensor,
        initial_tokens: list[int],
        sot_index: int,
        temperature: float,
        generator: torch.Generator,
    ) -> WindowDecoding:
        """Greedy at temperature 0, otherwise one sample from the tempered distribution."""
        logits, state, no_speech_prob = self._start(audio_features, initial_tokens, sot_index)
        eot = self.rules.vocabulary.eot
        sampled: list[int] = []
        sum_logprob = 0.0
        for _ in range(self._room(initial_tokens)):
            logits = self.rules.apply(logits, [sampled])
            if temperature == 0.0:
                token = int(logits[0].argmax())
            else:
                probabilities = (logits[0] / temperature).softmax(dim=-1)
                token = int(torch.multinomial(probabilities, 1, generator=generator))
            sum_logprob += float(torch.log_softmax(logits[0], dim=-1)[token])
            if token == eot:
                break
            sampled.append(token)
            logits, state, _ = self.model.decoder(
                torch.tensor([[token]], device=audio_features.device), state
            )
            logits = logits[:, -1]
        return WindowDecoding(tuple(sampled), sum_logprob, no_speech_prob, temperature)

    def _beam_search(
        self,
        audio_features: torch.Tensor,
        initial_tokens: list[int],
        sot_index: int,
        beam_size: int,
    ) -> WindowDecoding:
        """Keep the `beam_size` likeliest hypotheses; rank finished ones by mean log-prob."""
        logits, state, no_speech_prob = self._start(audio_features, initial_tokens, sot_index)
        eot = self.rules.vocabulary.eot
        device = audio_features.device
        beams: list[tuple[list[int], float]] = [([], 0.0)]
        finished: dict[tuple[int, ...], float] = {}
        for _ in range(self._room(initial_tokens)):
            logprobs = torch.log_softmax(self.rules.apply(logits, [b[0] for b in beams]), dim=-1)
            top_values, top_tokens = logprobs.topk(beam_size + 1, dim=-1)
            candidates: dict[tuple[int, ...], tuple[float, int]] = {}
            for source, (tokens, score) in enumerate(beams):
                for value, token in zip(
                    top_values[source].tolist(), top_tokens[source].tolist(), strict=True
                ):
                    candidates[(*tokens, token)] = (score + value, source)
            next_beams: list[tuple[list[int], float]] = []
            sources: list[int] = []
            for sequence, (score, source) in sorted(
                candidates.items(), key=lambda item: item[1][0], reverse=True
            ):
                if sequence[-1] == eot:
                    if len(finished) < beam_size:
                        finished[sequence[:-1]] = score
                elif len(next_beams) < beam_size:
                    next_beams.append((list(sequence), score))
                    sources.append(source)
            if len(finished) >= beam_size or not next_beams:
                break
            state = state.reorder(torch.tensor(sources, device=device))
            beams = next_beams
            last_tokens = torch.tensor([[tokens[-1]] for tokens, _ in beams], device=device)
            step_logits, state, _ = self.model.decoder(last_tokens, state)
            logits = step_logits[:, -1]
        if not finished:
            finished = {tuple(tokens): score for tokens, score in beams}
        best, best_score = max(finished.items(), key=lambda item: item[1] / max(len(item[0]), 1))
        return WindowDecoding(best, best_score, no_speech_prob, 0.0)
