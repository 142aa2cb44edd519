"""Graph passes over ``onnx_ir``, one job a file; each declares its precondition and postcondition as code.

A pass is an instance of a :class:`Pass` subclass (``converters.passes._base``): calling it runs ``requires``,
the rewrite, then ``ensures``. A profile (``converters.profiles``) is an ordered tuple of these instances.
"""

from converters.passes._base import Pass
from converters.passes._context import ExportContext, LayerWeight
from converters.passes.activations import activation_qdq
from converters.passes.compact import weights_to_packed
from converters.passes.finalize import check_model, remove_unused
from converters.passes.kernels import record_kernels
from converters.passes.locate import locate_weights
from converters.passes.metadata import add_metadata
from converters.passes.opset import check_opset, required_opset
from converters.passes.recurrent import unstack_directions
from converters.passes.weights import weights_to_dq, weights_to_int8

__all__ = [
    "ExportContext", "LayerWeight", "Pass", "activation_qdq", "add_metadata", "check_model", "check_opset",
    "locate_weights", "record_kernels", "remove_unused", "required_opset", "unstack_directions",
    "weights_to_dq", "weights_to_int8", "weights_to_packed",
]
