"""runtime_checks: validate an exported ONNX model in onnxruntime and gate its deployment.

Needs only an ``.onnx`` file and data (numpy + onnxruntime; onnx for graph surgery); importing it never imports
torch. ``validate(...)`` returns a :class:`Report`; ``Report.exit_code`` is 0 passed, 1 failed, 2 error.
"""

from __future__ import annotations

from .accuracy import SplitResult
from .data import EvalData, preservation_sha256
from .fusion import FusionResult, LayerFusion
from .gate import CheckResult, Thresholds
from .latency import LatencyConfig, LatencyResult
from .layers import LayerError, LayerParityResult
from .parity import ParityResult, compare_logits
from .reports import SCHEMA_VERSION, ProviderResult, Report
from .runner import load_data, validate
from .sessions import PROVIDERS, ProviderPlan, resolve_providers

__all__ = [
    "PROVIDERS",
    "SCHEMA_VERSION",
    "CheckResult",
    "EvalData",
    "FusionResult",
    "LatencyConfig",
    "LatencyResult",
    "LayerError",
    "LayerFusion",
    "LayerParityResult",
    "ParityResult",
    "ProviderPlan",
    "ProviderResult",
    "Report",
    "SplitResult",
    "Thresholds",
    "compare_logits",
    "load_data",
    "preservation_sha256",
    "resolve_providers",
    "validate",
]
