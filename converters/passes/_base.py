"""The pass contract: a precondition before, a postcondition after, both checked every time the pass runs.

Modelled on onnx_ir's ``passes.PassBase``: a pass is a small class with ``call(ctx)`` (the rewrite),
``requires(ctx)`` (what it assumes of its input) and ``ensures(ctx)`` (what it promises of its output).
``Pass.__call__`` runs the three in that order, so a profile (``converters.profiles``), which calls its
passes, cannot skip a check. A check that fails raises :class:`~sgsc_export.errors.ExportError` naming the
pass and the clause, e.g. ``pass weights_to_packed: requires every located weight to be an initializer;
'fc.weight' is not``. A failed ``requires`` means the passes ran in the wrong order or on a graph they were
not written for; a failed ``ensures`` is a converter bug. Checks only read the context: they never change a
byte of the file.

There is no registry and no metaclass: each pass module defines a subclass and the instance that profiles
list, under the name the function of the same job had (``weights_to_dq``, ``activation_qdq``, …).
"""

from __future__ import annotations

from typing import ClassVar

import onnx_ir as ir

from converters.passes._context import ExportContext, LayerWeight
from sgsc_export.errors import ExportError

__all__ = ["Pass", "dequantize_of", "first_consumer"]


class Pass:
    """One job on an :class:`ExportContext`; subclasses set ``name`` and override ``call`` and the checks."""

    name: ClassVar[str] = ""

    def requires(self, ctx: ExportContext) -> None:
        """Raise (through :meth:`refuse`) when ``ctx`` is not what ``call`` was written for."""

    def call(self, ctx: ExportContext) -> None:
        raise NotImplementedError

    def ensures(self, ctx: ExportContext) -> None:
        """Raise (through :meth:`broken`) when ``call`` did not leave what it promises."""

    def __call__(self, ctx: ExportContext) -> None:
        self.requires(ctx)
        self.call(ctx)
        self.ensures(ctx)

    def refuse(self, what: str) -> ExportError:
        """The error for a failed precondition: ``pass NAME: requires WHAT``."""
        return ExportError(f"pass {self.name}: requires {what}")

    def broken(self, what: str) -> ExportError:
        """The error for a failed postcondition (a converter bug): ``pass NAME: ensures WHAT``."""
        return ExportError(f"pass {self.name}: ensures {what}; this is a converter bug, please report it")

    def require_initializers(self, ctx: ExportContext) -> None:
        """Each located weight is still the float initializer ``locate_weights`` found, read by some node."""
        if not ctx.layers:
            raise self.refuse("located weights (run locate_weights first); there are none")
        inits = ctx.model.graph.initializers
        for layer in ctx.layers:
            if inits.get(layer.value.name) is not layer.value or not layer.value.uses():
                raise self.refuse(f"every located weight to be an initializer read by a node; "
                                  f"{layer.value.name!r} is not")

    def require_int8_weights(self, ctx: ExportContext) -> None:
        """Each layer's weight is ``DequantizeLinear(INT8 initializer, scale, zero point)``
        (weights_to_int8)."""
        if not ctx.layers:
            raise self.refuse("located weights (run locate_weights first); there are none")
        for layer in ctx.layers:
            dq = dequantize_of(layer)
            x = dq.inputs[0] if dq is not None else None
            if (x is None or x.const_value is None or x.const_value.dtype != ir.DataType.INT8
                    or len(dq.inputs) < 3 or dq.inputs[2] is None):
                raise self.refuse(f"every weight to be INT8 → DequantizeLinear with a zero point (run "
                                  f"weights_to_int8 first); layer {layer.name!r} is not")


def dequantize_of(layer: LayerWeight) -> ir.Node | None:
    """The DequantizeLinear whose output is ``layer``'s weight, or None when it is not dequantised."""
    node = layer.value.producer()
    return node if node is not None and node.op_type == "DequantizeLinear" else None


def first_consumer(graph: ir.Graph, value: ir.Value) -> ir.Node:
    """The earliest node (in graph order) that reads ``value``: where nodes computing a replacement go."""
    users = {id(u.node) for u in value.uses()}
    for node in graph:
        if id(node) in users:
            return node
    raise ExportError(f"{value.name!r} has no consumer; this is a converter bug, please report it")
