"""The benchmark's units at toy size: plan, dependencies, onnxruntime PTQ and QAT end to end, weight-bit
count."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import run, units
from benchmarks.units import Unit


def test_quick_plan_has_every_method_and_ptq_waits_for_the_default_sgsc_run():
    plan = run.plan(run.SUITES["quick"])
    keys = {u.key for u in plan}
    g0 = run.default_gamma("digits")
    assert {"digits/s0/float", f"digits/s0/sgsc-g{g0}", f"digits/s0/lambda0-g{g0}", "digits/s0/ptq",
            "digits/s0/qat4", "digits/s0/qat2"} <= keys
    assert len(keys) == len(plan)  # no unit twice
    ptq = next(u for u in plan if u.method == "ptq")
    assert {d.key for d in ptq.deps(g0)} == {"digits/s0/float", f"digits/s0/sgsc-g{g0}"}
    full = run.plan(run.SUITES["full"])
    assert {u.seed for u in full} == {0, 1, 2, 3, 4}
    assert {u.dataset for u in full} == {"digits", "mnist", "names"}


def test_qat_config_is_fixed_bits_without_pruning_or_preservation():
    cfg = units.config_for(Unit("digits", 3, "qat", bits=2))
    assert (cfg.learn_bits, cfg.init_bits, cfg.gamma, cfg.lam, cfg.seed) == (False, 2.0, 0.0, 0.0, 3)
    sgsc = units.config_for(Unit("digits", 3, "sgsc", gamma=0.5))
    assert (cfg.steps, cfg.finetune_steps) == (sgsc.steps + sgsc.finetune_steps, 0)  # as many steps as SGSC
    assert units.config_for(Unit("digits", 0, "lambda0", gamma=1.0)).lam == 0.0


def test_weight_bits_of_dq_matmulnbits_and_float_initializers(tmp_path):
    w8 = numpy_helper.from_array(np.ones((4, 3), np.int8), "w8")
    s = numpy_helper.from_array(np.ones((4,), np.float32), "s")
    wc = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "wc")
    b = numpy_helper.from_array(np.ones((4,), np.float32), "bias")  # a bias: not counted
    packed = numpy_helper.from_array(np.zeros((4, 1, 16), np.uint8), "packed")
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["c"]),
        helper.make_node("DequantizeLinear", ["w8", "s"], ["w"], axis=0),
        helper.make_node("Gemm", ["f", "w", "bias"], ["g"], transB=1),
        helper.make_node("MatMulNBits", ["g", "packed", "s"], ["y"], domain="com.microsoft", K=32, N=4,
                         bits=4, block_size=32),
    ]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [w8, s, wc, b, packed])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    got = units.onnx_weight_bits(path)
    assert got == {"weight_bits": 8 * 12 + 32 * 18 + 4 * 32 * 4, "weights_quantized": 12 + 128,
                   "weights_counted": 12 + 128 + 18}


@pytest.fixture
def toy_units(tmp_path, monkeypatch):
    orig = units.config_for
    monkeypatch.setattr(units, "config_for", lambda u: orig(u).replace(
        float_epochs=1, steps=30, finetune_steps=0, restore_every=10, prune_every=10, checkpoint_every=10))
    monkeypatch.setattr(units, "workdir", lambda suite, u: tmp_path / suite / u.key)


def test_units_end_to_end_on_digits(toy_units):
    recs = {u.key: units.run_unit("toy", u, 0.5) for u in (
        Unit("digits", 0, "float"), Unit("digits", 0, "sgsc", gamma=0.5), Unit("digits", 0, "ptq"),
        Unit("digits", 0, "qat", bits=2))}
    sgsc = recs["digits/s0/sgsc-g0.5"]
    assert set(sgsc["onnx"]) == {"portable", "compact", "ort-int8"}
    for m in sgsc["onnx"].values():  # the .onnx in onnxruntime agrees with PyTorch on these files
        assert m["test_accuracy"] == pytest.approx(sgsc["pytorch"]["test_accuracy"], abs=0.01)
    ptq = recs["digits/s0/ptq"]["onnx"]
    # every Conv/Gemm weight
    assert ptq["ptq-int8"]["weights_quantized"] == recs["digits/s0/float"]["weights"]
    assert ptq["ptq-int8"]["file_bytes"] < ptq["float"]["file_bytes"] / 3
    assert "ptq-w4" not in ptq and recs["digits/s0/ptq"]["ptq_w4_layers"] == 0  # Conv/Gemm: not applicable
    qat = recs["digits/s0/qat2"]
    assert qat["stored_bits"] == 2 * recs["digits/s0/float"]["weights"]


def test_seeds_suite_is_twenty_seeds_without_qat_or_sweeps():
    plan = run.plan(run.SUITES["seeds"])
    assert {u.seed for u in plan} == set(range(20))
    assert {u.method for u in plan} == {"float", "sgsc", "lambda0", "ptq"}
    assert len(plan) == 20 * 4
    assert {u.gamma for u in plan if u.gamma is not None} == {run.default_gamma("digits")}


def test_select_suite_sweeps_every_seed_and_never_reads_the_test_split():
    plan = run.plan(run.SUITES["select"])
    assert {u.method for u in plan} == {"float", "sgsc", "ptq"}  # PTQ INT8: the size budget of the rule
    seeds = {"digits": tuple(range(10)), "mnist": (0, 1, 2), "names": (0, 1)}
    for ds, grid in (("digits", {0.1, 0.2, 0.3, 0.5, 1.0}), ("mnist", {0.1, 0.2, 0.3, 0.5}),
                     ("names", {0.02, 0.05, 0.1})):
        assert {u.seed for u in plan if u.dataset == ds} == set(seeds[ds])
        assert {u.seed for u in plan if u.dataset == ds and u.method == "ptq"} == set(seeds[ds])
        for seed in seeds[ds]:
            sgsc = [u for u in plan if u.dataset == ds and u.seed == seed and u.method == "sgsc"]
            assert {u.gamma for u in sgsc} == grid
            assert [u.key for u in sgsc if u.lam is not None] == ([f"names/s{seed}/sgsc-g0.05-l1.0"]
                                                                  if ds == "names" else [])
    lam1 = Unit("names", 0, "sgsc", gamma=0.05, lam=1.0)
    assert units.config_for(lam1).lam == 1.0
    assert units.config_for(Unit("names", 0, "sgsc", gamma=0.05)).lam == 0.1
    full, held = units.data_for("full", "digits"), units.data_for("select", "digits")
    assert "select" in units.VALIDATION_SUITES and "full" not in units.VALIDATION_SUITES
    assert len(held.x_train) + len(held.x_test) == len(full.x_train)
    # stratified
    assert np.abs(np.bincount(held.y_test) - np.bincount(full.y_train) * units.HOLDOUT).max() <= 1
    train_rows = {r.tobytes() for r in full.x_train}
    # both parts come out of the training split: nothing of the test split is trained on or selected by
    assert all(r.tobytes() in train_rows for r in (*held.x_train, *held.x_test))
    assert abs(len(held.x_test) / len(full.x_train) - units.HOLDOUT) < 0.01


def test_validation_split_of_the_language_model_keeps_its_vocabulary():
    if not units.DATA_DIRS["names"].is_dir():
        pytest.skip(f"{units.DATA_DIRS['names']} absent (the names data of ../shared/data)")
    full, held = units.data_for("full", "names"), units.data_for("select", "names")
    assert held.vocab == full.vocab and held.context == full.context
    assert len(held.x_train) + len(held.x_test) == len(full.x_train)
    assert held.x_test.shape[1:] == full.x_test.shape[1:] and held.y_test.shape[1:] == full.y_test.shape[1:]


def test_a_fresh_checkout_keeps_earlier_latency_of_files_not_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "workdir", lambda suite, u: tmp_path / suite / u.key)
    # so a unit that needs it redoes the reference
    assert not run._files_present("t", Unit("digits", 0, "float"))
    (tmp_path / "t" / "digits/s0/float").mkdir(parents=True)
    (tmp_path / "t" / "digits/s0/float" / "float.pt").write_bytes(b"x")
    assert run._files_present("t", Unit("digits", 0, "float"))
    assert not run._files_present("t", Unit("digits", 0, "sgsc", gamma=1.0))
    out = tmp_path / "lat.jsonl"
    earlier = {"key": "digits/s0/sgsc-g1.0", "format": "compact", "threads": 1, "ms_batch_1": 0.03,
               "ms_batch_64": 1.1}
    out.write_text(json.dumps(earlier) + "\n")
    rec = {"key": "digits/s0/sgsc-g1.0", "dataset": "digits", "seed": 0, "method": "sgsc", "gamma": 1.0,
           "bits": None,
           "onnx": {"compact": {}}}
    # its file is gone: the earlier measurement stays
    assert run.measure_latency("t", [rec], out) == [earlier]
