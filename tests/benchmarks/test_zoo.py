"""The zoo (issue 16, item 7): every model builds, runs on a digits batch and exports to float ONNX that
onnxruntime runs to the same logits; one toy run of ``python -m benchmarks.zoo`` writes a well-formed row."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks.units import ROOT, cpu_session
from benchmarks.zoo import run as zrun
from benchmarks.zoo.models import MODELS
from benchmarks.zoo.train import export_float_onnx

SMALL = "gru_rows"  # the smallest zoo model (20k parameters): the toy run's


def test_the_zoo_has_the_eight_kinds():
    assert len(MODELS) >= 8
    kinds = {name: {type(m).__name__ for m in f().modules()} for name, f in MODELS.items()}
    assert "BatchNorm2d" in kinds["resnet_small"]
    assert "ReLU6" in kinds["mobilenetv2_small"]
    assert {"LayerNorm", "GELU"} <= kinds["mlp_ln"]
    assert "Conv1d" in kinds["conv1d_net"]
    assert "MultiheadAttention" in kinds["vit_tiny"]
    assert "DenseLayer" in kinds["densenet_small"]
    assert "GRU" in kinds["gru_rows"]
    grouped = {m.groups for m in MODELS["resnext_dw"]().modules() if isinstance(m, torch.nn.Conv2d)}
    assert 4 in grouped and max(grouped) > 4  # grouped and depthwise convolutions
    dw = [m for m in MODELS["mobilenetv2_small"]().modules()
          if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    assert dw


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_runs_on_digits_and_exports_to_float_onnx(name, digits_split, tmp_path):
    torch.manual_seed(0)
    model = MODELS[name](num_classes=10).eval()
    x = np.ascontiguousarray(digits_split.x_test[:16])
    with torch.no_grad():
        logits = model(torch.as_tensor(x)).numpy()
    assert logits.shape == (16, 10) and np.isfinite(logits).all()
    path = tmp_path / f"{name}.onnx"
    export_float_onnx(model, x[:2], path)
    got = cpu_session(path).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, logits, rtol=1e-4, atol=1e-4)


def test_toy_results_never_go_into_benchmarks_results():
    with pytest.raises(SystemExit):
        zrun._parse(["--toy", "--results", str(zrun.RESULTS / "zoo.jsonl")])
    assert not zrun._parse(["--toy"]).results.resolve().is_relative_to(zrun.RESULTS.resolve())


def test_manifest_fields_are_null_where_the_manifest_lacks_them(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"layers": [{"name": "a", "channels_before": 4}]}))
    got = zrun._manifest_fields(tmp_path)
    assert got["channels_before"] == 4
    assert got["channels_removed"] is None and got["float_layers"] is None
    assert all(v is None for v in zrun._manifest_fields(tmp_path / "absent").values())


@pytest.mark.slow
def test_toy_run_writes_a_well_formed_row(tmp_path):
    results = tmp_path / "zoo.jsonl"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    p = subprocess.run([sys.executable, "-m", "benchmarks.zoo", "--toy", "--models", SMALL, "--datasets",
                        "digits", "--work", str(tmp_path / "work"), "--results", str(results)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1), p.stderr[-2000:]  # 1: a step failed, which the row must say
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert (row["model"], row["dataset"], row["toy"]) == (SMALL, "digits", True)
    assert (row["n_train"], row["n_val"], row["n_test"]) == (1149, 288, 360)  # 20 % of 1,437 for validation
    assert row["error"] == (row["errors"][0] if row["errors"] else None)
    assert (p.returncode == 1) == bool(row["errors"])
    for key in ("float_acc", "ptq_acc"):
        assert 0.0 <= row[key] <= 1.0
    assert row["ptq_bytes"] > 0 and row["float_train_seconds"] > 0
    assert row["rc"]["compress"] == 0, row["errors"]
    assert row["compress_seconds"] > 0 and row["compress_over_float_train"] > 0
    for profile in zrun.PROFILES:
        assert row["rc"][f"export-{profile}"] == 0, row["errors"]
        assert row["rc"][f"validate-{profile}"] in (0, 1)
        assert 0.0 <= row["sgsc_acc"][profile] <= 1.0
        assert row["gate"][profile] == ("passed" if row["rc"][f"validate-{profile}"] == 0 else "failed")
        assert row["drop_pp"][profile] == round(100 * (row["float_acc"] - row["sgsc_acc"][profile]), 2)
        assert row["bytes"][profile] > 0
    assert row["compact_bytes"] == row["bytes"]["compact"]
    assert row["compact_over_ptq"] == round(row["compact_bytes"] / row["ptq_bytes"], 4)
    assert isinstance(row["float_layers"], list)
    assert row["channels_before"] >= row["channels_removed"] + row["channels_masked"] >= 0
    md = results.with_suffix(".md").read_text()
    assert f"| {SMALL} *toy* | digits |" in md
