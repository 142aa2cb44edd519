"""Pass: every quantised weight becomes integers in the smallest ONNX container plus DequantizeLinear.

Precondition: ``locate_weights`` ran (each weight is the float initializer it found). Postcondition: no
quantised layer's weight is stored as float; each feeds ``DequantizeLinear(x_int, scale[C], axis)`` (zero
point omitted, i.e. 0) and the float initializer is gone. ``weights_to_dq`` picks INT2 / INT4 / INT8 per layer
from its widest channel (``portable``); ``weights_to_int8`` forces INT8 with an explicit int8 zero point
(``ort-int8``, whose integer kernels take only 8-bit weights, and whose Gemm fusion needs the zero point).

``ort-int8`` also gives a row whose integers are all 0 the median scale of the layer's other rows: such a row
dequantises to 0 whatever its scale, but its learned exponent may have drifted far (a channel at few bits
whose weights all round to 0), and an int32 bias is stored at ``s_x · s_w[c]`` (``activation_qdq``), which
must not be coarser than the bias itself.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from converters import packing
from converters.passes._base import Pass, dequantize_of, first_consumer
from converters.passes._context import ExportContext, GraphEditor, LayerWeight

__all__ = ["WeightsToDQ", "replace_with_dq", "weights_to_dq", "weights_to_int8"]

_ONNX_TYPE = {"INT2": onnx.TensorProto.INT2, "INT4": onnx.TensorProto.INT4, "INT8": onnx.TensorProto.INT8}
_IR_TYPE = {"INT2": ir.DataType.INT2, "INT4": ir.DataType.INT4, "INT8": ir.DataType.INT8}


def free_zero_rows(ints: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """``scale`` with the rows whose integers are all 0 at the median of the others' (1 when every row is 0);
    the weight's values do not change."""
    zero = ~np.moveaxis(ints, axis, 0).reshape(len(scale), -1).any(1)
    if not zero.any():
        return scale
    live = np.sort(scale[~zero])
    out = scale.copy()
    out[zero] = live[len(live) // 2] if live.size else np.float32(1.0)
    return out


def replace_with_dq(ctx: ExportContext, layer: LayerWeight, x_int: ir.Value, editor: GraphEditor,
                    *, zero_point: bool = False) -> None:
    """Feed ``layer``'s consumers from ``DequantizeLinear(x_int, scale, axis)`` and drop the float weight."""
    graph = ctx.model.graph
    old = layer.value
    before = first_consumer(graph, old)
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


class WeightsToDQ(Pass):
    """``container=None``: by the layer's widest channel; ``"INT8"``: INT8 with an explicit zero point."""

    def __init__(self, name: str, container: str | None) -> None:
        self.name = name
        self.container = container

    def requires(self, ctx: ExportContext) -> None:
        self.require_initializers(ctx)

    def call(self, ctx: ExportContext) -> None:
        zero_point = self.container is not None
        for layer in ctx.layers:
            if zero_point:
                layer.scale = free_zero_rows(layer.ints, layer.scale, layer.axis)
            editor = GraphEditor(ctx.model.graph, f"{layer.name}.")
            container = self.container or packing.container_for(int(layer.bits.max(initial=0)))
            raw = packing.pack_container(layer.ints, container)
            proto = onnx.helper.make_tensor("w", _ONNX_TYPE[container], list(layer.ints.shape), raw, raw=True)
            x_int = editor.constant(proto, "weight_int")
            replace_with_dq(ctx, layer, x_int, editor, zero_point=zero_point)
            layer.container = container
            layer.stored_bytes = len(raw) + layer.scale.nbytes + (layer.scale.size if zero_point else 0)

    def ensures(self, ctx: ExportContext) -> None:
        for layer in ctx.layers:
            dq = dequantize_of(layer)
            x = dq.inputs[0] if dq is not None else None
            if (x is None or x.const_value is None or layer.container not in _IR_TYPE
                    or x.const_value.dtype != _IR_TYPE[layer.container]
                    or (self.container is not None and layer.container != self.container)):
                raise self.broken(f"each weight is an integer initializer → DequantizeLinear; "
                                  f"layer {layer.name!r} is not")
            if ctx.model.graph.initializers.get(layer.value.name) is not None:
                raise self.broken(f"no float weight is left; {layer.value.name!r} is")


weights_to_dq = WeightsToDQ("weights_to_dq", None)
weights_to_int8 = WeightsToDQ("weights_to_int8", "INT8")
