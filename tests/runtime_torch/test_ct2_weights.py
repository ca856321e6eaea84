"""The CTranslate2 model.bin parser, on the shipped tiny.en weights and on broken files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper.ct2_weights import (
    Ct2Weights,
    WeightFormatError,
    load_ct2_model,
    parse_ct2_model,
)
from voicefleet_runtime.engine.torch_whisper.model import WhisperDimensions, build_whisper


@pytest.fixture(scope="module")
def tiny_en_weights(tiny_en_model: ResolvedModel) -> Ct2Weights:
    return load_ct2_model(tiny_en_model.path / "model.bin")


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def _model_bin(variables: dict[str, torch.Tensor], aliases: dict[str, str]) -> bytes:
    """Bytes laid out as CTranslate2's converter writes them (binary version 6)."""
    type_ids = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.float16: 4}
    out = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<I", 3)
    out += struct.pack("<I", len(variables))
    for name, tensor in variables.items():
        raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        out += _string(name) + struct.pack("<B", tensor.ndim)
        out += b"".join(struct.pack("<I", dim) for dim in tensor.shape)
        out += struct.pack("<BI", type_ids[tensor.dtype], len(raw)) + raw
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    return out


def test_every_tiny_en_variable_is_parsed_with_shapes_matching_the_config(
    tiny_en_weights: Ct2Weights, tiny_en_model: ResolvedModel
) -> None:
    dims = WhisperDimensions.from_weights(tiny_en_weights)
    config = json.loads((tiny_en_model.path / "config.json").read_text())
    assert tiny_en_weights.spec_name == "WhisperSpec"
    assert (dims.n_mels, dims.n_audio_ctx, dims.n_text_ctx) == (80, 1500, 448)
    assert dims.n_audio_layer == dims.n_text_layer == 4
    assert dims.n_audio_head == dims.n_text_head == 6
    # Every alignment head the config names exists in the decoder.
    for layer, head in config["alignment_heads"]:
        assert layer < dims.n_text_layer
        assert head < dims.n_text_head
    assert max(config["suppress_ids"]) < dims.n_vocab
    assert not dims.is_multilingual

    width = dims.n_audio_state
    for layer in range(dims.n_audio_layer):
        scope = f"encoder/layer_{layer}"
        assert tiny_en_weights.get(f"{scope}/self_attention/linear_0/weight").shape == (
            3 * width,
            width,
        )
        assert tiny_en_weights.get(f"{scope}/ffn/linear_0/weight").shape == (4 * width, width)
    for layer in range(dims.n_text_layer):
        scope = f"decoder/layer_{layer}"
        assert tiny_en_weights.get(f"{scope}/attention/linear_1/weight").shape == (
            2 * width,
            width,
        )
    float_tensors = [t for t in tiny_en_weights.variables.values() if t.is_floating_point()]
    parameter_count = sum(t.numel() for t in float_tensors)
    assert 35_000_000 < parameter_count < 40_000_000  # tiny is ~37.8M parameters
    assert all(torch.isfinite(t).all() for t in float_tensors)
    # The output projection is stored once and aliased to the embeddings.
    projection = tiny_en_weights.get("decoder/projection/weight")
    assert projection is tiny_en_weights.get("decoder/embeddings/weight")


def test_every_weight_lands_in_the_torch_model(tiny_en_weights: Ct2Weights) -> None:
    model = build_whisper(tiny_en_weights, torch.device("cpu"), torch.float32)
    conv1 = model.encoder.conv1.weight
    assert conv1.dtype == torch.float32
    assert torch.equal(conv1, tiny_en_weights.get("encoder/conv1/weight").float())
    assert not any(p.is_meta for p in model.parameters())


def test_a_written_file_round_trips_with_its_aliases(tmp_path: Path) -> None:
    weight = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    heads = torch.tensor(6, dtype=torch.int16)
    path = tmp_path / "model.bin"
    path.write_bytes(
        _model_bin({"a/weight": weight, "a/num_heads": heads}, {"b/weight": "a/weight"})
    )
    parsed = load_ct2_model(path)
    assert torch.equal(parsed.get("b/weight"), weight)
    assert int(parsed.get("a/num_heads")) == 6
    assert parsed.has("b/weight")
    assert not parsed.has("c/weight")


def test_a_truncated_model_bin_names_the_problem(
    tiny_en_model: ResolvedModel, tmp_path: Path
) -> None:
    data = (tiny_en_model.path / "model.bin").read_bytes()
    cut = tmp_path / "model.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFormatError, match="truncated"):
        load_ct2_model(cut)


def test_other_corruption_is_a_clear_error() -> None:
    good = _model_bin({"a/weight": torch.ones(2, dtype=torch.float32)}, {})
    with pytest.raises(WeightFormatError, match="binary version"):
        parse_ct2_model(struct.pack("<I", 99) + good[4:])
    with pytest.raises(WeightFormatError, match="unexpected bytes"):
        parse_ct2_model(good + b"junk")
    with pytest.raises(WeightFormatError, match="missing variables"):
        parse_ct2_model(good[:-4] + struct.pack("<I", 1) + _string("x") + _string("nowhere"))
    not_whisper = parse_ct2_model(good)
    with pytest.raises(WeightFormatError, match="no variable named"):
        WhisperDimensions.from_weights(not_whisper)


def test_quantized_weights_are_refused_with_advice(tiny_en_weights: Ct2Weights) -> None:
    variables = dict(tiny_en_weights.variables)
    name = "encoder/conv1/weight"
    variables[name] = variables[name].to(torch.int8)
    quantized = Ct2Weights("WhisperSpec", 3, 6, variables, dict(tiny_en_weights.aliases))
    with pytest.raises(WeightFormatError, match="quantized"):
        build_whisper(quantized, torch.device("cpu"), torch.float32)
