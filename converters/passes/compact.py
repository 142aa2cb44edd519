"""Pass (``compact``): each weight is stored at exactly its learned width per channel and unpacked in the graph.

Storage: one uint8 blob for the model (``packing.pack_channels`` per layer, byte-aligned layer after layer: channel
after channel, ``b_c`` bits a value, offset ``2^(b_c-1)``) and per layer its widths ``bits [C,1,1]`` (uint8) and
scales. The unpacking uses standard ops only, on constants, so onnxruntime folds it away at session creation and
what runs is the same int8 → DequantizeLinear as ``portable`` (tests/converters check the optimised graph):

    stream = Reshape(BitwiseAnd(BitShift(blob[N,1], 0..7), 1), [-1])     # [8N] bits, LSB first (once)
    b      = Cast<int32>(bits)                                            # [C,1,1]
    start  = CumSum(b·K, exclusive) + base + Range(K)[K,1]·b + t[1,1,8]  # bit index of each bit of each value
    ok     = t < b ;  wt = Where(ok, 2^t, 0)
    u      = ReduceSum(Cast<int32>(Gather(stream, Where(ok, start, 0))) · wt, axis 2)       # [C,K]
    w_int  = Reshape(Cast<int8>(u − (ReduceSum(wt) + 1) / 2), weight shape) → DequantizeLinear(scale, axis)

Graph bytes matter here (the budget is the payload + 8 KiB), hence one shared stream, unnamed nodes, short value
names and no intermediate shape annotations (value_info). Precondition: ``locate_weights`` ran; opset ≥ 18 (BitwiseAnd). Postcondition: every quantised weight is
read from the blob (its share: ``ceil(Σ_c b_c·K / 8)`` bytes) and feeds DequantizeLinear.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .. import packing
from ._context import ExportContext, GraphEditor
from .weights import replace_with_dq

__all__ = ["weights_to_packed"]

_SHARED = {
    "shifts": np.arange(8, dtype=np.uint8).reshape(1, 8),
    "one_u8": np.array(1, dtype=np.uint8),
    "flat": np.array([-1], dtype=np.int64),
    "col": np.array([-1, 1], dtype=np.int64),
    "zero_i64": np.array(0, dtype=np.int64),
    "zero": np.array(0, dtype=np.int32),
    "one": np.array(1, dtype=np.int32),
    "two": np.array(2, dtype=np.int32),
    "t": np.arange(8, dtype=np.int32).reshape(1, 1, 8),
    "pow2": (1 << np.arange(8, dtype=np.int32)).reshape(1, 1, 8),
    "axis2": np.array([2], dtype=np.int64),
}


def weights_to_packed(ctx: ExportContext) -> None:
    graph = ctx.model.graph
    if not ctx.layers:
        return
    blobs, bases = [], []
    for layer in ctx.layers:
        bases.append(8 * sum(len(b) for b in blobs))
        blobs.append(packing.pack_channels(np.moveaxis(layer.ints, layer.axis, 0), layer.bits))
    blob = b"".join(blobs) or b"\x00"
    first = next(n for n in graph if any(u.node is n for u in ctx.layers[0].value.uses()))
    top = GraphEditor(graph, "pk.")
    s = {k: top.constant(v, f"pk.{k}", shared=True) for k, v in _SHARED.items()}
    blob_v = top.constant(np.frombuffer(blob, dtype=np.uint8).reshape(-1, 1), "blob")
    stream = top.op("Reshape", [top.op("BitwiseAnd", [top.op("BitShift", [blob_v, s["shifts"]], first,
                                                               direction="RIGHT"), s["one_u8"]], first),
                                s["flat"]], first, "stream")
    for i, (layer, part, base) in enumerate(zip(ctx.layers, blobs, bases)):
        editor = GraphEditor(graph, f"u{i}.")
        before = next(n for n in graph if any(u.node is n for u in layer.value.uses()))
        chan_first_shape = np.moveaxis(layer.ints, layer.axis, 0).shape
        k = int(layer.ints.size // max(chan_first_shape[0], 1))

        def op(op_type: str, *inputs: ir.Value, **attrs) -> ir.Value:
            return editor.op(op_type, list(inputs), before, **attrs)  # noqa: B023 - used within the iteration

        bits_v = GraphEditor(graph, f"{layer.name}.").constant(layer.bits.astype(np.uint8).reshape(-1, 1, 1), "bits")
        k_v = editor.constant(np.array(k, dtype=np.int32), "k")
        b = op("Cast", bits_v, to=ir.DataType.INT32)
        start = op("CumSum", op("Mul", b, k_v), s["zero_i64"], exclusive=1)
        if base:
            start = op("Add", start, editor.constant(np.array(base, dtype=np.int32), "base"))
        ks = op("Reshape", op("Range", s["zero"], k_v, s["one"]), s["col"])
        ok = op("Less", s["t"], b)
        index = op("Where", ok, op("Add", op("Add", start, op("Mul", ks, b)), s["t"]), s["zero"])
        wt = op("Where", ok, s["pow2"], s["zero"])
        bitvals = op("Cast", op("Gather", stream, index, axis=0), to=ir.DataType.INT32)
        u = op("ReduceSum", op("Mul", bitvals, wt), s["axis2"], keepdims=0)
        offset = op("Div", op("Add", op("ReduceSum", wt, s["axis2"], keepdims=0), s["one"]), s["two"])
        shape = editor.constant(np.array(chan_first_shape, dtype=np.int64), "shape")
        w_int = op("Reshape", op("Cast", op("Sub", u, offset), to=ir.DataType.INT8), shape)
        if layer.axis != 0:
            perm = list(range(1, layer.axis + 1)) + [0] + list(range(layer.axis + 1, len(chan_first_shape)))
            w_int = op("Transpose", w_int, perm=perm)
        replace_with_dq(ctx, layer, w_int, GraphEditor(graph, f"{layer.name}."))
        layer.container = "packed"
        layer.stored_bytes = len(part) + layer.bits.size + layer.scale.nbytes
    for node in graph:  # intermediate shapes are optional, and bytes count against this profile's budget
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
                out.type = None
