"""Pass: find each quantised layer's weight initializer in the float graph and check it against the artifact.

Precondition: the float graph came from the artifact's deployable module, so a quantised layer ``L`` has an
initializer equal to ``L.weight_int × L.scale`` exactly — named after the module's parameter (the exporter
keeps parameter names) or, failing that, found by value; a MatMul weight may appear transposed (``[in, out]``,
channel axis 1). The parameter is ``L.weight`` for a layer, and ``L`` itself for one tensor of a GRU, LSTM or
MultiheadAttention (manifest layer ``rnn.weight_ih_l0`` or ``attn.in_proj_weight``).

A GRU/LSTM tensor ``[G·H, K]`` reaches the ONNX GRU/LSTM op as ``W``/``R`` ``[1, G·H, K]`` (one direction,
see ``unstack_directions``) with its gate blocks reordered — torch's r, z, n to ONNX's z, r, h; i, f, g, o to
i, o, f, c — and is found by value in that layout: ints, scales and bits are permuted alike, channel axis 1.

Postcondition: ``ctx.layers`` holds one ``LayerWeight`` per quantised layer, in manifest order, each on its
own initializer (one the exporter shared between equal tensors is copied for each).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from converters.passes._base import Pass
from converters.passes._context import ExportContext, GraphEditor, LayerWeight
from sgsc_export.errors import ArtifactError, ExportError

__all__ = ["GATE_ORDER", "SUPPORTED_KINDS", "TENSOR_KINDS", "LocateWeights", "gate_rows", "locate_weights",
           "parameter_name"]

SUPPORTED_KINDS = ("Conv1d", "Conv2d", "Conv3d", "Linear", "Embedding", "GRU", "LSTM", "MultiheadAttention")
# the kinds whose manifest layer is one tensor of the module, named by the tensor (not ``{name}.weight``)
TENSOR_KINDS = ("GRU", "LSTM", "MultiheadAttention")
# ONNX's gate blocks as torch's: GRU z, r, h = torch's (r, z, n)[1, 0, 2];
# LSTM i, o, f, c = torch's (i, f, g, o)[0, 3, 1, 2]
GATE_ORDER = {"GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2)}


def parameter_name(layer: dict, kind: str) -> str:
    """The state-dict key of a manifest layer's weight."""
    return layer["name"] if kind in TENSOR_KINDS else f"{layer['name']}.weight"


def gate_rows(kind: str, rows: int) -> np.ndarray:
    """Row ``i`` of the ONNX GRU/LSTM weight is row ``gate_rows(kind, rows)[i]`` of torch's."""
    order = GATE_ORDER[kind]
    h = rows // len(order)
    return np.concatenate([np.arange(g * h, (g + 1) * h) for g in order])


def _artifact_tensors(ctx: ExportContext, layer: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    name = layer["name"]
    try:
        ints = ctx.quant[f"{name}.weight_int"]
        scale = ctx.quant[f"{name}.scale"].astype(np.float32)
        bits = ctx.quant[f"{name}.bits"].astype(np.uint8)
    except KeyError as exc:
        raise ArtifactError(f"quant.safetensors has no {exc.args[0]!r} for manifest layer {name!r}; "
                            "the artifact is incomplete, re-run `sgsc compress`") from None
    shape = [int(d) for d in layer["weight_shape"]]
    if list(ints.shape) != shape or scale.shape != (shape[0],) or bits.shape != (shape[0],):
        raise ArtifactError(
            f"layer {name!r}: quant.safetensors shapes {list(ints.shape)}/{list(scale.shape)} do "
            f"not match the manifest's weight_shape {shape}; re-run `sgsc compress`"
        )
    if [int(b) for b in bits] != [int(b) for b in layer["bits"]]:
        raise ArtifactError(
            f"layer {name!r}: bits in quant.safetensors differ from the manifest; "
            "the artifact was edited, re-run `sgsc compress`"
        )
    flat = ints.reshape(shape[0], -1).astype(np.int64)
    lo, hi = -(1 << (bits.astype(np.int64) - 1)), (1 << (bits.astype(np.int64) - 1)) - 1
    lo, hi = np.where(bits == 0, 0, lo), np.where(bits == 0, 0, hi)
    if (flat.min(axis=1, initial=0) < lo).any() or (flat.max(axis=1, initial=0) > hi).any():
        raise ArtifactError(
            f"layer {name!r}: weight_int holds values outside the signed range of its bits; "
            "re-run `sgsc compress`"
        )
    return ints.astype(np.int8), scale, bits


class LocateWeights(Pass):
    name = "locate_weights"

    def requires(self, ctx: ExportContext) -> None:
        if ctx.layers:
            raise self.refuse(f"no layers located yet (it runs once); {len(ctx.layers)} are")
        if not isinstance(ctx.manifest.get("layers"), list) or not ctx.manifest["layers"]:
            raise self.refuse("a manifest with compressed layers; 'layers' is missing or empty")

    def call(self, ctx: ExportContext) -> None:
        _locate(ctx)

    def ensures(self, ctx: ExportContext) -> None:
        names = [layer["name"] for layer in ctx.manifest["layers"]]
        if [layer.name for layer in ctx.layers] != names:
            raise self.broken(
                f"one located layer per manifest layer, in order; found "
                f"{[layer.name for layer in ctx.layers]} for {names}"
            )
        inits = ctx.model.graph.initializers
        for layer in ctx.layers:
            value = layer.value
            if (
                inits.get(value.name) is not value
                or value.const_value is None
                or value.const_value.dtype != ir.DataType.FLOAT
                or tuple(value.const_value.shape) != layer.ints.shape
            ):
                raise self.broken(
                    f"each layer's weight is a float initializer of its integers' shape; "
                    f"{layer.name!r} is not"
                )


locate_weights = LocateWeights()


def _by_value(floats: dict[str, ir.Value], expected: np.ndarray, kind: str,
              taken: set[int]) -> tuple[ir.Value, int, np.ndarray | None] | None:
    """The first initializer not yet taken that holds ``expected``: ``(value, axis, row order)``; the row
    order is None unless the rows were permuted (a GRU/LSTM gate layout, ``[1, G·H, K]``)."""
    rows = gate_rows(kind, expected.shape[0]) if kind in GATE_ORDER else None
    for value in floats.values():
        if id(value) in taken:
            continue
        arr = value.const_value.numpy()
        if rows is not None:
            if arr.shape == (1, *expected.shape) and np.array_equal(arr[0], expected[rows]):
                return value, 1, rows
            continue
        if arr.shape == expected.shape and np.array_equal(arr, expected):
            return value, 0, None
        if expected.ndim == 2 and arr.shape == expected.T.shape and np.array_equal(arr, expected.T):
            return value, 1, None
    return None


def _own_copy(graph: ir.Graph, value: ir.Value) -> ir.Value | None:
    """A copy of an initializer already located for another layer, taking over its last use; None when it has
    no use to spare. The exporter shares one initializer between equal tensors (two all-zero weights of a
    shape), and each layer needs one of its own for its own scales."""
    uses = list(value.uses())
    if len(uses) < 2:
        return None
    copy = GraphEditor(graph, f"{value.name}.").constant(value.const_value.numpy(), "copy")
    uses[-1].node.replace_input_with(uses[-1].idx, copy)
    return copy


def _locate(ctx: ExportContext) -> None:
    graph = ctx.model.graph
    floats = {
        n: v
        for n, v in graph.initializers.items()
        if v.const_value is not None and v.const_value.dtype.name == "FLOAT"
    }
    taken: set[int] = set()  # each layer takes an initializer of its own
    for layer in ctx.manifest["layers"]:
        name = layer["name"]
        kind = ctx.kinds.get(name) or layer.get("kind", "?")  # the module's class is the ground truth
        if kind not in SUPPORTED_KINDS:
            raise ExportError(
                f"layer {name!r} is a {kind}, which the converters do not support "
                f"(supported: {', '.join(SUPPORTED_KINDS)}); exclude it from compression"
            )
        ints, scale, bits = _artifact_tensors(ctx, layer)
        bshape = (-1,) + (1,) * (ints.ndim - 1)
        expected = (ints.astype(np.float32) * scale.reshape(bshape)).astype(np.float32)
        found = None
        named = floats.get(parameter_name(layer, kind))
        if named is not None:
            arr = named.const_value.numpy()
            if arr.shape == expected.shape and np.array_equal(arr, expected):
                found = (named, 0, None)
            else:
                raise ArtifactError(
                    f"layer {name!r}: model.safetensors weight is not weight_int × scale; "
                    "the state does not match the manifest, re-run `sgsc compress`"
                )
        else:
            found = _by_value(floats, expected, kind, taken)
            shared = _by_value(floats, expected, kind, set()) if found is None else None
            copy = _own_copy(graph, shared[0]) if shared is not None else None
            if copy is not None:
                found = (copy, *shared[1:])
        if found is None:
            raise ExportError(
                f"layer {name!r}: no weight initializer equal to weight_int × scale in the exported "
                "graph; the model's forward does not use this weight as a constant"
            )
        value, axis, rows = found
        taken.add(id(value))
        if rows is not None:  # the GRU/LSTM layout [1, G·H, K]
            ints, scale, bits = ints[rows][None], scale[rows], bits[rows]
        elif axis == 1:
            ints = np.ascontiguousarray(ints.T)
        ctx.layers.append(
            LayerWeight(name=name, kind=kind, value=value, ints=ints, scale=scale, bits=bits, axis=axis)
        )
