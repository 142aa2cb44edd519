"""The float graph: ``torch.onnx.export`` (dynamo) of the artifact's deployable module, made reproducible.

The exporter records stack traces, fx node dumps and class paths in ``metadata_props`` and ``doc_string``;
they differ between machines and checkouts, so they are stripped, which leaves a graph that depends only on
the module.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import onnx_ir as ir

from sgsc_export.errors import ExportError

__all__ = ["export_float", "strip_metadata"]


def strip_metadata(model: ir.Model) -> None:
    """Drop exporter-written doc strings and metadata that carry paths, stack traces or versions."""
    graph = model.graph
    for node in graph.all_nodes() if hasattr(graph, "all_nodes") else graph:
        node.metadata_props.clear()
        node.doc_string = None
        for out in node.outputs:
            out.metadata_props.clear()
            out.doc_string = None
    for value in list(graph.inputs) + list(graph.outputs) + list(graph.initializers.values()):
        value.metadata_props.clear()
        value.doc_string = None
    graph.metadata_props.clear()
    graph.doc_string = None
    model.metadata_props.clear()
    model.doc_string = None
    model.producer_name = "sgsc-export"
    model.producer_version = None


def export_float(module, example, opset: int) -> ir.Model:
    """Float ONNX of ``module`` with input ``input``, output ``logits``, dynamic batch, at ``opset``."""
    import torch  # heavy; only the export path needs it

    batch = torch.export.Dim("batch")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(
                module, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                dynamic_shapes=({0: batch},), opset_version=opset, optimize=True, verbose=False,
                external_data=False,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported as one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed on the float model ({type(exc).__name__}: {first}); "
                          "make the model exportable in float first") from None
    model = program.model
    if len(model.graph.outputs) != 1:
        raise ExportError(
            f"the model has {len(model.graph.outputs)} outputs; the converters expect one (logits)"
        )
    strip_metadata(model)
    return model
