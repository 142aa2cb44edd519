"""Pass: drop what the rewrite left unused and check the graph with ``onnx.checker`` (full, with shapes)."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from converters.passes._context import ExportContext
from sgsc_export.errors import ExportError

__all__ = ["check_model", "remove_unused"]


def remove_unused(ctx: ExportContext) -> None:
    graph = ctx.model.graph
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            graph.initializers.pop(name)


def check_model(ctx: ExportContext) -> None:
    proto = ir.serde.serialize_model(ctx.model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ExportError(f"the exported graph fails onnx.checker ({first}); this is a converter bug, "
                          "please report it with the artifact") from None
