"""The decode step's tables: the columns of its input and output rows, and Whisper's token
rules as masks over the vocabulary. Shared by the step's torch code (step.py), its Triton
kernel for the rules (token_choice.py) and the loop that fills and reads the rows (loop.py).
"""

from __future__ import annotations

import torch

from voicefleet_runtime.engine.torch_whisper.decoding import MAX_INITIAL_TIMESTAMP_SECONDS
from voicefleet_runtime.engine.torch_whisper.tokens import SECONDS_PER_TIMESTAMP, DecodingVocabulary

# Columns of the per-row input table the host fills before each step.
TOKEN, POSITION, COUNT, LAST, PENULTIMATE, LAST_TIME, TIMESTAMPS, FORCED_LENGTH = range(8)
INPUT_COLUMNS = 8
# Columns of the per-row output table the host reads after each step.
OUT_TOKEN, OUT_LOGPROB, OUT_NO_SPEECH, OUT_LANGUAGE, OUT_LANGUAGE_PROB = range(5)
OUTPUT_COLUMNS = 5


class RuleTables:
    """Whisper's token rules as masks over the vocabulary, applied to a whole batch at once."""

    def __init__(self, vocabulary: DecodingVocabulary, n_vocab: int, device: torch.device) -> None:
        self.vocabulary = vocabulary
        self.columns = torch.arange(n_vocab, device=device)
        self.suppressed = torch.zeros(n_vocab, dtype=torch.bool, device=device)
        suppressed = [
            i for i in (*vocabulary.suppress_ids, vocabulary.no_timestamps) if i < n_vocab
        ]
        self.suppressed[suppressed] = True
        self.suppressed_at_begin = torch.zeros(n_vocab, dtype=torch.bool, device=device)
        self.suppressed_at_begin[[i for i in vocabulary.suppress_ids_begin if i < n_vocab]] = True
        self.column_flags = self.suppressed.to(torch.int8) | (
            self.suppressed_at_begin.to(torch.int8) << 1
        )
        """Both masks in one byte a column, for token_choice.py: 1 suppressed, 2 at the start."""
        self.max_initial_timestamp = vocabulary.timestamp_begin + round(
            MAX_INITIAL_TIMESTAMP_SECONDS / SECONDS_PER_TIMESTAMP
        )
        self.language_ids = torch.tensor(
            list(vocabulary.language_ids.values()), dtype=torch.long, device=device
        )

    def mask(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """`logits` (batch, vocab) float32 with what each row may not emit set to -inf."""
        begin, eot = self.vocabulary.timestamp_begin, self.vocabulary.eot
        columns = self.columns[None, :]
        is_time = columns >= begin
        count, last, penultimate = (
            rows[:, COUNT, None],
            rows[:, LAST, None],
            rows[:, PENULTIMATE, None],
        )
        last_time = rows[:, LAST_TIME, None]
        timed = rows[:, TIMESTAMPS, None] > 0
        forced_length = rows[:, FORCED_LENGTH, None]
        first = count == 0
        last_was_time = (last >= begin) & ~first
        penultimate_was_time = (count < 2) | (penultimate >= begin)
        floor = torch.where(last_was_time & ~penultimate_was_time, last_time, last_time + 1)
        blocked = self.suppressed[None, :] | (first & self.suppressed_at_begin[None, :])
        blocked = blocked | (~timed & is_time)
        # A window starts with a timestamp, and not a late one.
        blocked = blocked | (timed & first & (~is_time | (columns > self.max_initial_timestamp)))
        # After a pair of timestamps text follows; after a single one, its pair or the end.
        blocked = blocked | (timed & last_was_time & penultimate_was_time & is_time)
        blocked = blocked | (timed & last_was_time & ~penultimate_was_time & (columns < eot))
        # Time never goes backwards, and a segment has a nonzero length.
        blocked = blocked | (timed & (last_time >= 0) & is_time & (columns < floor))
        # A forced length (benchmarks): no end before it, nothing but the end at it.
        forcing = forced_length > 0
        blocked = blocked | (forcing & (count < forced_length) & (columns == eot))
        blocked = blocked | (forcing & (count >= forced_length) & (columns != eot))
        logits = logits.masked_fill(blocked, float("-inf"))
        logprobs = torch.log_softmax(logits, dim=-1)
        timestamp_mass = logprobs[:, begin:].logsumexp(dim=-1, keepdim=True)
        best_text = logprobs[:, :begin].max(dim=-1, keepdim=True).values
        # When time tokens together outweigh every text token, emit a timestamp.
        return logits.masked_fill((timestamp_mass > best_text) & ~is_time & ~forcing, float("-inf"))

    def choose(
        self,
        raw: torch.Tensor,
        rows: torch.Tensor,
        temperatures: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """The step's outputs (batch, OUTPUT_COLUMNS) from `raw` logits (batch, vocab) float32
        and the rows' inputs: the rules applied, each row's token chosen at its temperature
        (`noise` (batch, vocab): draws of Exp(1)). token_choice.py does the same in one kernel."""
        vocabulary = self.vocabulary
        log_normaliser = raw.logsumexp(dim=-1)
        no_speech = (raw[:, vocabulary.no_speech] - log_normaliser).exp()
        if self.language_ids.numel():
            language_probs = raw[:, self.language_ids].softmax(dim=-1)
            language_prob, language = language_probs.max(dim=-1)
        else:
            language_prob = torch.ones_like(no_speech)
            language = torch.zeros_like(no_speech)
        logits = self.mask(raw, rows)
        # Sampling by Gumbel-max: argmax(logits / T - log E) with E ~ Exp(1) is a draw from
        # softmax(logits / T); rows at temperature 0 take the plain argmax.
        sampled = (logits / temperatures.clamp(min=1e-6)[:, None] - noise.log()).argmax(dim=-1)
        token = torch.where(temperatures > 0, sampled, logits.argmax(dim=-1))
        logprob = torch.log_softmax(logits, dim=-1).gather(1, token[:, None])[:, 0]
        return torch.stack(
            [token.float(), logprob, no_speech, language.float(), language_prob], dim=-1
        )

    def advance_inputs(self, rows: torch.Tensor, token: torch.Tensor) -> None:
        """Write each row's next input, as if `token` were sampled: right for a sequence that
        samples; the host patches over the rest (loop.py). A sequence's last token is never
        fed, so even its one extra step after it ends stays inside the context; what that step
        leaves in the table is overwritten (moved over, or zeroed as padding) before use."""
        timestamp_begin = self.vocabulary.timestamp_begin
        advanced = torch.stack(
            [
                token,
                rows[:, POSITION] + 1,
                rows[:, COUNT] + 1,
                token,
                rows[:, LAST],
                torch.where(token >= timestamp_begin, token, rows[:, LAST_TIME]),
                rows[:, TIMESTAMPS],
                rows[:, FORCED_LENGTH],
            ],
            dim=1,
        )
        rows.copy_(advanced)


def choose_tokens(
    logits: torch.Tensor,
    inputs: torch.Tensor,
    temperatures: torch.Tensor,
    noise: torch.Tensor,
    rules: RuleTables,
) -> torch.Tensor:
    """The step's outputs from `logits` (batch, at least the vocabulary), each row's next
    input written over `inputs`: token_choice.choose_tokens in torch's operators, with the
    same arguments, for where the kernel does not run."""
    output = rules.choose(logits[:, : rules.columns.numel()].float(), inputs, temperatures, noise)
    rules.advance_inputs(inputs, output[:, OUT_TOKEN].long())
    return output
