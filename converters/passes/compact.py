"""Pass (``compact``): each weight is stored at exactly its learned width per channel and unpacked in the
graph.

Storage: one uint8 blob for the model (every layer's channels, channel after channel, each value in its
channel's ``b_c``-bit two's complement, LSB first, ``packing.pack_widths``; no padding between layers, two
zero bytes at the end), the widths of every channel of every layer in one uint8 tensor, two to a byte, and
per layer its scales. One *reader* unpacks a group of consecutive layers (at most ``GROUP_VALUES`` values,
which bounds the memory the unpacking takes) whatever their shapes, from per-value widths:

    w      = the group's channel widths                            # [C] int32, 0..8 (from the nibbles)
    K      = values per channel (each layer's, repeated)           # [C]
    width  = repeat(w, K)                                          # [N] the width of each value
    pos    = CumSum(width, exclusive) + base                       # [N] its first bit in the blob
    word   = B[pos // 8] + 256·B[pos // 8 + 1]                     # B = Cast<int32>(blob)
    u      = (word // 2^(pos mod 8)) mod 2^width                   # its bits, unsigned
    v      = (u + h) mod 2^width − h,  h = 2^(width−1), 0 at width 0   # two's complement → signed
    w_int  = Split(Cast<int8>(v)) → Reshape(weight shape) [→ Transpose] → DequantizeLinear(scale, axis)

``repeat(x, n)`` (each ``x[i]`` ``n[i] > 0`` times) is ``CumSum(ScatterElements(zeros[Σn], CumSum(n,
exclusive), x − x_prev))``. The float tensors (scales, biases, norms) that float16 holds exactly — the
artifact rounds them so (``sgsc_export.train.freeze``) — are one float16 tensor, ``pk.half``, Cast to float
and Split (``_half_floats``). The unpacking is all int32 arithmetic (no unsigned shifts, whose rounding
engines differ on; ``Div`` of non-negative integers is floor everywhere), on constants, so onnxruntime folds
it away at session creation and what runs is the same int8 → DequantizeLinear as ``portable``
(tests/converters check the optimised graph). A reader is ~40 nodes, a layer two or three (Reshape,
DequantizeLinear, a Transpose for a MatMul weight): the graph's bytes stay small beside the payload (issue
17's budget: Σ bits/8 + 4 B a channel + 10 % + 2 KiB). Node names, intermediate shapes and attributes equal to
their default are dropped.

Precondition: ``locate_weights`` ran (each weight is the float initializer it found); opset ≥ 13 (Split's
sizes as an input). Postcondition: every quantised weight is read from the blob (its share:
``Σ_c b_c·K / 8`` bytes) and feeds DequantizeLinear; no float weight is left.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir

from converters import packing
from converters.passes._base import Pass, dequantize_of, first_consumer
from converters.passes._context import ExportContext, GraphEditor, LayerWeight
from converters.passes.weights import replace_with_dq
from sgsc_export.errors import ExportError

__all__ = ["GROUP_VALUES", "WeightsToPacked", "weights_to_packed"]

_MIN_OPSET = 13  # Split with its sizes as an input
GROUP_VALUES = 1 << 20  # values one reader unpacks at most (its int32 intermediates take ~4 B a value each)
_MAX_BITS = (1 << 31) - 64  # bit positions are int32

_SHARED = {
    "i0": np.array([0], dtype=np.int32),
    "zero": np.array(0, dtype=np.int64),
    "flat": np.array([-1], dtype=np.int64),
    "s0": np.array([0], dtype=np.int64),
    "e1": np.array([-1], dtype=np.int64),
    "one": np.array(1, dtype=np.int32),
    "c8": np.array(8, dtype=np.int32),
    "c16": np.array(16, dtype=np.int32),
    "c256": np.array(256, dtype=np.int32),
    "P": (1 << np.arange(9)).astype(np.int32),  # 2^t
    "H": np.array([0] + [1 << (t - 1) for t in range(1, 9)], dtype=np.int32),  # 2^(t−1); 0 at t = 0
}


class WeightsToPacked(Pass):
    name = "weights_to_packed"

    def requires(self, ctx: ExportContext) -> None:
        self.require_initializers(ctx)
        if ctx.model.opset_imports.get("", 0) < _MIN_OPSET:
            raise self.refuse(f"opset {_MIN_OPSET} or later (Split with sizes as an input); the graph has "
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


def _groups(layers: list[LayerWeight], limit: int) -> list[list[int]]:
    """Consecutive layers, at most ``limit`` values a group (a larger layer is a group of its own)."""
    groups: list[list[int]] = []
    size = limit
    for i, layer in enumerate(layers):
        if size + layer.ints.size > limit:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += int(layer.ints.size)
    return groups


def _zeros(op: Callable[..., ir.Value], zero: ir.Value, n: ir.Value) -> ir.Value:
    """int32 zeros of shape ``n``: the shared ``[0]`` expanded (a ConstantOfShape's value attribute is a
    tensor of its own in every node: 28 bytes more)."""
    return op("Expand", zero, n)


def _pack(ctx: ExportContext) -> None:
    graph, layers = ctx.model.graph, ctx.layers
    if not layers:  # nothing quantised: the graph as it is, slimmed
        _finish(graph, ctx.opset)
        return
    chan_first = [np.moveaxis(layer.ints, layer.axis, 0) for layer in layers]
    widths = [layer.bits.astype(np.int64).reshape(-1) for layer in layers]
    per = [int(v.size // max(v.shape[0], 1)) for v in chan_first]
    for layer, v, k in zip(layers, chan_first, per):
        if v.shape[0] == 0 or k == 0:
            raise ExportError(f"layer {layer.name!r} has an empty weight {tuple(v.shape)}; nothing to pack")
    layer_bits = [int(w.sum()) * k for w, k in zip(widths, per)]
    if sum(layer_bits) > _MAX_BITS:
        raise ExportError(f"the compact profile holds at most {_MAX_BITS // 8} bytes of packed weights; this "
                          f"model needs {sum(layer_bits) // 8}: export it with --profile portable")
    stream = packing.pack_widths(
        np.concatenate([v.reshape(-1) for v in chan_first]),
        np.concatenate([np.repeat(w, k) for w, k in zip(widths, per)]),
    )
    blob = stream + b"\x00\x00"  # the reader takes two bytes from a value's first byte, even at the end
    nibbles = np.concatenate([*widths, np.zeros(sum(map(len, widths)) % 2, np.int64)]).reshape(-1, 2)
    nibbles = (nibbles[:, 0] | (nibbles[:, 1] << 4)).astype(np.uint8)

    first = min((first_consumer(graph, layer.value) for layer in layers), key=_order(graph))
    top = GraphEditor(graph, "pk.")
    s = {k: top.constant(v, f"pk.{k}", shared=True) for k, v in _SHARED.items()}

    def op(op_type: str, *inputs: ir.Value, **attrs) -> ir.Value:
        return top.op(op_type, list(inputs), first, **attrs)

    def const(array: np.ndarray) -> ir.Value:
        return top.constant(array, "c")

    blob_i32 = op("Cast", top.constant(np.frombuffer(blob, dtype=np.uint8), "blob"), to=ir.DataType.INT32)
    packed = op("Cast", top.constant(nibbles, "bits"), to=ir.DataType.INT32)
    pair = op("Concat", op("Unsqueeze", op("Mod", packed, s["c16"]), s["flat"]),
              op("Unsqueeze", op("Div", packed, s["c16"]), s["flat"]), axis=1)
    bits_all = op("Reshape", pair, s["flat"])  # [ΣC, rounded up to even] int32: every channel's width

    chan0 = base = 0
    for members in _groups(layers, GROUP_VALUES):
        n_chan = sum(len(widths[i]) for i in members)
        n_val = sum(int(layers[i].ints.size) for i in members)
        w = op("Slice", bits_all, const(np.array([chan0], np.int64)),
               const(np.array([chan0 + n_chan], np.int64)))
        # K per channel: a step at each layer's first channel, summed up
        layer_starts = np.cumsum([0] + [len(widths[i]) for i in members[:-1]]).astype(np.int64)
        k_delta = np.diff(np.array([0] + [per[i] for i in members], dtype=np.int64)).astype(np.int32)
        k = op("CumSum", op("ScatterElements", _zeros(op, s["i0"], const(np.array([n_chan], np.int64))),
                            const(layer_starts), const(k_delta), axis=0), s["zero"])
        # width of each value: w repeated K times (see the module docstring)
        starts = op("CumSum", k, s["zero"], exclusive=1)
        step = op("Sub", w, op("Concat", s["i0"], op("Slice", w, s["s0"], s["e1"]), axis=0))
        zeros = _zeros(op, s["i0"], const(np.array([n_val], np.int64)))
        width = op("CumSum", op("ScatterElements", zeros, starts, step, axis=0), s["zero"])
        pos = op("CumSum", width, s["zero"], exclusive=1)
        if base:
            pos = op("Add", pos, const(np.array(base, np.int32)))
        byte = op("Div", pos, s["c8"])
        word = op("Add", op("Gather", blob_i32, byte, axis=0),
                  op("Mul", op("Gather", blob_i32, op("Add", byte, s["one"]), axis=0), s["c256"]))
        full, half = op("Gather", s["P"], width, axis=0), op("Gather", s["H"], width, axis=0)
        u = op("Mod", op("Div", word, op("Gather", s["P"], op("Mod", pos, s["c8"]), axis=0)), full)
        v = op("Cast", op("Sub", op("Mod", op("Add", u, half), full), half), to=ir.DataType.INT8)
        sizes = const(np.array([layers[i].ints.size for i in members], np.int64))
        pieces = top.node("Split", [v, sizes], first, len(members), axis=0)
        for i, piece in zip(members, pieces):
            layer = layers[i]
            editor = GraphEditor(graph, f"u{i}.")
            before = first_consumer(graph, layer.value)
            shape = editor.constant(np.array(chan_first[i].shape, np.int64), "shape")
            w_int = editor.op("Reshape", [piece, shape], before)
            if layer.axis != 0:
                nd = chan_first[i].ndim
                perm = list(range(1, layer.axis + 1)) + [0] + list(range(layer.axis + 1, nd))
                w_int = editor.op("Transpose", [w_int], before, perm=perm)
            replace_with_dq(ctx, layer, w_int, GraphEditor(graph, f"{layer.name}."))
            layer.container = "packed"
            scale_bytes = layer.scale.size * (2 if _half(layer.scale) is not None else 4)  # ``_half_floats``
            layer.stored_bytes = -(-layer_bits[i] // 8) + -(-len(widths[i]) // 2) + scale_bytes
        chan0 += n_chan
        base += sum(layer_bits[i] for i in members)
    _finish(graph, ctx.opset)


def _finish(graph: ir.Graph, opset: int) -> None:
    _half_floats(graph)
    _narrow_indices(graph)
    _slim(graph, opset)


_HALF_MIN = 8  # elements; a smaller float tensor stays as it is (its Split output costs about what it saves)


def _constants(graph: ir.Graph, dtype: ir.DataType, min_size: int) -> list[tuple[str, ir.Value, np.ndarray]]:
    """The initializers of ``dtype`` with at least ``min_size`` elements that only nodes read (not a graph
    input, which a caller can override, nor an output)."""
    inputs = {id(v) for v in graph.inputs}
    found = []
    for name, value in graph.initializers.items():
        tensor = value.const_value
        if (tensor is None or tensor.dtype != dtype or tensor.size < min_size or value.is_graph_output()
                or id(value) in inputs or not list(value.uses())):
            continue
        found.append((name, value, tensor.numpy()))
    return found


def _half_floats(graph: ir.Graph) -> None:
    """Every float initializer whose values float16 holds exactly (the artifact rounds its scales, biases and
    other float parameters to float16, ``sgsc_export.train.freeze``) moves into one float16 tensor,
    ``pk.half``, read back by one Cast to float and one Split (and a Reshape where the tensor is not 1-D): the
    same float32 values at half the bytes, folded at session creation. A tensor float16 does not hold
    exactly stays float32."""
    members = []
    for name, value, array in _constants(graph, ir.DataType.FLOAT, _HALF_MIN):
        half = _half(array)
        if half is not None:
            members.append((name, value, half, array.shape))
    _pool(graph, members, "pk.half", ir.DataType.FLOAT)


def _half(array: np.ndarray) -> np.ndarray | None:
    """``array`` flat as float16 where float16 holds every value exactly (and it is large enough to pool);
    else None."""
    flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    if flat.size < _HALF_MIN:
        return None
    half = flat.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32).view(np.uint32), flat.view(np.uint32)) else None


def _pool(graph: ir.Graph, members: list[tuple[str, ir.Value, np.ndarray, tuple[int, ...]]], blob_name: str,
          to: ir.DataType) -> None:
    """Replace each member initializer (name, value, its values in the pool's narrow dtype, its shape) by its
    piece of one ``blob_name`` tensor: ``Cast(to)`` → ``Split`` → a Reshape where the shape is not 1-D. The
    nodes read only initializers and go first in the graph."""
    if not members:
        return
    editor = GraphEditor(graph, f"{blob_name}.")
    first = next(iter(graph))
    blob = editor.constant(np.concatenate([m[2].reshape(-1) for m in members]), blob_name, shared=True)
    wide = editor.op("Cast", [blob], first, to=to)
    sizes = editor.constant(np.array([m[2].size for m in members], np.int64), "n")
    pieces = editor.node("Split", [wide, sizes], first, len(members), axis=0) if len(members) > 1 else [wide]
    for (name, value, _, shape), piece in zip(members, pieces):
        if len(shape) != 1:
            piece = editor.op("Reshape", [piece, editor.constant(np.array(shape, np.int64), "s")], first)
        ir.convenience.replace_all_uses_with(value, piece)
        graph.initializers.pop(name)


_NARROW_MIN = 64  # elements; below it a Cast node costs more than it saves


def _narrow_indices(graph: ir.Graph) -> None:
    """The model's own int64 constants (a GatherND's index table, a Reshape's target) of ``_NARROW_MIN``
    elements or more, stored as the narrowest of int8/int16/int32 that holds them, and Cast back: the same
    values, folded at session creation (a user's MLP on digits carried a 12.5 kB index table)."""
    order = _order(graph)  # the Casts inserted below read no other initializer: the order stays valid
    for name, value, array in _constants(graph, ir.DataType.INT64, _NARROW_MIN):
        uses = list(value.uses())
        for dtype in (np.int8, np.int16, np.int32):
            if array.min() >= np.iinfo(dtype).min and array.max() <= np.iinfo(dtype).max:
                break
        else:
            continue
        first = min((u.node for u in uses), key=order)
        editor = GraphEditor(graph, "n.")
        narrow = editor.constant(array.astype(dtype), "i")
        wide = editor.op("Cast", [narrow], first, to=ir.DataType.INT64)
        ir.convenience.replace_all_uses_with(value, wide)
        graph.initializers.pop(name)


def _order(graph: ir.Graph):
    order = {id(node): i for i, node in enumerate(graph)}
    return lambda node: order[id(node)]


# attributes whose default the operator specs give in words, not as a schema default: "If not present, the
# stride defaults is 1 along each spatial axis", dilations likewise, pads 0 at both ends of each axis
_SPATIAL_DEFAULTS = {"strides": 1, "dilations": 1, "pads": 0}
_SPATIAL_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"}


_KERNEL_FROM_W = {"Conv", "ConvTranspose"}  # "If not present, should be inferred from input W"


def _same_without(node: ir.Node, name: str, value) -> bool:
    """Attributes whose value is not the default but computes what the default does here: a Reshape's
    ``allowzero`` = 1 with a constant shape that has no 0 in it; an AveragePool's ``count_include_pad`` = 1
    with no padding (no pads, or all 0, ``auto_pad`` NOTSET, no ``ceil_mode``)."""
    if node.op_type == "Reshape" and name == "allowzero":
        shape = node.inputs[1].const_value if len(node.inputs) > 1 and node.inputs[1] is not None else None
        return shape is not None and bool((shape.numpy() != 0).all())
    if node.op_type == "AveragePool" and name == "count_include_pad":
        attrs = node.attributes
        pads = attrs["pads"].value if "pads" in attrs else []
        auto = attrs["auto_pad"].value if "auto_pad" in attrs else "NOTSET"
        ceil = attrs["ceil_mode"].value if "ceil_mode" in attrs else 0
        return not any(pads) and auto == "NOTSET" and not ceil
    return False


def _spatial_default(op_type: str, name: str, value) -> bool:
    if name == "kernel_shape":
        return op_type in _KERNEL_FROM_W  # a valid model's kernel_shape is W's spatial shape
    return (op_type in _SPATIAL_OPS and name in _SPATIAL_DEFAULTS and isinstance(value, list)
            and all(v == _SPATIAL_DEFAULTS[name] for v in value))


def _slim(graph: ir.Graph, opset: int) -> None:
    """Drop what the format does not need: node names, intermediate shapes, attributes equal to their
    default (the schema's, or ``_SPATIAL_DEFAULTS``: a Conv's unit strides and dilations, zero pads) or
    computing what it does here (``_same_without``), a Conv's ``kernel_shape`` (the spec infers it from W);
    and give every value but the graph's inputs and outputs a short name (``_short_names``)."""
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
            if spec is None:
                continue
            value = onnx.helper.get_attribute_value(ir.serde.serialize_attribute(attr))
            if spec.default_value.type:
                if value == onnx.helper.get_attribute_value(spec.default_value):
                    del node.attributes[name]
            elif _spatial_default(node.op_type, name, value):
                del node.attributes[name]
            if name in node.attributes and _same_without(node, name, value):
                del node.attributes[name]
    _short_names(graph)


_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _short_names(graph: ir.Graph) -> None:
    """Every initializer and intermediate value but the blob and the widths renamed ``a, b, …, 9, ba, …`` in
    graph order: each name is stored at least twice, and the toy zoo's names were 5-7 % of its compact
    files. What a layer is called stays in the ``sgsc.layers`` metadata, whose ``weight`` is the renamed
    DequantizeLinear output."""
    values = [v for v in graph.initializers.values() if not v.is_graph_output()]
    values += [out for node in graph for out in node.outputs if not out.is_graph_output()]
    keep = {v.name for v in (*graph.inputs, *graph.outputs)} | {"pk.blob", "pk.bits", "pk.half"}
    taken = keep | {v.name for v in values}  # a new name is none of the old ones: no clash mid-way
    count = 0

    def fresh() -> str:
        nonlocal count
        while True:
            n, name = count, ""
            count += 1
            while True:
                name = _ALPHABET[n % len(_ALPHABET)] + name
                n //= len(_ALPHABET)
                if not n:
                    break
            if name not in taken:
                return name

    for value in values:
        if value.name not in keep:
            value.name = fresh()
