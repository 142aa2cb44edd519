"""The public API, the lean import, and the report.json schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import runtime_checks
from runtime_checks import EvalData, Report, Thresholds, validate

ROOT = Path(__file__).resolve().parents[2]


def test_public_names_import():
    for name in runtime_checks.__all__:
        assert getattr(runtime_checks, name) is not None, name
    assert callable(validate)


def _imports_torch(code: str) -> bool:
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip().endswith("True")


def test_runtime_checks_itself_never_imports_torch():
    """With sgsc_export's package __init__ bypassed (only its errors module), runtime_checks stays
    torch-free."""
    stub = ("import sys, types; p = types.ModuleType('sgsc_export'); p.__path__ = ['sgsc_export']; "
            "p.__version__ = '0'; "
            "sys.modules['sgsc_export'] = p; import runtime_checks, sgsc_export.cli.validate")
    assert not _imports_torch(stub)


def test_import_runtime_checks_does_not_import_torch():
    assert not _imports_torch("import runtime_checks")


def test_thresholds_validate_their_fields():
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        Thresholds(max_accuracy_drop=-1)
    with pytest.raises(ValueError, match="min_agreement"):
        Thresholds(min_agreement=1.5)


def test_report_schema_keys(run_dir):
    run, model = run_dir
    report = validate(model, EvalData.from_run_dir(run), latency=True, layers=True)
    d = json.loads(report.to_json())
    assert {"schema_version", "passed", "status", "model", "data", "thresholds", "providers", "checks",
            "fusion",
            "latency_ms", "layers", "workarounds", "session", "skipped_providers", "errors",
            "notes"} <= set(d)
    cpu = d["providers"]["cpu"]
    for split in ("preservation", "test"):
        for summary in (cpu[split], cpu["opt_levels"]["disabled"][split], cpu["opt_levels"]["all"][split]):
            assert {"n", "accuracy", "agreement", "flipped", "max_abs_logit_diff",
                    "mean_abs_logit_diff"} <= set(
                summary)
    assert cpu["assigned_providers"] == ["CPUExecutionProvider"]
    assert {"p50", "p90"} <= set(d["latency_ms"]["cpu"]["batch_64"])
    assert d["latency_ms"]["cpu"]["threads"] == 1
    assert d["fusion"]["cpu"]["all"]["integer_layers"] == ["fc"]
    assert d["thresholds"] == {"max_accuracy_drop": 1.0, "min_agreement": 0.99, "max_layer_error_steps": 1.0}
    assert report.exit_code == 0 and isinstance(report, Report)


def test_error_report_never_passes():
    report = Report(errors=["boom"], status="passed")
    assert not report.passed and report.exit_code == 2
