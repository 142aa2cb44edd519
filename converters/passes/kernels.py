"""Pass (``ort-int8``): record the integer kernel each layer is laid out for, read from the graph alone.

The converter does not judge its own output: this pass runs no engine. It reads the QDQ layout that
``weights_to_int8`` and ``activation_qdq`` built and names the onnxruntime CPU kernel that layout is meant to
become; ``sgsc validate`` (``runtime_checks.fusion``) measures what onnxruntime really runs, and
tests/converters/test_kernels_vs_runtime.py checks that the two agree on exported models.

A layer is laid out for an integer kernel when its weight is ``INT8 initializer → DequantizeLinear`` read as
input 1 of its first consumer ``N`` (Conv, Gemm or MatMul) and ``N``'s input 0 comes through a QDQ pair
(``QuantizeLinear → DequantizeLinear``, per tensor). Then, by where ``N``'s output goes:

    N        output → one QuantizeLinear    output stays float (no QuantizeLinear reads it)
    Conv     QLinearConv                    float: onnxruntime keeps Conv on the dequantised weight
    Gemm     QGemm                          QGemm (float output), if its bias is absent or int32 → DQ
    MatMul   QLinearMatMul                  MatMulIntegerToFloat

"→ one QuantizeLinear" also holds through a single Relu when that QuantizeLinear's zero point is its type's
minimum (uint8 0, int8 -128): onnxruntime then drops the Relu. An output that feeds a QuantizeLinear (or a
Relu into one) and something else, or a Relu into a QuantizeLinear with another zero point, stays float; so
does a Gemm with ``alpha`` or ``beta`` other than 1 or whose weight DequantizeLinear omits the zero point. A
MatMul whose input is float (no QDQ pair, e.g. a tensor whose calibration range was not finite) and whose
output stays float runs as ``MatMulNBits`` (8-bit weight, float activation); a Conv or Gemm with a float input
runs in float. Everything else (an embedding's Gather) is ``float``. These rules are what onnxruntime 1.32's
CPU QDQ fusions were measured to do on toy graphs (``transB`` 0 or 1, 2-D and 3-D MatMul, per-channel and
per-tensor weights, uint8 and int8 activations); tests/converters/passes/test_kernels.py replays each case
against onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from converters.passes._base import Pass, dequantize_of, first_consumer
from converters.passes._context import ExportContext, LayerWeight

__all__ = ["KERNELS", "RecordKernels", "activation_of", "layout_kernel", "record_kernels"]

# op → (kernel when its output is requantised, kernel when its output stays float)
_BY_OP = {"Conv": ("QLinearConv", "float"), "Gemm": ("QGemm", "QGemm"),
          "MatMul": ("QLinearMatMul", "MatMulIntegerToFloat")}
KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulNBits")
_QMIN = {ir.DataType.UINT8: 0, ir.DataType.INT8: -128}


def _const(value: ir.Value | None) -> np.ndarray | None:
    return None if value is None or value.const_value is None else value.const_value.numpy()


def _producer_op(value: ir.Value | None) -> str:
    producer = value.producer() if value is not None else None
    return producer.op_type if producer is not None else ""


def _qdq_input(node: ir.Node) -> bool:
    """``node``'s input 0 is ``DequantizeLinear(QuantizeLinear(·))`` with a per-tensor scale."""
    x = node.inputs[0] if node.inputs else None
    dq = x.producer() if x is not None else None
    if dq is None or dq.op_type != "DequantizeLinear" or _producer_op(dq.inputs[0]) != "QuantizeLinear":
        return False
    scale = _const(dq.inputs[1])
    return scale is not None and scale.size == 1


def _folds_relu(q: ir.Node) -> bool:
    """onnxruntime drops a Relu before ``q`` when ``q``'s zero point is its type's minimum."""
    zp = q.inputs[2] if len(q.inputs) > 2 else None
    if zp is None:
        return True  # uint8, zero point 0
    value = _const(zp)
    dtype = zp.const_value.dtype if value is not None else None
    return dtype in _QMIN and int(value.reshape(-1)[0]) == _QMIN[dtype]


def _feeds_quantize(node: ir.Node) -> bool:
    """``node`` is a QuantizeLinear, or a Relu that a QuantizeLinear reads."""
    if node.op_type == "Relu":
        return any(u.node.op_type == "QuantizeLinear" for u in node.outputs[0].uses())
    return node.op_type == "QuantizeLinear"


def _requantised(value: ir.Value) -> bool | None:
    """True: only one QuantizeLinear reads ``value`` (directly, or through a Relu it folds); False: no
    QuantizeLinear does, not even through a Relu; None: a mix, which onnxruntime leaves in float."""
    users = [u.node for u in value.uses()]
    if len(users) == 1 and not value.is_graph_output() and _feeds_quantize(users[0]):
        if users[0].op_type == "QuantizeLinear":
            return True
        after = [u.node for u in users[0].outputs[0].uses()]
        single = len(after) == 1 and not users[0].outputs[0].is_graph_output()
        return True if single and _folds_relu(after[0]) else None
    return None if any(_feeds_quantize(n) for n in users) else False


def _attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else float(attr.value)


def _compute_consumer(graph: ir.Graph, layer: LayerWeight) -> ir.Node | None:
    """The first node reading ``layer``'s weight when it is a Conv / Gemm / MatMul taking it as input 1."""
    if not layer.value.uses():
        return None
    node = first_consumer(graph, layer.value)
    if node.op_type not in _BY_OP or len(node.inputs) < 2 or node.inputs[1] is not layer.value:
        return None
    return node


def activation_of(graph: ir.Graph, layer: LayerWeight) -> str:
    """``"int8"`` when ``layer``'s Conv / Gemm / MatMul takes its input through a QDQ pair, else ``"float"``
    (an embedding's Gather has no quantised input)."""
    node = _compute_consumer(graph, layer)
    return "int8" if node is not None and _qdq_input(node) else "float"


def layout_kernel(graph: ir.Graph, layer: LayerWeight) -> str:
    """The onnxruntime CPU kernel ``layer``'s layout targets (see the module docstring), or ``"float"``."""
    dq = dequantize_of(layer)
    weight = _const(dq.inputs[0]) if dq is not None else None
    if weight is None or dq.inputs[0].const_value.dtype != ir.DataType.INT8 or not layer.value.uses():
        return "float"
    node = _compute_consumer(graph, layer)
    if node is None:
        return "float"
    requantised = _requantised(node.outputs[0])
    if requantised is None:
        return "float"
    if not _qdq_input(node):  # a float input: a MatMul runs as weight-only 8-bit, the rest in float
        return "MatMulNBits" if node.op_type == "MatMul" and not requantised else "float"
    if node.op_type == "Gemm":
        zero_point = len(dq.inputs) > 2 and dq.inputs[2] is not None
        if _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0 or not zero_point:
            return "float"
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if not requantised and bias is not None and _producer_op(bias) != "DequantizeLinear":
            return "float"
    quantised_out, float_out = _BY_OP[node.op_type]
    return quantised_out if requantised else float_out


class RecordKernels(Pass):
    """Sets ``layer.fused`` (``""`` for float), ``ctx.fused`` (layer → kernel or ``"float"``) and
    ``layer.activation`` (whether its input is quantised)."""

    name = "record_kernels"

    def requires(self, ctx: ExportContext) -> None:
        self.require_int8_weights(ctx)
        if ctx.fused:
            raise self.refuse("no kernels recorded yet (it runs once); some are")

    def call(self, ctx: ExportContext) -> None:
        for layer in ctx.layers:
            layer.activation = activation_of(ctx.model.graph, layer)
            kernel = layout_kernel(ctx.model.graph, layer)
            layer.fused = "" if kernel == "float" else kernel
            ctx.fused[layer.name] = kernel

    def ensures(self, ctx: ExportContext) -> None:
        for layer in ctx.layers:
            kernel = ctx.fused.get(layer.name)
            if kernel not in (*KERNELS, "float") or (layer.fused or "float") != kernel:
                raise self.broken(f"one recorded kernel per layer; {layer.name!r} has {kernel!r}")


record_kernels = RecordKernels()
