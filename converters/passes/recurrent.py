"""Pass: each direction of a GRU/LSTM node's weights becomes an initializer of its own.

torch.onnx lowers a bidirectional ``nn.GRU``/``nn.LSTM`` layer to one ONNX GRU/LSTM node whose ``W`` and ``R``
stack both directions, ``[2, G·H, K]``: two torch tensors (``weight_ih_l0`` and ``weight_ih_l0_reverse``),
so two quantised layers with their own per-row scales, in one initializer, which a per-axis
DequantizeLinear cannot give two sets of scales. This pass splits such an initializer into one ``[1, G·H, K]``
initializer a direction, joined by ``Concat(axis=0)`` in front of the node, so that ``locate_weights`` finds
each quantised tensor as an initializer of its own, which then becomes ``DequantizeLinear(ints, scale[G·H],
axis=1)``. The values the node reads are unchanged; a unidirectional node is left as it is.

Precondition: no layer located yet (it runs first). Postcondition: no GRU/LSTM/RNN node reads a ``W`` or ``R``
initializer of more than one direction.
"""

from __future__ import annotations

import onnx_ir as ir

from converters.passes._base import Pass
from converters.passes._context import ExportContext, GraphEditor

__all__ = ["UnstackDirections", "unstack_directions"]

_OPS = ("GRU", "LSTM", "RNN")
_WEIGHT_INPUTS = (1, 2)  # W, R


def _stacked(graph: ir.Graph, node: ir.Node, index: int) -> ir.Value | None:
    """``node``'s input ``index`` when it is an initializer of more than one direction."""
    v = node.inputs[index] if len(node.inputs) > index else None
    if v is None or graph.initializers.get(v.name) is not v or v.const_value is None:
        return None
    shape = v.const_value.shape
    return v if len(shape) == 3 and shape[0] > 1 else None


def _recurrent(graph: ir.Graph) -> list[ir.Node]:
    return [n for n in graph if n.op_type in _OPS and n.domain in ("", "ai.onnx")]


class UnstackDirections(Pass):
    name = "unstack_directions"

    def requires(self, ctx: ExportContext) -> None:
        if ctx.layers:
            raise self.refuse(f"no layers located yet (it runs before locate_weights); {len(ctx.layers)} are")

    def call(self, ctx: ExportContext) -> None:
        graph = ctx.model.graph
        joined: dict[int, ir.Value] = {}  # one Concat for an initializer that two nodes read
        for node in _recurrent(graph):
            for index in _WEIGHT_INPUTS:
                v = _stacked(graph, node, index)
                if v is None:
                    continue
                if id(v) not in joined:
                    editor = GraphEditor(graph, f"{v.name}.")
                    arr = v.const_value.numpy()
                    parts = [editor.constant(arr[d:d + 1], f"d{d}") for d in range(arr.shape[0])]
                    joined[id(v)] = editor.op("Concat", parts, node, "dirs", axis=0)
                node.replace_input_with(index, joined[id(v)])
                if not v.uses():
                    graph.initializers.pop(v.name)

    def ensures(self, ctx: ExportContext) -> None:
        graph = ctx.model.graph
        for node in _recurrent(graph):
            for index in _WEIGHT_INPUTS:
                v = _stacked(graph, node, index)
                if v is not None:
                    raise self.broken(f"one initializer a direction; {node.op_type} reads {v.name!r} of "
                                      f"shape {list(v.const_value.shape)}")


unstack_directions = UnstackDirections()
