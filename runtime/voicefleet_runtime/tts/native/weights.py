"""Kokoro's parameters, read out of the float graph (float_graph.py's) by where each one is used.

The export kept PyTorch's parameter names only for some initializers (biases, embeddings, the
AdaIN style projections); the others are named after the export's scopes
(`/decoder/decoder/encode/Mul_output_0`) or numbered (`onnx::MatMul_6547`). So each parameter
is named here by the node that reads it:

- a Conv or ConvTranspose: after its bias (`decoder.decoder.encode.conv1.bias` names the conv
  `decoder.decoder.encode.conv1`), or its weight when that has a PyTorch name; the one conv
  with neither, the bias-free 1x1 shortcut of a residual block, after its scope + `.conv1x1`.
  The node's stride, padding, dilation and groups come along.
- a MatMul whose output gets a named bias added: a linear layer named after the bias.
- an LSTM: after the scope of its input (`/encoder/shared/...` -> `encoder.shared`).
- a Gather from a float table: an embedding, after the table's name.
- LayerNormalization with named weights: after the weight's name.
- anything else with a PyTorch-style name (the Snake alphas): as named.

Nothing is downloaded: the graph is the packaged, sha256-checked model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import helper, numpy_helper
from torch import nn

QUANTIZED_SUFFIX = "_quantized_float"
"""What float_graph.py appends to the name of a weight it dequantised."""

SCOPE_PARAMETER_PREFIXES = {
    "encoder.F0.": "encoder.predictor.F0.",
    "encoder.N.": "encoder.predictor.N.",
}
"""Export scopes that differ from the parameter names (the F0 and N branches' blocks)."""


class WeightError(RuntimeError):
    """The graph lacks a parameter the native model needs (a different export)."""


@dataclass(frozen=True)
class ConvSpec:
    """One Conv or ConvTranspose of the graph: its tensors and attributes."""

    weight: NDArray[np.float32]
    bias: NDArray[np.float32] | None
    transposed: bool
    stride: int
    padding: int
    dilation: int
    groups: int
    output_padding: int


@dataclass
class KokoroWeights:
    """The float graph's parameters under the names the native modules ask for."""

    tensors: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    convs: dict[str, ConvSpec] = field(default_factory=dict)

    def tensor(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise WeightError(f"the Kokoro graph has no parameter {name}")
        return torch.from_numpy(np.array(self.tensors[name], dtype=np.float32))

    def conv(self, name: str) -> nn.Conv1d | nn.ConvTranspose1d:
        """A Conv1d or ConvTranspose1d exactly as the graph runs it."""
        spec = self.convs.get(name)
        if spec is None:
            raise WeightError(f"the Kokoro graph has no convolution {name}")
        kernel = spec.weight.shape[-1]
        options = {
            "kernel_size": kernel,
            "stride": spec.stride,
            "padding": spec.padding,
            "dilation": spec.dilation,
            "groups": spec.groups,
            "bias": spec.bias is not None,
        }
        module: nn.Conv1d | nn.ConvTranspose1d
        if spec.transposed:
            channels_in, channels_out = spec.weight.shape[0], spec.weight.shape[1] * spec.groups
            module = nn.ConvTranspose1d(
                channels_in, channels_out, output_padding=spec.output_padding, **options
            )
        else:
            channels_out, channels_in = spec.weight.shape[0], spec.weight.shape[1] * spec.groups
            module = nn.Conv1d(channels_in, channels_out, **options)
        module.weight.data.copy_(torch.from_numpy(spec.weight))
        if spec.bias is not None:
            assert module.bias is not None
            module.bias.data.copy_(torch.from_numpy(spec.bias))
        return module

    def linear(self, name: str) -> nn.Linear:
        weight, bias = self.tensor(f"{name}.weight"), self.tensor(f"{name}.bias")
        module = nn.Linear(weight.shape[1], weight.shape[0])
        module.weight.data.copy_(weight)
        module.bias.data.copy_(bias)
        return module

    def layer_norm(self, name: str, eps: float) -> nn.LayerNorm:
        weight, bias = self.tensor(f"{name}.weight"), self.tensor(f"{name}.bias")
        module = nn.LayerNorm(weight.shape[0], eps=eps)
        module.weight.data.copy_(weight)
        module.bias.data.copy_(bias)
        return module

    def embedding(self, name: str) -> nn.Embedding:
        table = self.tensor(f"{name}.weight")
        module = nn.Embedding(table.shape[0], table.shape[1])
        module.weight.data.copy_(table)
        return module

    def lstm(self, name: str) -> nn.LSTM:
        """A bidirectional, batch-first nn.LSTM from ONNX's packed W, R, B."""
        w, r, b = (self.tensor(f"{name}.{part}") for part in ("W", "R", "B"))
        return onnx_lstm(w, r, b, batch_first=True)


def onnx_lstm(w: torch.Tensor, r: torch.Tensor, b: torch.Tensor, batch_first: bool) -> nn.LSTM:
    """torch's nn.LSTM holding ONNX's packed weights W, R and B (one layer, both directions
    when W has two). ONNX stacks the gates i, o, f, c; torch wants i, f, c, o. ONNX's B holds
    both biases."""
    directions, gates, inputs = w.shape
    hidden = gates // 4
    module = nn.LSTM(inputs, hidden, batch_first=batch_first, bidirectional=directions == 2)
    order = torch.cat([torch.arange(hidden) + hidden * k for k in (0, 2, 3, 1)])
    for direction in range(directions):
        suffix = "_reverse" if direction else ""
        params = {
            "weight_ih": w[direction][order],
            "weight_hh": r[direction][order],
            "bias_ih": b[direction][: 4 * hidden][order],
            "bias_hh": b[direction][4 * hidden :][order],
        }
        for param, value in params.items():
            getattr(module, f"{param}_l0{suffix}").data.copy_(value)
    return module


def _parameter_name(initializer: str) -> str | None:
    """The PyTorch name an initializer kept, if it kept one."""
    name = initializer.removesuffix(QUANTIZED_SUFFIX)
    if name.startswith(("/", "onnx::")) or "." not in name:
        return None
    return name


def _scope(value: str) -> str:
    """`/encoder/F0.1/Mul_3_output_0...` -> `encoder.predictor.F0.1` (the module it belongs to)."""
    scope = ".".join(value.strip("/").split("/")[:-1])
    for exported, parameter in SCOPE_PARAMETER_PREFIXES.items():
        if scope.startswith(exported):
            return parameter + scope.removeprefix(exported)
    return scope


def _conv_name(node: onnx.NodeProto) -> str:
    if len(node.input) > 2 and (bias := _parameter_name(node.input[2])):
        return bias.removesuffix(".bias")
    if weight := _parameter_name(node.input[1]):
        return weight.removesuffix(".weight")
    return f"{_scope(node.input[1])}.conv1x1"


def read_weights(model: onnx.ModelProto) -> KokoroWeights:
    """Every parameter of the float graph, named by the node that reads it."""
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    weights = KokoroWeights()
    for name, array in arrays.items():
        if (parameter := _parameter_name(name)) and array.dtype == np.float32:
            weights.tensors[parameter] = array
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in arrays:
            pads = attributes.get("pads", [0, 0])
            if pads[0] != pads[-1]:
                raise WeightError(f"{node.name}: asymmetric padding {pads}")
            weights.convs[_conv_name(node)] = ConvSpec(
                weight=arrays[node.input[1]].astype(np.float32),
                bias=arrays[node.input[2]].astype(np.float32) if len(node.input) > 2 else None,
                transposed=node.op_type == "ConvTranspose",
                stride=attributes.get("strides", [1])[0],
                padding=pads[0],
                dilation=attributes.get("dilations", [1])[0],
                groups=attributes.get("group", 1),
                output_padding=attributes.get("output_padding", [0])[0],
            )
        elif node.op_type == "Add":
            bias = next((n for n in node.input if n in arrays and n.endswith(".bias")), None)
            other = next((n for n in node.input if n != bias), None)
            matmul = producer.get(other or "")
            if (
                bias
                and matmul is not None
                and matmul.op_type == "MatMul"
                and matmul.input[1] in arrays
            ):
                linear = bias.removesuffix(".bias")
                weights.tensors[f"{linear}.weight"] = arrays[matmul.input[1]].T.copy()
        elif node.op_type == "LSTM":
            lstm = _scope(node.input[0])
            for part, value in zip(("W", "R", "B"), node.input[1:4], strict=True):
                weights.tensors[f"{lstm}.{part}"] = arrays[value]
        elif node.op_type == "STFT":
            weights.tensors["stft.window"] = arrays[node.input[2]].astype(np.float32)
    return weights
