"""sgsc_export: Safety-Guided Self-Compression for PyTorch.

The public API, loaded lazily (PEP 562): ``import sgsc_export`` is cheap and imports neither torch, onnx nor
onnxruntime; the first use of a name imports the module behind it. ``sgsc_export.errors`` is torch-free, so
the converters and runtime checks can share the error types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "compress": "api",
    "CompressedModel": "artifact",
    "CompressConfig": "config",
    "quantize": "core",
    "Split": "data",
    "load_dataset": "data",
    "prepare_": "nn",
    "QConv1d": "nn",
    "QConv2d": "nn",
    "QLinear": "nn",
    "QEmbedding": "nn",
    "TextSplit": "text",
    "TextPreservationSelector": "preservation_text",
    "get_task": "tasks",
    "PreservationSetSelector": "preservation",
    "SGSCError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "ModelError": "errors",
    "ArtifactError": "errors",
    "ExportError": "errors",
    "ValidationError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sgsc_export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .api import compress
    from .artifact import CompressedModel
    from .config import CompressConfig
    from .core import quantize
    from .data import Split, load_dataset
    from .errors import (
        ArtifactError,
        ConfigError,
        DataError,
        ExportError,
        ModelError,
        SGSCError,
        ValidationError,
    )
    from .nn import QConv1d, QConv2d, QEmbedding, QLinear, prepare_
    from .preservation import PreservationSetSelector
    from .preservation_text import TextPreservationSelector
    from .tasks import get_task
    from .text import TextSplit
