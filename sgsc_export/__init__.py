"""sgsc_export: Safety-Guided Self-Compression for PyTorch.

The public API, loaded lazily (PEP 562): ``import sgsc_export`` is cheap and imports neither torch, onnx nor
onnxruntime; the first use of a name imports the module behind it. ``sgsc_export.errors`` is torch-free, so
the converters and runtime checks can share the error types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgsc_export._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "compress": "train.compress",
    "CompressedModel": "artifact.compressed",
    "CompressConfig": "config",
    "quantize": "method.core",
    "Split": "datasets.images",
    "load_dataset": "datasets.images",
    "prepare_": "method.nn",
    "QConv1d": "method.nn",
    "QConv2d": "method.nn",
    "QLinear": "method.nn",
    "QEmbedding": "method.nn",
    "TextSplit": "datasets.text",
    "TextPreservationSelector": "preservation.text",
    "get_task": "tasks",
    "PreservationSetSelector": "preservation.images",
    "SGSCError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "ModelError": "errors",
    "ArtifactError": "errors",
    "ExportError": "errors",
    "ValidationError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from sgsc_export.artifact.compressed import CompressedModel
    from sgsc_export.config import CompressConfig
    from sgsc_export.datasets.images import Split, load_dataset
    from sgsc_export.datasets.text import TextSplit
    from sgsc_export.errors import (
        ArtifactError,
        ConfigError,
        DataError,
        ExportError,
        ModelError,
        SGSCError,
        ValidationError,
    )
    from sgsc_export.method.core import quantize
    from sgsc_export.method.nn import QConv1d, QConv2d, QEmbedding, QLinear, prepare_
    from sgsc_export.preservation.images import PreservationSetSelector
    from sgsc_export.preservation.text import TextPreservationSelector
    from sgsc_export.tasks import get_task
    from sgsc_export.train.compress import compress
