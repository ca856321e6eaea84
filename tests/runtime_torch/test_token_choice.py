"""The decode step's token rules and choice in one Triton kernel (batched/token_choice.py),
in Triton's interpreter, against its torch twin (step_tables.choose_tokens) on the
same rows: real logits of tiny.en and base for jfk.flac, each under every state the rules tell
apart (first token, after one or two timestamps, after text, a forced length, sampling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from tests.runtime_torch.triton_interpreter import run_case
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.batched import step_tables
from voicefleet_runtime.engine.torch_whisper.batched.step_tables import (
    INPUT_COLUMNS,
    OUT_LANGUAGE,
    OUT_LANGUAGE_PROB,
    OUT_LOGPROB,
    OUT_NO_SPEECH,
    OUT_TOKEN,
    RuleTables,
)
from voicefleet_runtime.engine.torch_whisper.features import LogMelExtractor, pad_or_trim_frames

pytestmark = pytest.mark.slow

CHOICE_RUN = """
import sys, torch
from pathlib import Path
from voicefleet_runtime.engine.torch_whisper.batched.step_tables import RuleTables
from voicefleet_runtime.engine.torch_whisper.batched.token_choice import choose_tokens
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer
case = torch.load(sys.argv[1])
tokenizer = WhisperTokenizer.from_model_folder(Path(case["folder"]), case["multilingual"])
rules = RuleTables(tokenizer.vocabulary, case["vocabulary"], torch.device("cpu"))
inputs = case["inputs"].clone()
out = choose_tokens(case["logits"], inputs, case["temperatures"], case["noise"], rules)
torch.save({"out": out, "inputs": inputs}, sys.argv[2])
"""

PADDING_COLUMNS = 38
"""The step pads the vocabulary for its product (step.padded_embeddings); the kernel must not
read past the vocabulary, so the padding here holds values that would win every choice."""


def real_logits(engine: TorchWhisperEngine, audio: NDArray[np.float32]) -> torch.Tensor:
    """The model's logits (positions, vocabulary) along jfk's start, timestamps and text."""
    model, tokenizer = engine._model, engine.tokenizer
    vocabulary = tokenizer.vocabulary
    tokens = [
        *tokenizer.sot_sequence("en", "transcribe"),
        vocabulary.timestamp_begin,
        *tokenizer.encode(" And so my fellow Americans,"),
        vocabulary.timestamp_begin + 100,
        vocabulary.timestamp_begin + 110,
        *tokenizer.encode(" ask not"),
    ]
    with torch.inference_mode():
        features = LogMelExtractor(model.dims.n_mels, torch.device("cpu"))(audio)
        encoded = model.encoder(pad_or_trim_frames(features)[None].float())
        state = model.decoder.start(encoded)
        logits: torch.Tensor = model.decoder(torch.tensor([tokens]), state)[0]
    return logits[0].float()


def rule_states(begin: int, text: int, eot: int) -> list[tuple[int, ...]]:
    """(count, last, penultimate, last timestamp, timestamps on, forced length, temperature x
    10): one row per state the rules tell apart."""
    return [
        (0, 0, 0, -1, 1, 0, 0),  # first token, timestamps: a timestamp, not a late one
        (0, 0, 0, -1, 0, 0, 0),  # first token, no timestamps
        (1, begin + 10, 0, begin + 10, 1, 0, 0),  # after the first timestamp: text
        (5, text, begin + 20, begin + 20, 1, 0, 0),  # after text: time moves forward
        (5, begin + 30, text, begin + 30, 1, 0, 0),  # a single timestamp: its pair or the end
        (5, begin + 31, begin + 30, begin + 31, 1, 0, 0),  # a pair: text follows
        (3, text, text, -1, 0, 10, 0),  # a forced length not reached: no end
        (10, text, text, -1, 0, 10, 0),  # at the forced length: the end only
        (4, text, begin + 12, begin + 12, 1, 0, 7),  # sampling at 0.7, timestamps
        (4, text, text, -1, 0, 0, 10),  # sampling at 1.0
        (6, eot - 5, text, -1, 0, 0, 0),  # plain text
    ]


def choice_case(engine: TorchWhisperEngine, audio: NDArray[np.float32]) -> dict[str, object]:
    logits = real_logits(engine, audio)
    vocabulary = engine.tokenizer.vocabulary
    begin, eot = vocabulary.timestamp_begin, vocabulary.eot
    states = rule_states(begin, engine.tokenizer.encode(" so")[0], eot)
    rows = []
    for index in range(len(logits)):
        for state in states[index % 3 :: 3]:
            rows.append((index, state))
    # Timestamps made likelier at every other position, so that each state meets rows whose
    # timestamps together outweigh the best text token.
    boosted = logits.clone()
    boosted[:, begin:] += 8.0
    row_logits = torch.stack([(boosted if index % 2 else logits)[index] for index, _ in rows])
    padded = torch.cat([row_logits, torch.full((len(rows), PADDING_COLUMNS), 1e4)], dim=1)
    inputs = torch.zeros(len(rows), INPUT_COLUMNS, dtype=torch.long)
    # step_tables' input columns: token, position, count, last, penultimate, last time,
    # timestamps, forced length.
    for n, (index, state) in enumerate(rows):
        inputs[n] = torch.tensor([state[1], index + 4, *state[:6]])
    temperatures = torch.tensor([state[6] / 10 for _, state in rows], dtype=torch.float32)
    generator = torch.Generator().manual_seed(7)
    noise = torch.empty(len(rows), logits.shape[1]).exponential_(generator=generator)
    return {
        "logits": padded,
        "inputs": inputs,
        "temperatures": temperatures,
        "noise": noise,
        "vocabulary": logits.shape[1],
    }


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_the_kernel_chooses_as_the_torch_rules_do(
    model: str,
    request: pytest.FixtureRequest,
    jfk_audio: NDArray[np.float32],
    tmp_path: Path,
) -> None:
    prefix = "tiny_en" if model == "tiny.en" else "base"
    engine: TorchWhisperEngine = request.getfixturevalue(f"{prefix}_engine")
    folder = request.getfixturevalue(f"{prefix}_model").path
    case = choice_case(engine, jfk_audio)
    multilingual = engine._model.dims.is_multilingual
    result = run_case(
        CHOICE_RUN, {**case, "folder": str(folder), "multilingual": multilingual}, tmp_path
    )

    vocabulary_size = int(case["vocabulary"])  # type: ignore[call-overload]
    rules = RuleTables(engine.tokenizer.vocabulary, vocabulary_size, torch.device("cpu"))
    logits, inputs = case["logits"], case["inputs"]
    assert isinstance(logits, torch.Tensor)
    assert isinstance(inputs, torch.Tensor)
    expected_inputs = inputs.clone()
    expected = step_tables.choose_tokens(
        logits,
        expected_inputs,
        case["temperatures"],  # type: ignore[arg-type]
        case["noise"],  # type: ignore[arg-type]
        rules,
    )
    out = result["out"]

    assert torch.equal(out[:, OUT_TOKEN], expected[:, OUT_TOKEN])
    assert torch.equal(result["inputs"], expected_inputs)
    assert torch.equal(out[:, OUT_LANGUAGE], expected[:, OUT_LANGUAGE])
    # Sums of 51,865 exponentials in another order: equal to a few units of float32's last
    # place of the total.
    for column in (OUT_LOGPROB, OUT_NO_SPEECH, OUT_LANGUAGE_PROB):
        torch.testing.assert_close(out[:, column], expected[:, column], rtol=1e-4, atol=1e-4)
    # The rows reach every kind of outcome: text, a timestamp, the end.
    vocabulary = engine.tokenizer.vocabulary
    tokens = expected[:, OUT_TOKEN].long()
    assert bool((tokens >= vocabulary.timestamp_begin).any())
    assert bool((tokens == vocabulary.eot).any())
    assert bool((tokens < vocabulary.eot).any())
