"""The packaged int8 Kokoro graph rewritten into a float graph any ONNX runtime or converter reads.

The packaged graph is onnxruntime's dynamic int8 quantisation of Kokoro-82M plus its fused
contrib ops. Only onnxruntime's CPU kernels run those, so for the GPU path every quantised
weight is dequantised once, here, and each pattern is replaced by the standard op it came from:

- DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(x_scale * w_scale)  =>  MatMul
- DynamicQuantizeLinear -> ConvInteger -> Add(quantised bias) -> Cast -> Mul  =>  Conv with bias
- DynamicQuantizeLSTM (int8 W and R, [dir, in, 4H])  =>  LSTM (float, [dir, 4H, in])
- Gather(int8 table) -> DequantizeLinear  =>  Gather(float table)
- com.microsoft FastGelu(x, bias)  =>  Add -> Gelu(approximate="tanh")
- com.microsoft SkipLayerNormalization(x, skip, gamma, beta)  =>  Add -> LayerNormalization
- com.microsoft FusedMatMul(A, B, transA)  =>  Transpose -> MatMul
- Atan(Div(y, x)), the export of torch.atan2, gets a denominator that is never exactly 0, so
  that atan2(0, 0) is 0 as in torch rather than NaN. The int8 graph on onnxruntime never meets
  an exact 0 there (its STFT leaves rounding noise); torch's FFT does, in silent frames.

The weights keep their int8 rounding (that is the model we ship); the activations are no
longer quantised, so the float graph is, if anything, closer to the original float Kokoro than
the int8 one. Its output is compared with onnxruntime's on the int8 graph in the tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

DEFAULT_DOMAIN_OPSET = 20
"""The packaged graph's opset for the default domain (Gelu's `approximate` needs 20)."""


class GraphRewriteError(RuntimeError):
    """The graph does not have the shape this rewrite knows (a different export)."""


class _Graph:
    """Producers, consumers and initializers of one ONNX graph, for pattern rewriting."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {
            out: node for node in graph.node for out in node.output
        }
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.removed: set[int] = set()
        self.replacements: dict[int, list[onnx.NodeProto]] = {}
        self.new_initializers: list[onnx.TensorProto] = []
        self.added: set[str] = set()

    def array(self, name: str) -> NDArray[np.generic]:
        if name not in self.initializers:
            raise GraphRewriteError(f"{name} is not an initializer")
        return numpy_helper.to_array(self.initializers[name])

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto:
        found = self.consumers.get(name, [])
        if len(found) != 1 or found[0].op_type != op_type:
            kinds = [node.op_type for node in found]
            raise GraphRewriteError(f"{name} feeds {kinds}, expected one {op_type}")
        return found[0]

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto:
        node = self.producer.get(name)
        if node is None or node.op_type != op_type:
            raise GraphRewriteError(f"{name} does not come from {op_type}")
        return node

    def add_initializer(self, name: str, value: NDArray[np.generic]) -> str:
        """Add a float weight once (ALBERT's shared layer reads the same weights 12 times)."""
        if name not in self.added:
            self.added.add(name)
            self.new_initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def replace(self, node: onnx.NodeProto, new_nodes: list[onnx.NodeProto]) -> None:
        self.replacements[id(node)] = new_nodes

    def remove(self, *nodes: onnx.NodeProto) -> None:
        self.removed.update(id(node) for node in nodes)

    def weight_scale(self, scale_product: str) -> NDArray[np.float32]:
        """The weight's scale out of the Mul(x_scale, w_scale) the quantiser inserted."""
        multiply = self.made_by(scale_product, "Mul")
        constants = [name for name in multiply.input if name in self.initializers]
        if len(constants) != 1:
            raise GraphRewriteError(f"{scale_product}: expected one constant scale")
        return self.array(constants[0]).astype(np.float32)


def _dequantized(
    values: NDArray[np.generic], zero_point: NDArray[np.generic]
) -> NDArray[np.float32]:
    return values.astype(np.float32) - zero_point.astype(np.float32)


def _float_input(graph: _Graph, quantized: str) -> str:
    return str(graph.made_by(quantized, "DynamicQuantizeLinear").input[0])


def _rewrite_matmul_integer(graph: _Graph, node: onnx.NodeProto) -> None:
    cast = graph.only_consumer(node.output[0], "Cast")
    multiply = graph.only_consumer(cast.output[0], "Mul")
    scale_product = next(name for name in multiply.input if name != cast.output[0])
    weight = _dequantized(graph.array(node.input[1]), graph.array(node.input[3]))
    weight *= graph.weight_scale(scale_product)  # per output column
    name = graph.add_initializer(f"{node.input[1]}_float", weight)
    graph.replace(
        node,
        [helper.make_node("MatMul", [_float_input(graph, node.input[0]), name], multiply.output)],
    )
    graph.remove(cast, multiply)


def _bias_of(graph: _Graph, quantized_bias: str) -> str:
    """The float bias behind Reshape(Cast(Floor(Div(bias, scale))))."""
    reshape = graph.made_by(quantized_bias, "Reshape")
    cast = graph.made_by(reshape.input[0], "Cast")
    floor = graph.made_by(cast.input[0], "Floor")
    divide = graph.made_by(floor.input[0], "Div")
    return str(divide.input[0])


def _rewrite_conv_integer(graph: _Graph, node: onnx.NodeProto) -> None:
    consumer = graph.consumers[node.output[0]]
    inputs = [_float_input(graph, node.input[0])]
    if len(consumer) == 1 and consumer[0].op_type == "Add":
        add = consumer[0]
        bias = _bias_of(graph, next(name for name in add.input if name != node.output[0]))
        cast = graph.only_consumer(add.output[0], "Cast")
        graph.remove(add)
    else:
        bias = ""
        cast = graph.only_consumer(node.output[0], "Cast")
    multiply = graph.only_consumer(cast.output[0], "Mul")
    scale = graph.weight_scale(next(name for name in multiply.input if name != cast.output[0]))
    weight = _dequantized(graph.array(node.input[1]), graph.array(node.input[3]))
    weight *= scale.reshape((-1,) + (1,) * (weight.ndim - 1)) if scale.size > 1 else scale
    inputs.append(graph.add_initializer(f"{node.input[1]}_float", weight))
    if bias:
        inputs.append(bias)
    conv = helper.make_node("Conv", inputs, multiply.output)
    conv.attribute.extend(node.attribute)
    graph.replace(node, [conv])
    graph.remove(cast, multiply)


def _lstm_weight(graph: _Graph, values: str, scale: str, zero_point: str) -> NDArray[np.float32]:
    """int8 [dir, in, 4H] with one scale per direction -> float [dir, 4H, in] as LSTM wants."""
    directions = graph.array(values).shape[0]
    weight = _dequantized(graph.array(values), graph.array(zero_point).reshape(directions, 1, -1))
    weight *= graph.array(scale).astype(np.float32).reshape(directions, 1, -1)
    return np.transpose(weight, (0, 2, 1))


def _rewrite_dynamic_quantize_lstm(graph: _Graph, node: onnx.NodeProto) -> None:
    x, w, r, b, seq_lens, h0, c0, _peephole, w_scale, w_zero, r_scale, r_zero = node.input
    w_name = graph.add_initializer(f"{w}_float", _lstm_weight(graph, w, w_scale, w_zero))
    r_name = graph.add_initializer(f"{r}_float", _lstm_weight(graph, r, r_scale, r_zero))
    lstm = helper.make_node("LSTM", [x, w_name, r_name, b, seq_lens, h0, c0], node.output)
    lstm.attribute.extend(node.attribute)
    graph.replace(node, [lstm])


def _rewrite_dequantize_linear(graph: _Graph, node: onnx.NodeProto) -> None:
    gather = graph.made_by(node.input[0], "Gather")
    values, scale, zero_point = node.input
    table = _dequantized(graph.array(gather.input[0]), graph.array(zero_point))
    table *= graph.array(scale).astype(np.float32)
    name = graph.add_initializer(f"{gather.input[0]}_float", table)
    new_gather = helper.make_node("Gather", [name, gather.input[1]], node.output)
    new_gather.attribute.extend(gather.attribute)
    graph.replace(node, [new_gather])
    if len(graph.consumers[values]) == 1:
        graph.remove(gather)


def _rewrite_fast_gelu(graph: _Graph, node: onnx.NodeProto) -> None:
    biased = f"{node.output[0]}_biased"
    graph.replace(
        node,
        [
            helper.make_node("Add", list(node.input[:2]), [biased]),
            helper.make_node("Gelu", [biased], list(node.output), approximate="tanh"),
        ],
    )


def _rewrite_skip_layer_norm(graph: _Graph, node: onnx.NodeProto) -> None:
    if any(graph.consumers.get(name) for name in node.output[1:]) or len(node.input) > 4:
        raise GraphRewriteError(f"{node.name}: SkipLayerNormalization with extra inputs/outputs")
    epsilon = next(a.f for a in node.attribute if a.name == "epsilon")
    summed = f"{node.output[0]}_skip_sum"
    graph.replace(
        node,
        [
            helper.make_node("Add", list(node.input[:2]), [summed]),
            helper.make_node(
                "LayerNormalization",
                [summed, node.input[2], node.input[3]],
                [node.output[0]],
                axis=-1,
                epsilon=epsilon,
            ),
        ],
    )


def _rewrite_fused_matmul(graph: _Graph, node: onnx.NodeProto) -> None:
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("transB") or attributes.get("alpha", 1.0) != 1.0:
        raise GraphRewriteError(f"{node.name}: FusedMatMul with transB or alpha")
    a, b = node.input
    if attributes.get("transA"):
        transposed = f"{node.output[0]}_a_transposed"
        graph.replace(
            node,
            [
                # The operand is (1, T, C) here: the batch axis stays, the last two swap.
                helper.make_node("Transpose", [a], [transposed], perm=[0, 2, 1]),
                helper.make_node("MatMul", [transposed, b], list(node.output)),
            ],
        )
    else:
        graph.replace(node, [helper.make_node("MatMul", [a, b], list(node.output))])


ATAN2_TINY = 1e-30
"""Stands in for an exact-zero denominator of atan(y / x): y / tiny keeps y's sign, 0 stays 0."""


def _rewrite_atan(graph: _Graph, node: onnx.NodeProto) -> None:
    divide = graph.producer.get(node.input[0])
    if divide is None or divide.op_type != "Div" or len(graph.consumers[divide.output[0]]) != 1:
        return
    y, x = divide.input
    zero = graph.add_initializer(f"{divide.output[0]}_zero", np.zeros((), np.float32))
    tiny = graph.add_initializer(f"{divide.output[0]}_tiny", np.asarray(ATAN2_TINY, np.float32))
    is_zero, safe_x = f"{divide.output[0]}_x_is_zero", f"{divide.output[0]}_safe_x"
    graph.replace(
        divide,
        [
            helper.make_node("Equal", [x, zero], [is_zero]),
            helper.make_node("Where", [is_zero, tiny, x], [safe_x]),
            helper.make_node("Div", [y, safe_x], list(divide.output)),
        ],
    )


_REWRITES = {
    "Atan": _rewrite_atan,
    "MatMulInteger": _rewrite_matmul_integer,
    "ConvInteger": _rewrite_conv_integer,
    "DynamicQuantizeLSTM": _rewrite_dynamic_quantize_lstm,
    "DequantizeLinear": _rewrite_dequantize_linear,
    "FastGelu": _rewrite_fast_gelu,
    "SkipLayerNormalization": _rewrite_skip_layer_norm,
    "FusedMatMul": _rewrite_fused_matmul,
}


def _live_nodes(nodes: list[onnx.NodeProto], outputs: Iterable[str]) -> list[onnx.NodeProto]:
    """Drop nodes nothing reads any more (the DynamicQuantizeLinear and scale arithmetic)."""
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    return kept


def float_model(int8_model: bytes) -> onnx.ModelProto:
    """The packaged int8 Kokoro graph rewritten to standard float ops (default domain only)."""
    model = onnx.load_from_string(int8_model)
    graph = _Graph(model.graph)
    for node in model.graph.node:
        rewrite = _REWRITES.get(node.op_type)
        if rewrite is not None:
            rewrite(graph, node)
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if id(node) in graph.removed:
            continue
        nodes.extend(graph.replacements.get(id(node), [node]))
    nodes = _live_nodes(nodes, (output.name for output in model.graph.output))
    for node in nodes:
        # An omitted optional input may be written "" or left off; converters read the latter.
        while node.input and not node.input[-1]:
            node.input.pop()
    leftover = sorted({node.op_type for node in nodes if node.domain not in ("", "ai.onnx")})
    if leftover:
        raise GraphRewriteError(f"ops outside the default domain remain: {leftover}")
    used = {name for node in nodes for name in node.input}
    initializers = [
        tensor
        for tensor in [*model.graph.initializer, *graph.new_initializers]
        if tensor.name in used
    ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    del model.graph.value_info[:]
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", DEFAULT_DOMAIN_OPSET))
    return model
