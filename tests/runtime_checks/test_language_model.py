"""`validate` on a language model: loss, perplexity, next-token agreement; the perplexity-ratio gate."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from runtime_checks.gate import Thresholds
from runtime_checks.language_model import evaluate_language_model
from sgsc_export.cli import main


def test_evaluator_counts_real_positions_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    y = np.array([[1, 2, -1, -1], [0, -1, -1, -1], [4, 4, 4, -1]])
    ref = logits.copy()
    ref[2, 3] += 10.0  # a padding position: ignored
    r = evaluate_language_model("test", logits, y, ref, "pytorch")
    assert r.metrics["tokens"] == 6 and r.parity.agreement == 1.0 and r.metrics["loss_diff"] == 0.0
    assert r.metrics["perplexity"] == pytest.approx(np.exp(r.metrics["loss"]))
    ref[0, 1] = 0.0
    ref[0, 1, (logits[0, 1].argmax() + 1) % 5] = 100.0
    r = evaluate_language_model("test", logits, y, ref, "pytorch")
    assert r.parity.flipped == [0] and r.metrics["next_token_agreement"] == pytest.approx(5 / 6)


def test_thresholds_report_perplexity_ratio_only_when_set():
    assert "max_perplexity_ratio" not in Thresholds().to_dict()
    assert Thresholds(max_perplexity_ratio=1.1).to_dict()["max_perplexity_ratio"] == 1.1
    with pytest.raises(ValueError, match="max_perplexity_ratio"):
        Thresholds(max_perplexity_ratio=0.5)


def test_validate_reports_lm_metrics_and_gates_on_perplexity(lm_artifact, lm_portable, tmp_path):
    path = lm_portable
    report_path = tmp_path / "r.json"
    args = ["validate", str(path), "--run", str(lm_artifact), "--no-latency", "--opt-levels", "all",
            "--report", str(report_path), "--markdown", str(tmp_path / "r.md"), "--max-accuracy-drop", "100",
            "--max-perplexity-ratio", "100"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "perplexity" in res.output and "| next-token agreement |" in (tmp_path / "r.md").read_text()
    rep = json.loads(report_path.read_text())
    test = rep["providers"]["cpu"]["test"]
    assert test["next_token_agreement"] == 1.0 and abs(test["loss_diff"]) < 1e-4
    assert any(c["name"] == "cpu/all/test/perplexity_ratio" and c["status"] == "passed"
               for c in rep["checks"])
    assert rep["thresholds"]["max_perplexity_ratio"] == 100.0
    res = CliRunner().invoke(main, args[:-2] + ["--max-perplexity-ratio", "1.0"])
    m = json.loads((lm_artifact / "manifest.json").read_text())["metrics"]
    worse = m["compressed"]["test_perplexity"] > m["float"]["test_perplexity"]
    assert res.exit_code == (1 if worse else 0), res.output
