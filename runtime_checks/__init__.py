"""runtime_checks: validate an exported ONNX model in onnxruntime and gate its deployment.

Needs only an ``.onnx`` file and data (numpy + onnxruntime; onnx for graph surgery); importing it never imports
torch. ``validate(...)`` returns a :class:`Report`; ``Report.exit_code`` is 0 passed, 1 failed, 2 error.
"""

from __future__ import annotations

from runtime_checks.accuracy import SplitResult
from runtime_checks.data import EvalData, preservation_sha256
from runtime_checks.fusion import FusionResult, LayerFusion
from runtime_checks.gate import CheckResult, Thresholds
from runtime_checks.latency import LatencyConfig, LatencyResult
from runtime_checks.layers import LayerError, LayerParityResult
from runtime_checks.parity import ParityResult, compare_logits
from runtime_checks.reports import SCHEMA_VERSION, ProviderResult, Report
from runtime_checks.runner import load_data, validate
from runtime_checks.sessions import PROVIDERS, ProviderPlan, resolve_providers

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
