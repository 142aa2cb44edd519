"""Graph passes over ``onnx_ir``, one rule family a file; each states its precondition and postcondition.

A profile (``converters.profiles``) is an ordered list of these functions, each ``pass(ctx) -> None``.
"""

from converters.passes._context import ExportContext, LayerWeight, Pass
from converters.passes.activations import activation_qdq
from converters.passes.compact import weights_to_packed
from converters.passes.finalize import check_model, remove_unused
from converters.passes.fusion import report_fusion
from converters.passes.locate import locate_weights
from converters.passes.metadata import add_metadata
from converters.passes.opset import check_opset, required_opset
from converters.passes.weights import weights_to_dq, weights_to_int8

__all__ = [
    "ExportContext", "LayerWeight", "Pass", "activation_qdq", "add_metadata", "check_model", "check_opset",
    "locate_weights", "remove_unused", "report_fusion", "required_opset", "weights_to_dq", "weights_to_int8",
    "weights_to_packed",
]
