"""Pass (``compact``): each weight is stored at exactly its learned width per channel and unpacked in the
graph.

Storage: one uint8 blob for the model (``packing.pack_channels`` per layer, byte-aligned layer after layer:
channel after channel, ``b_c``-bit two's complement values; one zero byte of padding at the end) and per layer
its widths ``bits [C,1]`` (uint8) and scales. The unpacking uses standard ops only, on constants, so
onnxruntime folds it away at session creation and what runs is the same int8 → DequantizeLinear as
``portable`` (tests/converters check the optimised graph); the stream is built once:

    stream = Cast<int32>(Reshape(BitwiseAnd(BitShift(blob[N,1], 0..7), 1), [-1]))  # [8N] bits, LSB first
    b      = Cast<int32>(bits)                                                      # [C,1]
    wt     = Gather(W, b)     # [C,1,8]: row b of W: the two's complement bit weights 1, 2, …, −2^(b−1), 0…
    pos    = Range(K)·b + CumSum(b·K, exclusive) + base                             # [C,K] first bit a value
    u      = ReduceSum(Gather(stream, Unsqueeze(pos, 2) + t[8]) · wt, axis 2)       # [C,K]
    w_int  = Reshape(Cast<int8>(u), weight shape) → DequantizeLinear(scale, axis)

Bits past a channel's width are read (from the next values, or the padding byte) and weighted by zero. Graph
bytes matter here (the budget is the payload + 8 KiB), hence one shared stream, few nodes a layer, unnamed
nodes, short value names, no intermediate shape annotations and no attributes that restate their default.

Precondition: ``locate_weights`` ran (each weight is the float initializer it found); opset ≥ 18 (BitwiseAnd).
Postcondition: every quantised weight is read from the blob (its share: ``ceil(Σ_c b_c·K / 8)`` bytes) and
feeds DequantizeLinear; no float weight is left.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from converters import packing
from converters.passes._base import Pass, dequantize_of, first_consumer
from converters.passes._context import ExportContext, GraphEditor
from converters.passes.weights import replace_with_dq

__all__ = ["BIT_WEIGHTS", "WeightsToPacked", "weights_to_packed"]

_MIN_OPSET = 18  # BitwiseAnd, BitShift on uint8


def _bit_weights() -> np.ndarray:
    """``W[b, t]``: weight of bit ``t`` of a ``b``-bit two's complement integer (0 past the width)."""
    w = np.zeros((9, 8), dtype=np.int32)
    for b in range(1, 9):
        w[b, : b - 1] = 1 << np.arange(b - 1)
        w[b, b - 1] = -(1 << (b - 1))
    return w  # Gather(W, b[C,1]) → [C,1,8]


BIT_WEIGHTS = _bit_weights()

_SHARED = {
    "shifts": np.arange(8, dtype=np.uint8).reshape(1, 8),
    "one_u8": np.array(1, dtype=np.uint8),
    "flat": np.array([-1], dtype=np.int64),
    "zero_i64": np.array(0, dtype=np.int64),
    "zero": np.array(0, dtype=np.int32),
    "one": np.array(1, dtype=np.int32),
    "t": np.arange(8, dtype=np.int32),
    "W": BIT_WEIGHTS,
    "axis2": np.array([2], dtype=np.int64),
}


class WeightsToPacked(Pass):
    name = "weights_to_packed"

    def requires(self, ctx: ExportContext) -> None:
        self.require_initializers(ctx)
        if ctx.model.opset_imports.get("", 0) < _MIN_OPSET:
            raise self.refuse(f"opset {_MIN_OPSET} or later (BitwiseAnd); the graph has "
                              f"{ctx.model.opset_imports.get('', 0)}")

    def call(self, ctx: ExportContext) -> None:
        _pack(ctx)

    def ensures(self, ctx: ExportContext) -> None:
        for layer in ctx.layers:
            dq = dequantize_of(layer)
            if (
                dq is None
                or dq.inputs[0] is None
                or dq.inputs[0].producer() is None
                or layer.container != "packed"
            ):
                raise self.broken(
                    f"each weight is unpacked from the blob → DequantizeLinear; layer {layer.name!r} is not"
                )
            if ctx.model.graph.initializers.get(layer.value.name) is not None:
                raise self.broken(f"no float weight is left; {layer.value.name!r} is")


weights_to_packed = WeightsToPacked()


def _pack(ctx: ExportContext) -> None:
    graph = ctx.model.graph
    blobs, bases = [], []
    for layer in ctx.layers:
        bases.append(8 * sum(len(b) for b in blobs))
        blobs.append(packing.pack_channels(np.moveaxis(layer.ints, layer.axis, 0), layer.bits))
    blob = b"".join(blobs) + b"\x00"  # reads past the last value's width stay in range
    first = first_consumer(graph, ctx.layers[0].value)
    top = GraphEditor(graph, "pk.")
    s = {k: top.constant(v, f"pk.{k}", shared=True) for k, v in _SHARED.items()}
    blob_v = top.constant(np.frombuffer(blob, dtype=np.uint8).reshape(-1, 1), "blob")
    bits_u8 = top.op(
        "BitwiseAnd",
        [top.op("BitShift", [blob_v, s["shifts"]], first, direction="RIGHT"), s["one_u8"]],
        first,
    )
    stream = top.op(
        "Cast", [top.op("Reshape", [bits_u8, s["flat"]], first)], first, "stream", to=ir.DataType.INT32
    )
    for i, (layer, part, base) in enumerate(zip(ctx.layers, blobs, bases)):
        editor = GraphEditor(graph, f"u{i}.")
        before = first_consumer(graph, layer.value)
        chan_first_shape = np.moveaxis(layer.ints, layer.axis, 0).shape
        k = int(layer.ints.size // max(chan_first_shape[0], 1))

        def op(op_type: str, *inputs: ir.Value, **attrs) -> ir.Value:
            return editor.op(op_type, list(inputs), before, **attrs)  # noqa: B023 - used within the iteration

        bits_v = GraphEditor(graph, f"{layer.name}.").constant(
            layer.bits.astype(np.uint8).reshape(-1, 1), "bits"
        )
        k_v = editor.constant(np.array(k, dtype=np.int32), "k")
        b = op("Cast", bits_v, to=ir.DataType.INT32)
        wt = op("Gather", s["W"], b, axis=0)
        start = op("CumSum", op("Mul", b, k_v), s["zero_i64"], exclusive=1)
        if base:
            start = op("Add", start, editor.constant(np.array(base, dtype=np.int32), "base"))
        pos = op("Add", op("Mul", op("Range", s["zero"], k_v, s["one"]), b), start)
        index = op("Add", op("Unsqueeze", pos, s["axis2"]), s["t"])
        u = op("ReduceSum", op("Mul", op("Gather", stream, index, axis=0), wt), s["axis2"], keepdims=0)
        shape = editor.constant(np.array(chan_first_shape, dtype=np.int64), "shape")
        w_int = op("Reshape", op("Cast", u, to=ir.DataType.INT8), shape)
        if layer.axis != 0:
            perm = list(range(1, layer.axis + 1)) + [0] + list(range(layer.axis + 1, len(chan_first_shape)))
            w_int = op("Transpose", w_int, perm=perm)
        replace_with_dq(ctx, layer, w_int, GraphEditor(graph, f"{layer.name}."))
        layer.container = "packed"
        layer.stored_bytes = len(part) + layer.bits.size + layer.scale.nbytes
    _slim(graph, ctx.opset)


def _slim(graph: ir.Graph, opset: int) -> None:
    """Drop what the format does not need: node names, intermediate shapes, attributes equal to their
    default."""
    for node in graph:
        node.name = None
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
                out.type = None
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        except onnx.defs.SchemaError:
            continue
        for name, attr in list(node.attributes.items()):
            spec = schema.attributes.get(name)
            if spec is None or not spec.default_value.type:
                continue
            default = onnx.helper.get_attribute_value(spec.default_value)
            value = onnx.helper.get_attribute_value(ir.serde.serialize_attribute(attr))
            if value == default:
                del node.attributes[name]
