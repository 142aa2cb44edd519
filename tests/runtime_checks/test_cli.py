"""``sgsc validate`` through click's CliRunner: exit codes, fail-closed, the acceptance scenarios, report
files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from sgsc_export.cli.validate import validate_cmd
from tests.runtime_checks.conftest import make_model, run_onnx, save_artifact_weights, weights_of, write_run

FAST = ["--no-latency"]


def invoke(*args):
    result = CliRunner().invoke(validate_cmd, [str(a) for a in args])
    return result, result.exit_code


def broken(model_path, **weights):
    """The stamped model at ``model_path`` with integer weights replaced (the metadata stays)."""
    model = onnx.load(model_path)
    good = weights_of(model)
    rebuilt = make_model(wc=weights.get("wc", good["conv.weight_q"]), wm=weights.get("wm",
                                                                                     good["fc.weight_q"]))
    del model.graph.initializer[:]
    model.graph.initializer.extend(rebuilt.graph.initializer)
    out = model_path.with_name("broken.onnx")
    onnx.save(model, out)
    return out


def test_help_lists_every_option():
    result, code = invoke("--help")
    assert code == 0
    for option in ("--run", "--data", "--providers", "--require-providers", "--opt-levels",
                   "--max-accuracy-drop",
                   "--min-agreement", "--layers", "--report", "--markdown", "--junit", "--batch-sizes",
                   "--threads", "--no-latency"):
        assert option in result.output


def test_good_model_passes_with_all_reports(run_dir, tmp_path):
    run, model = run_dir
    paths = [tmp_path / "out" / n for n in ("r.json", "r.md", "r.xml")]
    result, code = invoke(model, "--run", run, "--layers", "--report", paths[0], "--markdown", paths[1],
                          "--junit", paths[2], "--batch-sizes", "1,4")
    assert code == 0, result.output
    report = json.loads(paths[0].read_text())
    assert report["passed"] is True and report["status"] == "passed"
    assert report["providers"]["cpu"]["test"]["agreement"] == 1.0
    assert set(report["latency_ms"]["cpu"]) >= {"batch_1", "batch_4", "threads"}
    assert "# sgsc validate: PASSED" in paths[1].read_text()
    suite = ET.parse(paths[2]).getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "0" and int(suite.get("tests")) >= 9
    assert not list(tmp_path.glob("out/.*.tmp"))


def test_flipped_channel_sign_fails_and_lists_flipped_samples(run_dir, tmp_path):
    run, model = run_dir
    x_test = np.load(run / "eval.npz")["x_test"]
    wm = weights_of(onnx.load(model))["fc.weight_q"]
    cls = int(np.bincount(run_onnx(onnx.load(model), x_test).argmax(1), minlength=10).argmax())
    wm[:, cls] = -wm[:, cls]
    bad = broken(model, wm=wm)
    result, code = invoke(bad, "--run", run, "--report", tmp_path / "r.json", *FAST)
    assert code == 1, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    expected = np.flatnonzero(run_onnx(onnx.load(bad), x_test).argmax(1) != run_onnx(onnx.load(model), x_test)
                              .argmax(1)).tolist()
    assert expected and report["providers"]["cpu"]["test"]["flipped"] == expected
    assert report["providers"]["cpu"]["opt_levels"]["all"]["test"]["flipped"] == expected
    assert report["passed"] is False and report["status"] == "failed"
    assert "FAILED cpu/disabled/test/agreement" in result.output


def test_swapped_channels_fail_and_layers_name_the_broken_layer(run_dir, tmp_path):
    run, model = run_dir
    wc = weights_of(onnx.load(model))["conv.weight_q"]
    wc[[0, 2]] = wc[[2, 0]]
    bad = broken(model, wc=wc)
    result, code = invoke(bad, "--run", run, "--layers", "--report", tmp_path / "r.json", *FAST)
    assert code == 1, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["layers"]["worst_layer"] == "conv" and report["layers"]["reference"] == "artifact_weights"
    assert report["layers"]["max_error_steps"] > 1
    assert "largest layer error: conv" in result.output


def test_swapped_channels_against_a_reference_onnx(run_dir, tmp_path):
    run, model = run_dir
    wm = weights_of(onnx.load(model))["fc.weight_q"]
    wm[:, [1, 5]] = wm[:, [5, 1]]
    bad = broken(model, wm=wm)
    _, code = invoke(bad, "--run", run, "--layers", "--layer-reference", model, "--report",
                          tmp_path / "r.json", *FAST)
    assert code == 1
    layers = json.loads((tmp_path / "r.json").read_text())["layers"]
    assert layers["worst_layer"] == "fc" and layers["reference"].startswith("onnx:")


def test_wrong_preservation_set_is_exit_2(tmp_path, tiny_model, data):
    _, model = write_run(tmp_path, tiny_model, data)
    other, _ = write_run(tmp_path / "other", tiny_model, {**data,
                                                          "x_preservation": data["x_preservation"][:-1]})
    result, code = invoke(model, "--run", other, "--report", tmp_path / "r.json", *FAST)
    assert code == 2
    assert "error: wrong preservation set" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "error" and report["passed"] is False and report["errors"]


def test_npz_data_without_references_compares_against_unoptimised_onnx(tmp_path, tiny_model, data):
    onnx.save(tiny_model, tmp_path / "m.onnx")
    y = run_onnx(tiny_model, data["x_test"]).argmax(1)
    np.savez(tmp_path / "d.npz", x=data["x_test"], y=y, preservation_indices=np.arange(20))
    result, code = invoke(tmp_path / "m.onnx", "--data", f"npz:{tmp_path / 'd.npz'}", "--report",
                          tmp_path / "r.json", *FAST)
    assert code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["data"]["preservation_check"].startswith("not checked")
    assert any("onnx:cpu/disabled" in note for note in report["notes"])


@pytest.mark.parametrize("args, message", [
    (["--providers", "cpu,cuda", "--require-providers"], "required but unavailable"),
    (["--providers", "npu"], "unknown provider"),
    (["--opt-levels", "max"], "unknown optimisation level"),
    (["--min-agreement", "2"], "min_agreement"),
    (["--batch-sizes", "0"], "--batch-sizes"),
])
def test_bad_options_are_exit_2(run_dir, args, message):
    run, model = run_dir
    result, code = invoke(model, "--run", run, *args, *FAST)
    assert code == 2 and message in result.output


def test_bad_inputs_are_exit_2(run_dir, tmp_path):
    run, model = run_dir
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert invoke(tmp_path / "junk.onnx", "--run", run)[1] == 2
    assert invoke(tmp_path / "missing.onnx", "--run", run)[1] == 2
    assert invoke(model)[1] == 2                       # no data
    assert invoke(model, "--run", run, "--data", "npz:x.npz")[1] == 2
    assert invoke(model, "--data", "x.npz")[1] == 2


def test_a_missing_provider_is_skipped_with_reason(run_dir, tmp_path):
    run, model = run_dir
    _, code = invoke(model, "--run", run, "--providers", "cpu,tensorrt", "--report", tmp_path / "r.json",
                          *FAST)
    report = json.loads((tmp_path / "r.json").read_text())
    if "tensorrt" in report["providers"]:
        pytest.skip("TensorrtExecutionProvider is present here; the skip path is not exercised")
    assert code == 0 and "TensorrtExecutionProvider" in report["skipped_providers"]["tensorrt"]


@pytest.mark.parametrize("target, exc, shown", [
    ("runtime_checks.runner.run_batched", RuntimeError("kernel exploded"), "kernel exploded"),
    ("runtime_checks.runner.load_model", KeyError("surprise"), "error: KeyError"),
])
def test_any_exception_fails_closed(run_dir, monkeypatch, target, exc, shown):
    run, model = run_dir

    def boom(*args, **kwargs):
        raise exc
    monkeypatch.setattr(target, boom)
    result, code = invoke(model, "--run", run, *FAST)
    assert code == 2 and shown in result.output


def test_artifact_weights_reference_detects_nothing_on_a_good_int4_model(tmp_path, data):
    from onnx import TensorProto as T
    model = make_model(T.INT4, 21)
    run, path = write_run(tmp_path, model, data)
    save_artifact_weights(run, model)
    result, code = invoke(path, "--run", run, "--layers", *FAST)
    assert code == 0, result.output
