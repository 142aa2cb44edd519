"""runtime_checks: validate an exported ONNX model in onnxruntime and gate its deployment.

Needs only an ``.onnx`` file and data (numpy + onnxruntime; onnx for graph surgery); importing it never
imports torch. ``validate(model, data, config=None, **settings)`` returns a :class:`Report`;
``Report.exit_code`` is 0 passed, 1 failed, 2 error; :class:`ValidateConfig` holds the settings. The names
below are loaded on first use (PEP 562), so ``runtime_checks.config`` and ``runtime_checks.gate`` (what ``sgsc
validate --help`` and ``sgsc config`` read) cost neither onnx nor onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# accuracy and language_model import each other; accuracy first resolves the cycle (numpy only, no
# onnxruntime)
from runtime_checks import accuracy as _accuracy  # noqa: F401
from sgsc_export._lazy import lazy_exports

_EXPORTS = {
    "PROVIDERS": "sessions",
    "SCHEMA_VERSION": "reports",
    "CheckResult": "gate",
    "EvalData": "data",
    "FusionResult": "fusion",
    "LatencyConfig": "latency",
    "LatencyResult": "latency",
    "LayerError": "layers",
    "LayerFusion": "fusion",
    "LayerParityResult": "layers",
    "ParityResult": "parity",
    "ProviderPlan": "sessions",
    "ProviderResult": "reports",
    "Report": "reports",
    "SplitResult": "accuracy",
    "Thresholds": "gate",
    "ValidateConfig": "config",
    "compare_logits": "parity",
    "load_data": "runner",
    "preservation_sha256": "data",
    "resolve_providers": "sessions",
    "validate": "runner",
    "verdict": "gate",
}

__all__ = [
    "CheckResult",
    "EvalData",
    "FusionResult",
    "LatencyConfig",
    "LatencyResult",
    "LayerError",
    "LayerFusion",
    "LayerParityResult",
    "PROVIDERS",
    "ParityResult",
    "ProviderPlan",
    "ProviderResult",
    "Report",
    "SCHEMA_VERSION",
    "SplitResult",
    "Thresholds",
    "ValidateConfig",
    "compare_logits",
    "load_data",
    "preservation_sha256",
    "resolve_providers",
    "validate",
    "verdict",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from runtime_checks.accuracy import SplitResult
    from runtime_checks.config import ValidateConfig
    from runtime_checks.data import EvalData, preservation_sha256
    from runtime_checks.fusion import FusionResult, LayerFusion
    from runtime_checks.gate import CheckResult, Thresholds, verdict
    from runtime_checks.latency import LatencyConfig, LatencyResult
    from runtime_checks.layers import LayerError, LayerParityResult
    from runtime_checks.parity import ParityResult, compare_logits
    from runtime_checks.reports import SCHEMA_VERSION, ProviderResult, Report
    from runtime_checks.runner import load_data, validate
    from runtime_checks.sessions import PROVIDERS, ProviderPlan, resolve_providers
