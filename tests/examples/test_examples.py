"""The examples run, at toy size, with an accuracy gate."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_cnn_digits_api(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEPS", "30")
    monkeypatch.setenv("FLOAT_EPOCHS", "2")
    monkeypatch.setenv("GAMMA", "0.05")
    module = runpy.run_path(str(EXAMPLES / "cnn_digits_api.py"), run_name="example")
    report = module["main"](tmp_path / "run")
    assert report.status in ("passed", "failed") and not report.errors
    test = report.providers["cpu"].summary("test")
    assert test.accuracy > 0.3 and test.parity.agreement == 1.0           # toy size: 3x chance (0.1)
    assert (tmp_path / "run" / "model.onnx").is_file()
    assert "compressed" in capsys.readouterr().out
