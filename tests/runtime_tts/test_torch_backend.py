"""The torch TTS backend: Kokoro written natively in PyTorch (tts/native/), batched, on CPU.

1. Against onnxruntime on the packaged graph (dequantised, float_graph.py) on the same tokens:
   the durations must match exactly, the F0 and energy curves to float rounding, and the audio
   closely. One input is pinned to zero on both sides first: the phase of the harmonic
   source's STFT, which in near-silent bins is rounding noise (any two FFTs round differently
   there, and the vocoder reads it as an input): with it pinned, the audio must agree sample
   for sample (1e-2 relative; measured 4e-4), which checks every stage.
2. Batching: each chunk of a batch of mixed lengths, voices and speeds comes out as it does
   alone (the same durations; curves and audio to float rounding).
3. As served: VOICEFLEET_TTS_ENGINE=torch speaks a sentence that tiny.en transcribes back, and
   voicefleet_model_info says where Kokoro runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import jiwer
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tests.runtime.conftest import RunningServer, serve_in_thread, tiny_settings
from tests.runtime_tts.test_round_trip import MAX_WORD_ERROR_RATE, heard_back, spoken_words
from voicefleet_runtime.tts.assets import model_bytes
from voicefleet_runtime.tts.engine import SpeechEngine
from voicefleet_runtime.tts.float_graph import float_model
from voicefleet_runtime.tts.native.backend import KokoroNative
from voicefleet_runtime.tts.native.fused import EAGER_TAILS
from voicefleet_runtime.tts.native.layers import AdaIN
from voicefleet_runtime.tts.native.model import ChunkRequest, Intermediates
from voicefleet_runtime.tts.native.source import HarmonicSource
from voicefleet_runtime.tts.vocab import token_ids

SENTENCE = "The train leaves at nine thirty and arrives at eleven forty-five."
BATCH = (
    ("The train leaves at nine thirty.", "af_heart", 1.0),
    ("Hello there.", "am_michael", 1.3),
    ("Doctor Brown bought three books.", "bf_emma", 0.8),
)
HARMONIC_PHASE = "/decoder/decoder/generator/Where_1_output_0"
"""The graph's vocoder input that rounding noise sets in silent bins (the source's STFT phase)."""
GRAPH_DURATIONS = "/encoder/Clip_output_0"
GRAPH_F0 = "/encoder/Squeeze_output_0"
GRAPH_N = "/encoder/Squeeze_1_output_0"
MAX_RELATIVE_ERROR = 1e-2
MAX_CURVE_ERROR = 1e-4


def relative_error(ours: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def graph_with_pinned_phase_and_probes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with HARMONIC_PHASE multiplied by zero, and the durations and curves as outputs."""
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
    for probe in (GRAPH_DURATIONS, GRAPH_F0, GRAPH_N):
        model.graph.output.append(helper.make_tensor_value_info(probe, TensorProto.FLOAT, None))
    return model


def pin_harmonic_phase(source: HarmonicSource) -> torch.utils.hooks.RemovableHandle:
    def zero_phase(_module: object, _inputs: object, spectrum: torch.Tensor) -> torch.Tensor:
        pinned = spectrum.clone()
        pinned[:, pinned.shape[1] // 2 :] = 0
        return pinned

    return source.register_forward_hook(zero_phase)


@pytest.fixture(scope="module")
def torch_server() -> Iterator[RunningServer]:
    yield from serve_in_thread(
        tiny_settings(
            tts_model="kokoro", tts_engine="torch", tts_device="cpu", tts_voices=[], concurrency=2
        )
    )


@pytest.fixture(scope="module")
def requests(torch_server: RunningServer) -> list[ChunkRequest]:
    engine = torch_server.runtime.tts
    assert engine is not None
    chunks = []
    for text, voice, speed in BATCH:
        ids = token_ids("".join(engine.g2p.phonemes(text)), engine.vocab)
        style = engine.voices.voices[voice].style_for(len(ids) - 2)
        chunks.append(ChunkRequest(ids, style, speed))
    return chunks


def native(engine: SpeechEngine) -> KokoroNative:
    assert isinstance(engine.model, KokoroNative)
    return engine.model


def run_pinned(model: KokoroNative, chunks: list[ChunkRequest]) -> Intermediates:
    pin = pin_harmonic_phase(model.net.decoder.generator.source)
    try:
        with torch.inference_mode():
            outcome: Intermediates = model.net(chunks)
            return outcome
    finally:
        pin.remove()


def test_native_model_matches_the_graph_on_onnxruntime(
    torch_server: RunningServer, requests: list[ChunkRequest]
) -> None:
    assert torch_server.runtime.tts is not None
    chunk = requests[0]
    ours = run_pinned(native(torch_server.runtime.tts), [chunk])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        graph_with_pinned_phase_and_probes(float_model(model_bytes())).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    feeds = {
        "tokens": np.asarray([chunk.token_ids], dtype=np.int64),
        "style": chunk.style.reshape(1, -1),
        "speed": np.asarray([chunk.speed], dtype=np.float32),
    }
    audio, durations, f0, n = session.run(None, feeds)

    np.testing.assert_array_equal(ours.durations[0].numpy(), durations.reshape(-1))
    assert relative_error(ours.f0[0], f0.reshape(-1)) <= MAX_CURVE_ERROR
    assert relative_error(ours.n[0], n.reshape(-1)) <= MAX_CURVE_ERROR
    assert ours.audio[0].shape[0] == audio.size
    assert relative_error(ours.audio[0], audio.reshape(-1)) <= MAX_RELATIVE_ERROR


def test_a_chunk_sounds_the_same_alone_and_in_a_batch(
    torch_server: RunningServer, requests: list[ChunkRequest]
) -> None:
    assert torch_server.runtime.tts is not None
    model = native(torch_server.runtime.tts)
    batch = run_pinned(model, requests)
    assert len({piece.shape[0] for piece in batch.audio}) == len(requests)  # mixed lengths
    for row, chunk in enumerate(requests):
        alone = run_pinned(model, [chunk])
        tokens = len(chunk.token_ids)
        assert torch.equal(batch.durations[row, :tokens], alone.durations[0])
        assert not batch.durations[row, tokens:].any()
        curve = alone.f0.shape[1]
        assert relative_error(batch.f0[row, :curve], alone.f0[0]) <= MAX_CURVE_ERROR
        assert relative_error(batch.n[row, :curve], alone.n[0]) <= MAX_CURVE_ERROR
        assert relative_error(batch.audio[row], alone.audio[0]) <= MAX_RELATIVE_ERROR


def test_torch_backend_speech_transcribes_back(torch_server: RunningServer) -> None:
    assert torch_server.runtime.tts is not None
    assert isinstance(torch_server.runtime.tts.model, KokoroNative)
    with torch_server.client() as client:
        hypothesis = heard_back(client, SENTENCE, "af_heart")
        metrics = client.get("/metrics").text
    reference = spoken_words(SENTENCE)
    info = (
        'voicefleet_model_info{backend="torch",compute_type="float32",device="cpu",model="kokoro"}'
    )
    assert f"{info} 1.0" in metrics.splitlines()
    assert jiwer.wer(reference, hypothesis) <= MAX_WORD_ERROR_RATE, hypothesis


def test_the_fused_norm_and_snake_compute_what_the_layers_do(
    torch_server: RunningServer, requests: list[ChunkRequest]
) -> None:
    """fused.py's tails (what VOICEFLEET_TTS_COMPILE compiles), run eagerly in every AdaIN of a
    mixed-length batch, against the layers' own op-by-op path."""
    assert torch_server.runtime.tts is not None
    model = native(torch_server.runtime.tts)
    by_layers = run_pinned(model, requests)
    norms = [module for module in model.net.modules() if isinstance(module, AdaIN)]
    assert len(norms) > 50  # the prosody predictor's, the decoder's and the vocoder's
    assert norms == model.net.norms
    model.net.use_tails(EAGER_TAILS)
    try:
        fused = run_pinned(model, requests)
    finally:
        model.net.use_tails(None)
    assert torch.equal(fused.durations, by_layers.durations)
    assert relative_error(fused.f0, by_layers.f0) <= MAX_CURVE_ERROR
    for ours, reference in zip(fused.audio, by_layers.audio, strict=True):
        assert ours.shape == reference.shape
        assert relative_error(ours, reference) <= MAX_RELATIVE_ERROR


def test_a_compiler_that_cannot_build_leaves_the_model_speaking_op_by_op(
    requests: list[ChunkRequest], caplog: pytest.LogCaptureFixture
) -> None:
    """VOICEFLEET_TTS_COMPILE=on where the compiler cannot build (here: no C++ compiler for
    inductor's CPU kernels; in a slim GPU image: none for Triton's launcher) still speaks."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()  # nothing compiled earlier in this process is reused
    model = KokoroNative(model_bytes(), "cpu", compiled=True)
    try:
        with (
            inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}),
            caplog.at_level("WARNING", logger="voicefleet.runtime"),
        ):
            spoken = model.synthesize_batch(requests)  # a batch: the kind that runs compiled
        eager = model._forward(requests)  # op by op, after the fall back
    finally:
        model.close()
        torch._dynamo.reset()
    assert model.compiled is False
    assert "running them op by op" in caplog.text
    for ours, reference in zip(spoken, eager, strict=True):
        np.testing.assert_array_equal(ours, reference)
