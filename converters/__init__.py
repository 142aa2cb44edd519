"""Converters: a compressed artifact becomes one standard ONNX file (QDQ, packed low-bit weights).

Reads only the artifact (``sgsc_export.artifact.compressed``); imports onnx and onnx_ir, never onnxruntime at import time.
"""

from converters.export import ExportResult, export, inspect_model
from converters.packing import pack_channels, pack_container, unpack_channels, unpack_container
from converters.profiles import PROFILES

__all__ = [
           "PROFILES",
           "ExportResult",
           "export",
           "inspect_model",
           "pack_channels",
           "pack_container",
           "unpack_channels",
           "unpack_container",
]
