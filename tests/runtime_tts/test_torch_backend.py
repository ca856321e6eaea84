"""The torch TTS backend (the packaged int8 graph, dequantised and converted for GPUs), on CPU.

1. The conversion: torch and onnxruntime run the same float graph on the same tokens. Every
   tensor agrees to ~1e-4 relative up to the vocoder's harmonic source, whose STFT phase the
   vocoder reads as an input; in near-silent bins that phase is rounding noise (onnxruntime's
   DFT and torch's FFT round differently, and onnxruntime's own int8 and float graphs differ
   there as much). So the test pins that one input to zero on both sides (a Mul in the ONNX
   graph, a forward hook on the served torch module): then the audio must agree sample for
   sample (1e-2 relative; measured 8e-4), which checks every converted op.
2. The backend as served: a server with VOICEFLEET_TTS_ENGINE=torch speaks a sentence that
   tiny.en transcribes back word for word.
"""

from __future__ import annotations

from collections.abc import Iterator

import jiwer
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from tests.runtime.conftest import RunningServer, serve_in_thread, tiny_settings
from tests.runtime_tts.test_round_trip import MAX_WORD_ERROR_RATE, heard_back, spoken_words
from voicefleet_runtime.tts.assets import model_bytes
from voicefleet_runtime.tts.float_graph import float_model
from voicefleet_runtime.tts.torch_model import KokoroTorch
from voicefleet_runtime.tts.vocab import token_ids

SENTENCE = "The train leaves at nine thirty and arrives at eleven forty-five."
HARMONIC_PHASE = "/decoder/decoder/generator/Where_1_output_0"
"""The vocoder's input that rounding noise sets in silent bins (atan2 of the source's STFT)."""
HARMONIC_PHASE_NODE = "decoder/decoder/generator/Where_1"
"""The converted module's node that computes HARMONIC_PHASE (onnx2torch's naming)."""
MAX_RELATIVE_ERROR = 1e-2


def with_pinned_phase(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with HARMONIC_PHASE multiplied by zero before anything reads it."""
    pinned, zero = f"{HARMONIC_PHASE}_pinned", f"{HARMONIC_PHASE}_zero"
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
    nodes = list(model.graph.node)
    for node in nodes:
        for index, name in enumerate(node.input):
            if name == HARMONIC_PHASE:
                node.input[index] = pinned
    producer = next(i for i, node in enumerate(nodes) if HARMONIC_PHASE in node.output)
    nodes.insert(producer + 1, helper.make_node("Mul", [HARMONIC_PHASE, zero], [pinned]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.fixture(scope="module")
def torch_server() -> Iterator[RunningServer]:
    yield from serve_in_thread(
        tiny_settings(
            tts_model="kokoro", tts_engine="torch", tts_device="cpu", tts_voices=["af_heart"]
        )
    )


def test_converted_graph_matches_onnxruntime(torch_server: RunningServer) -> None:
    engine = torch_server.runtime.tts
    assert engine is not None
    model = engine.model
    assert isinstance(model, KokoroTorch)
    ids = token_ids("".join(engine.g2p.phonemes(SENTENCE)), engine.vocab)
    style = engine.voices.voices["af_heart"].style_for(len(ids) - 2).reshape(1, -1)

    phase_node = dict(model.module.named_children())[HARMONIC_PHASE_NODE]
    pin = phase_node.register_forward_hook(lambda _module, _inputs, out: torch.zeros_like(out))
    try:
        with torch.inference_mode():
            ours = model.module(torch.tensor([ids]), torch.from_numpy(style), torch.tensor([1.0]))
    finally:
        pin.remove()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        with_pinned_phase(float_model(model_bytes())).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    feeds = {
        "tokens": np.asarray([ids], dtype=np.int64),
        "style": style,
        "speed": np.asarray([1.0], dtype=np.float32),
    }
    reference = np.asarray(session.run(None, feeds)[0])

    assert ours.shape == reference.shape  # the same durations, frame for frame
    error = np.linalg.norm(ours.numpy() - reference) / np.linalg.norm(reference)
    assert error <= MAX_RELATIVE_ERROR


def test_torch_backend_speech_transcribes_back(torch_server: RunningServer) -> None:
    assert torch_server.runtime.tts is not None
    assert isinstance(torch_server.runtime.tts.model, KokoroTorch)
    with torch_server.client() as client:
        hypothesis = heard_back(client, SENTENCE, "af_heart")
    reference = spoken_words(SENTENCE)
    assert jiwer.wer(reference, hypothesis) <= MAX_WORD_ERROR_RATE, hypothesis
