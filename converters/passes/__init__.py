"""Graph passes over ``onnx_ir``, one rule family a file; each states its precondition and postcondition.

A profile (``converters.profiles``) is an ordered list of these functions, each ``pass(ctx) -> None``.
"""

from ._context import ExportContext, LayerWeight, Pass
from .activations import activation_qdq
from .compact import weights_to_packed
from .finalize import check_model, remove_unused
from .fusion import report_fusion
from .locate import locate_weights
from .metadata import add_metadata
from .opset import check_opset, required_opset
from .weights import weights_to_dq, weights_to_int8

__all__ = [
    "ExportContext", "LayerWeight", "Pass", "activation_qdq", "add_metadata", "check_model", "check_opset",
    "locate_weights", "remove_unused", "report_fusion", "required_opset", "weights_to_dq", "weights_to_int8",
    "weights_to_packed",
]
