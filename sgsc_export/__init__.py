"""sgsc_export: Safety-Guided Self-Compression for PyTorch.

The public API; importing it pulls in torch but never onnx or onnxruntime.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import compress
from .artifact import CompressedModel
from .config import CompressConfig
from .core import quantize
from .data import Split, load_dataset
from .errors import ArtifactError, ConfigError, DataError, ExportError, ModelError, SGSCError, ValidationError
from .nn import QConv1d, QConv2d, QLinear, prepare_
from .preservation import PreservationSetSelector

__all__ = [
    "ArtifactError",
    "CompressConfig",
    "CompressedModel",
    "ConfigError",
    "DataError",
    "ExportError",
    "ModelError",
    "PreservationSetSelector",
    "QConv1d",
    "QConv2d",
    "QLinear",
    "SGSCError",
    "Split",
    "ValidationError",
    "__version__",
    "compress",
    "load_dataset",
    "prepare_",
    "quantize",
]
