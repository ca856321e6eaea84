"""The benchmarks' baseline GPU path (the runtime's until tts/native/ replaced it): Kokoro-82M
as the packaged graph, dequantised (float_graph.py) and converted node by node to torch.

Not installed with the runtime: run it with `pip install onnx2torch==1.5.15 torchvision`
(bench/device/stage_tts_gpu.sh carries the wheel to the device, whose image has torchvision).

onnx2torch (Apache-2.0, maintained by ENOT) turns the float graph into a torch.fx module node
by node. It lacks converters for a few of the opset-20 versions this graph uses and for LSTM,
STFT and Gelu; they are registered here. The conversion runs at every load from the packaged,
sha256-checked model (a few seconds): nothing is downloaded or written to disk.

Same contract as KokoroOnnx.synthesize: one chunk (pads included) to 24 kHz float32 audio. The
graph's batch axis is fixed at 1, so concurrent requests run side by side (one CUDA stream per
engine thread), not in one batch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import onnx
import onnx2torch
import torch
from numpy.typing import NDArray
from onnx2torch.node_converters.nonzero import OnnxNonZero
from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
from onnx2torch.node_converters.registry import add_converter, get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OperationConverterResult,
    get_const_value,
    onnx_mapping_from_node,
)
from torch import nn

from voicefleet_runtime.tts.float_graph import float_model
from voicefleet_runtime.tts.model import MODEL_SPEED_RANGE
from voicefleet_runtime.tts.native.weights import onnx_lstm

SAME_AS_EARLIER_VERSION = {
    # (op, version in the graph's opset 20) -> the version onnx2torch converts; the changes in
    # between only add attributes or types this graph does not use (checked in float_graph).
    ("Cast", 19): 13,
    ("ConstantOfShape", 20): 9,
    ("Equal", 19): 13,
    ("GreaterOrEqual", 16): 12,
    ("Pad", 19): 13,
    ("Reshape", 19): 14,
    ("Resize", 19): 13,
    ("ScatterND", 18): 16,
    ("Shape", 19): 15,
    ("Split", 18): 13,
}


class _Gelu(nn.Module):
    def __init__(self, approximate: str) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x, approximate=self.approximate)


class _Lstm(nn.Module):
    """ONNX LSTM (layout 0, zero initial state, no sequence lengths) as torch's nn.LSTM.

    Only Y ([T, directions, 1, H]) is computed; the graph reads no final states.
    """

    def __init__(self, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor, hidden: int) -> None:
        super().__init__()
        self.lstm = onnx_lstm(w, r, b, batch_first=False)
        self.directions = w.shape[0]
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        y, _ = self.lstm(x)  # [T, 1, directions * H]
        steps, batch, _ = y.shape
        # A tuple: the converted graph indexes the node's outputs (Y, Y_h, Y_c) and reads Y.
        return (y.view(steps, batch, self.directions, self.hidden).transpose(1, 2),)


class _Stft(nn.Module):
    """ONNX STFT on a real signal, [1, N, 1] or (as this export has it) [1, N]: frames without
    centering, one-sided, as [1, frames, bins, (re, im)]."""

    window: torch.Tensor

    def __init__(self, frame_step: int, window: torch.Tensor, frame_length: int) -> None:
        super().__init__()
        self.frame_step = frame_step
        self.frame_length = frame_length
        self.register_buffer("window", window)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(
            signal[..., 0] if signal.dim() == 3 else signal,
            n_fft=self.frame_length,
            hop_length=self.frame_step,
            win_length=self.frame_length,
            window=self.window,
            center=False,
            onesided=True,
            return_complex=True,
        )  # [1, bins, frames]
        return torch.view_as_real(spectrum).transpose(1, 2)


class _NonZero(nn.Module):
    """ONNX NonZero: the indices as [rank, count]. onnx2torch 1.5.15 returns torch.nonzero's
    [count, rank], which sends the ISTFT's window normalisation to the wrong samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(x).T


def _tensor(name: str, graph: OnnxGraph) -> torch.Tensor:
    value = get_const_value(name, graph)
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def _gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    approximate = node.attributes.get("approximate", "none")
    return OperationConverterResult(_Gelu(approximate), onnx_mapping_from_node(node))


def _reduce_mean(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if node.attributes.get("noop_with_empty_axes", 0):
        raise NotImplementedError("ReduceMean with noop_with_empty_axes")
    axes = _tensor(node.input_values[1], graph).tolist()
    module = OnnxReduceStaticAxes("ReduceMean", axes, node.attributes.get("keepdims", 1))
    mapping = OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values)
    return OperationConverterResult(module, mapping)


def _lstm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    x, w, r, b, *_ = node.input_values
    if node.attributes.get("layout", 0) or node.attributes.get("input_forget", 0):
        raise NotImplementedError("LSTM with layout or input_forget")
    module = _Lstm(
        _tensor(w, graph), _tensor(r, graph), _tensor(b, graph), node.attributes["hidden_size"]
    )
    return OperationConverterResult(
        module, OnnxMapping(inputs=(x,), outputs=node.output_values[:1])
    )


def _stft(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    signal, frame_step, window, frame_length = node.input_values
    if not node.attributes.get("onesided", 1):
        raise NotImplementedError("two-sided STFT")
    module = _Stft(
        int(_tensor(frame_step, graph)),
        _tensor(window, graph).float(),
        int(_tensor(frame_length, graph)),
    )
    return OperationConverterResult(
        module, OnnxMapping(inputs=(signal,), outputs=node.output_values)
    )


def _register_converters() -> None:
    for (op_type, version), earlier in SAME_AS_EARLIER_VERSION.items():
        add_converter(operation_type=op_type, version=version)(get_converter(op_type, earlier))
    for op_type, version, converter in (
        ("Gelu", 20, _gelu),
        ("ReduceMean", 18, _reduce_mean),
        ("LSTM", 14, _lstm),
        ("STFT", 17, _stft),
    ):
        add_converter(operation_type=op_type, version=version)(converter)


_registered = False
_register_lock = threading.Lock()


def convert_float(model: onnx.ModelProto) -> nn.Module:
    """A float graph (float_graph.py's) as a torch module, on the CPU; move it with .to()."""
    global _registered
    with _register_lock:
        if not _registered:
            _register_converters()
            _registered = True
    module: nn.Module = onnx2torch.convert(model)
    for name, child in list(module.named_children()):
        if isinstance(child, OnnxNonZero):
            setattr(module, name, _NonZero())
    return module.eval()


def convert(int8_model: bytes) -> nn.Module:
    """The packaged int8 graph as a float32 torch module."""
    return convert_float(float_model(int8_model))


class KokoroTorch:
    """Kokoro as a torch module on `device`; safe from several threads (each gets a stream)."""

    def __init__(self, model: bytes, device: str) -> None:
        self.device = torch.device(device)
        self.module = convert(model).to(self.device)
        self._local = threading.local()

    @property
    def placement(self) -> str:
        return f"torch {torch.__version__} on {self.device}"

    def _stream(self) -> Any:
        if self.device.type != "cuda":
            return None
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        return stream

    def synthesize(
        self, token_ids: list[int], style: NDArray[np.float32], speed: float
    ) -> NDArray[np.float32]:
        """One chunk (pads included) to 24 kHz mono float32."""
        low, high = MODEL_SPEED_RANGE
        stream = self._stream()
        with torch.inference_mode(), torch.cuda.stream(stream):
            tokens = torch.tensor([token_ids], dtype=torch.int64, device=self.device)
            style_row = torch.from_numpy(np.asarray(style, dtype=np.float32).reshape(1, -1))
            speed_value = torch.tensor([min(max(speed, low), high)], dtype=torch.float32)
            audio = self.module(tokens, style_row.to(self.device), speed_value.to(self.device))
            result = audio.reshape(-1).float().cpu().numpy()
        out: NDArray[np.float32] = result
        return out
