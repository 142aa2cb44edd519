"""Passes: drop what the rewrite left unused, and check the graph with ``onnx.checker`` (full, with shapes).

``remove_unused`` assumes every quantised weight is still read (a weight nobody reads would be dropped
silently) and promises that no initializer is left unread. ``check_model`` is itself a check: it runs the full
checker on the serialised model, which must declare its outputs.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

from converters.passes._base import Pass
from converters.passes._context import ExportContext
from sgsc_export.errors import ExportError

__all__ = ["CheckModel", "RemoveUnused", "check_model", "remove_unused"]


def _unused(graph: ir.Graph) -> list[str]:
    return [
        name for name, value in graph.initializers.items() if not value.uses() and not value.is_graph_output()
    ]


class RemoveUnused(Pass):
    name = "remove_unused"

    def requires(self, ctx: ExportContext) -> None:
        for layer in ctx.layers:
            if not layer.value.uses():
                raise self.refuse(
                    f"every quantised layer's weight to be read by a node; {layer.value.name!r} is not"
                )

    def call(self, ctx: ExportContext) -> None:
        graph = ctx.model.graph
        for name in _unused(graph):
            graph.initializers.pop(name)

    def ensures(self, ctx: ExportContext) -> None:
        left = _unused(ctx.model.graph)
        if left:
            raise self.broken(f"no initializer is left unread; {left[0]!r} is")


class CheckModel(Pass):
    name = "check_model"

    def requires(self, ctx: ExportContext) -> None:
        if not ctx.model.graph.outputs:
            raise self.refuse("a graph that declares its outputs; it has none")

    def call(self, ctx: ExportContext) -> None:
        proto = ir.serde.serialize_model(ctx.model)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ExportError(
                f"the exported graph fails onnx.checker ({first}); this is a converter bug, "
                "please report it with the artifact"
            ) from None


remove_unused = RemoveUnused()
check_model = CheckModel()
