"""Pass: every quantised weight becomes integers in the smallest ONNX container plus DequantizeLinear.

Precondition: ``locate_weights`` ran. Postcondition: no quantised layer's weight is stored as float; each feeds
``DequantizeLinear(x_int, scale[C], axis)`` (zero point omitted, i.e. 0) and the float initializer is gone.
``container="auto"`` picks INT2 / INT4 / INT8 per layer from its widest channel (``portable``); ``"INT8"``
forces INT8 (``ort-int8``, whose integer kernels take only 8-bit weights).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from converters import packing
from converters.passes._context import ExportContext, GraphEditor, LayerWeight

__all__ = ["replace_with_dq", "weights_to_dq", "weights_to_int8"]

_ONNX_TYPE = {"INT2": onnx.TensorProto.INT2, "INT4": onnx.TensorProto.INT4, "INT8": onnx.TensorProto.INT8}


def replace_with_dq(ctx: ExportContext, layer: LayerWeight, x_int: ir.Value, editor: GraphEditor,
                    *, zero_point: bool = False) -> None:
    """Feed ``layer``'s consumers from ``DequantizeLinear(x_int, scale, axis)`` and drop the float weight."""
    graph = ctx.model.graph
    old = layer.value
    before = next(n for n in graph if any(u.node is n for u in old.uses()))
    scale = editor.constant(layer.scale.astype(np.float32), "scale")
    inputs = [x_int, scale]
    if zero_point:
        inputs.append(editor.constant(np.zeros(layer.scale.shape, dtype=np.int8), "zero_point"))
    dq = editor.op("DequantizeLinear", inputs, before, "dq", axis=layer.axis)
    ir.convenience.replace_all_uses_with(old, dq)
    name = old.name
    graph.initializers.pop(name)
    old.name = f"{name}.float"
    dq.name = name
    layer.value = dq


def _run(ctx: ExportContext, forced: str | None, zero_point: bool) -> None:
    for layer in ctx.layers:
        editor = GraphEditor(ctx.model.graph, f"{layer.name}.")
        container = forced or packing.container_for(int(layer.bits.max(initial=0)))
        raw = packing.pack_container(layer.ints, container)
        proto = onnx.helper.make_tensor("w", _ONNX_TYPE[container], list(layer.ints.shape), raw, raw=True)
        x_int = editor.constant(proto, "weight_int")
        replace_with_dq(ctx, layer, x_int, editor, zero_point=zero_point)
        layer.container = container
        layer.stored_bytes = len(raw) + layer.scale.nbytes + (layer.scale.size if zero_point else 0)


def weights_to_dq(ctx: ExportContext) -> None:
    """``portable``: INT2 / INT4 / INT8 by the layer's widest channel."""
    _run(ctx, None, zero_point=False)


def weights_to_int8(ctx: ExportContext) -> None:
    """``ort-int8``: INT8 with an explicit int8 zero point, the form onnxruntime's QDQ fusions expect."""
    _run(ctx, "INT8", zero_point=True)
