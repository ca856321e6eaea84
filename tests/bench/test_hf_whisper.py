"""bench/hf_whisper.py: our CTranslate2 tiny.en, converted, is the same network in HF's hands.

The GPU benchmark's anchor is only fair if HF runs the very weights our engine runs, so this
checks the conversion where CI runs: same encoder output, same logits, same greedy text on
the real JFK recording, and a refusal for a file the one-to-one mapping does not fit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from faster_whisper.audio import decode_audio
from hf_whisper import build_hf_whisper, hf_state_dict
from speech_corpus import normalise
from transformers import WhisperForConditionalGeneration

from voicefleet_runtime.engine.base import DecodeOptions
from voicefleet_runtime.engine.models import ResolvedModel, resolve_model
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.ct2_weights import (
    Ct2Weights,
    WeightFormatError,
    load_ct2_model,
)
from voicefleet_runtime.engine.torch_whisper.features import LogMelExtractor, pad_or_trim_frames
from voicefleet_runtime.engine.torch_whisper.model import Whisper, build_whisper
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer

CPU = torch.device("cpu")
MAX_TOKENS = 40


@pytest.fixture(scope="module")
def tiny_en() -> ResolvedModel:
    return resolve_model("tiny.en", None)


@pytest.fixture(scope="module")
def weights(tiny_en: ResolvedModel) -> Ct2Weights:
    return load_ct2_model(tiny_en.path / "model.bin")


@pytest.fixture(scope="module")
def tokenizer(tiny_en: ResolvedModel) -> WhisperTokenizer:
    return WhisperTokenizer.from_model_folder(tiny_en.path, multilingual=False)


@pytest.fixture(scope="module")
def ours(weights: Ct2Weights) -> Whisper:
    return build_whisper(weights, CPU, torch.float32)


@pytest.fixture(scope="module")
def hf(weights: Ct2Weights, tokenizer: WhisperTokenizer) -> WhisperForConditionalGeneration:
    return build_hf_whisper(weights, CPU, torch.float32, tokenizer.vocabulary)


@pytest.fixture(scope="module")
def jfk_mel(shared_audio: Path) -> torch.Tensor:
    audio = decode_audio(str(shared_audio / "jfk.flac"))
    return pad_or_trim_frames(LogMelExtractor(80, CPU)(audio))[None]


def hf_greedy(
    hf: WhisperForConditionalGeneration, audio: torch.Tensor, prompt: list[int], eot: int
) -> list[int]:
    """HF's own forward with its key/value cache, one token at a time, no token rules."""
    tokens = list(prompt)
    new, cache = torch.tensor([prompt]), None
    for _ in range(MAX_TOKENS):
        output = hf(encoder_outputs=(audio,), decoder_input_ids=new, cache=cache, use_cache=True)
        cache = output.cache
        token = int(output.logits[0, -1].argmax())
        if token == eot:
            break
        tokens.append(token)
        new = torch.tensor([[token]])
    return tokens[len(prompt) :]


@torch.inference_mode()
def test_hf_runs_the_same_network_as_our_engine_on_jfk(
    tiny_en: ResolvedModel,
    ours: Whisper,
    hf: WhisperForConditionalGeneration,
    tokenizer: WhisperTokenizer,
    jfk_mel: torch.Tensor,
    shared_audio: Path,
) -> None:
    ours_audio = ours.encoder(jfk_mel)
    hf_audio = hf.model.encoder(jfk_mel).last_hidden_state
    torch.testing.assert_close(hf_audio, ours_audio, rtol=1e-4, atol=1e-4)

    vocabulary = tokenizer.vocabulary
    prompt = [vocabulary.sot, vocabulary.no_timestamps]
    greedy = hf_greedy(hf, hf_audio, prompt, vocabulary.eot)
    sequence = torch.tensor([prompt + greedy])
    ours_logits, _, _ = ours.decoder(sequence, ours.decoder.start(ours_audio))
    hf_logits = hf(encoder_outputs=(hf_audio,), decoder_input_ids=sequence).logits
    torch.testing.assert_close(hf_logits, ours_logits, rtol=1e-3, atol=1e-3)

    engine = TorchWhisperEngine.load(tiny_en, "cpu", "float32", cpu_threads=2)
    audio = decode_audio(str(shared_audio / "jfk.flac"))
    _, segments = engine.transcribe(audio, DecodeOptions(beam_size=1))
    ours_text = "".join(segment.text for segment in segments)
    assert normalise(tokenizer.decode(greedy)) == normalise(ours_text)
    assert "ask not what your country can do for you" in normalise(ours_text)


def test_every_stored_tensor_lands_in_one_hf_parameter(
    weights: Ct2Weights, hf: WhisperForConditionalGeneration
) -> None:
    state = hf_state_dict(weights)
    hf_names = set(hf.state_dict()) - {"proj_out.weight"}  # tied to the token embeddings
    assert set(state) == hf_names
    # HF's key projections carry no bias: the zero key third of each fused bias is dropped.
    key_bias = sum(
        tensor.numel() // 3
        for name, tensor in weights.variables.items()
        if name.endswith("self_attention/linear_0/bias")
    ) + sum(
        tensor.numel() // 2
        for name, tensor in weights.variables.items()
        if name.endswith("attention/linear_1/bias") and "self_attention" not in name
    )
    stored = sum(tensor.numel() for tensor in weights.variables.values() if tensor.ndim > 0)
    assert sum(tensor.numel() for tensor in state.values()) == stored - key_bias
    assert hf.proj_out.weight is hf.model.decoder.embed_tokens.weight


def test_a_nonzero_key_bias_is_refused(weights: Ct2Weights) -> None:
    name = "encoder/layer_0/self_attention/linear_0/bias"
    bias = weights.variables[name].clone()
    bias[bias.numel() // 3] = 1.0  # the first element of the key part
    tampered = dataclasses.replace(weights, variables={**weights.variables, name: bias})
    with pytest.raises(WeightFormatError, match="key projection's bias is not zero"):
        hf_state_dict(tampered)


def test_a_variable_hf_has_no_place_for_is_refused(weights: Ct2Weights) -> None:
    extra = {**weights.variables, "decoder/layer_0/adapter/weight": torch.zeros(2, 2)}
    with pytest.raises(WeightFormatError, match="no Hugging Face counterpart"):
        hf_state_dict(dataclasses.replace(weights, variables=extra))
