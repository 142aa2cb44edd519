"""The accuracy target (issue 16 item 1): a validation split held out of training, and the γ controller."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sgsc_export import CompressConfig, load_dataset
from sgsc_export.train.target import GAMMA_MAX_SCALE, GAMMA_MIN_SCALE, hold_out, next_scale, validation_count
from tests.sgsc_export.conftest import run_cli


def test_the_validation_split_is_held_out_deterministically():
    data = load_dataset("digits")
    n = len(data.x_train)
    rest, split = hold_out(data, CompressConfig(seed=3))
    assert len(split["indices"]) == validation_count(CompressConfig(), n) == min(n // 10, 1000)
    assert len(rest.x_train) + len(split["x"]) == n and len(data.x_train) == n  # the caller's data untouched
    assert not set(split["indices"]) & set(split["keep"])
    np.testing.assert_array_equal(split["x"], data.x_train[split["indices"]])
    np.testing.assert_array_equal(rest.y_train, data.y_train[split["keep"]])
    _, again = hold_out(data, CompressConfig(seed=3))
    _, other = hold_out(data, CompressConfig(seed=4))
    assert np.array_equal(again["indices"], split["indices"])
    assert not np.array_equal(other["indices"], split["indices"])
    same, none = hold_out(data, CompressConfig(validation_size=0))
    assert none is None and same is data


def test_a_validation_split_larger_than_the_training_split_is_one_line(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*TOY, "--validation-size", "5000", "--out", str(out))
    assert r.exit_code == 2 and not out.exists()
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines == ["error: validation_size=5000 leaves fewer than 2 of the training split's 1437 samples "
                     "to train on; give at most 1435, or 0 for no validation split"]


def test_dual_ascent_raises_gamma_with_room_and_lowers_it_past_the_target():
    assert next_scale(0.0, 0.0, 0.5, 0.5) == pytest.approx(0.5)  # no drop: full slack, γ × e^0.5
    assert next_scale(0.0, 0.25, 0.5, 0.5) == pytest.approx(0.25)
    assert next_scale(0.0, 5.0, 0.5, 0.5) == pytest.approx(-0.5)  # slack clipped at -1
    assert next_scale(0.0, 0.0, 0.5, 0.0) == 0.0  # dual_lr 0: γ fixed
    assert next_scale(10.0, 0.0, 0.5, 1.0) == pytest.approx(math.log(GAMMA_MAX_SCALE))
    assert next_scale(-10.0, 9.0, 0.5, 1.0) == pytest.approx(math.log(GAMMA_MIN_SCALE))


TOY = ["compress", "--dataset", "digits", "--steps", "40", "--finetune-steps", "0", "--float-epochs", "1",
       "--quiet"]


def test_an_unmet_target_is_one_line_and_exit_1_with_the_artifact_written(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*TOY, "--init-bits", "1", "--gamma", "2", "--max-drop", "0", "--out", str(out))
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("target not met")]
    assert len(lines) == 1 and "more than --max-drop 0" in lines[0]
    m = json.loads((out / "manifest.json").read_text())
    t = m["target"]
    assert t["met"] is False and t["drop"] > 0 and t["max_drop"] == 0 and t["validation"]["n"] == 143
    history = json.loads((out / "history.json").read_text())["records"]
    checks = [r for r in history if not r["finetune"]]
    assert [s for s, _ in t["gamma_trajectory"]] == [r["step"] for r in checks]
    assert all("validation_drop" in r for r in history)


def test_the_controller_moves_gamma_and_dual_lr_0_keeps_it(tmp_path):
    longer = [*TOY, "--steps", "120", "--max-drop", "100"]  # three checks (restore_every 50)
    moved = run_cli(*longer, "--out", str(tmp_path / "a"))
    fixed = run_cli(*longer, "--dual-lr", "0", "--out", str(tmp_path / "b"))
    assert moved.exit_code == fixed.exit_code == 0, moved.output + fixed.output
    g_moved = [g for _, g in json.loads((tmp_path / "a" / "manifest.json").read_text())["target"]
               ["gamma_trajectory"]]
    g_fixed = [g for _, g in json.loads((tmp_path / "b" / "manifest.json").read_text())["target"]
               ["gamma_trajectory"]]
    assert len(set(g_fixed)) == 1  # warm-up is 0 in the defaults: γ is the configured one throughout
    assert len(g_moved) == 3 and g_moved[0] < g_moved[1] < g_moved[2]  # 100 pp allowed: γ rises at each check
