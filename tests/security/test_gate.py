"""The gate never passes a corrupted file and never skips an asked-for check silently (issue 14, items 7 and
10).

Real exports of the toy digits artifact (tests/conftest.py), tampered with onnx the way a hostile or broken
toolchain would, driven through ``sgsc validate``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper as nh

from sgsc_export.cli import main
from tests.runtime_checks.conftest import make_data, make_model, seal_run, write_run

FAST = ["--no-latency"]


def sgsc(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def exports(digits_artifact, tmp_path_factory) -> dict[str, Path]:
    from converters import export

    out = tmp_path_factory.mktemp("gate_exports")
    paths = {}
    for profile in ("portable", "compact", "ort-int8"):
        paths[profile] = out / f"{profile}.onnx"
        export(digits_artifact, paths[profile], profile)
    return paths


_LOWEST = {onnx.TensorProto.INT8: -128, onnx.TensorProto.INT4: -8, onnx.TensorProto.INT2: -2}


def _dq_weights(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.TensorProto]]:
    """(DequantizeLinear, its integer initializer) of every weight, in graph order."""
    inits = {i.name: i for i in model.graph.initializer}
    return [(n, inits[n.input[0]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type in
            (onnx.TensorProto.INT8, onnx.TensorProto.INT4, onnx.TensorProto.INT2)]


def _replace(model: onnx.ModelProto, init: onnx.TensorProto, array: np.ndarray) -> None:
    if init.data_type == onnx.TensorProto.INT8:
        init.CopyFrom(nh.from_array(array.astype(np.int8), init.name))
    else:  # INT4 / INT2: onnx packs them itself
        init.CopyFrom(onnx.helper.make_tensor(init.name, init.data_type, array.shape,
                                              array.flatten().tolist()))


def negate_output_channel(src: Path, dst: Path, channel: int = 0, layer: int = -1) -> Path:
    """Negate the integer weights of one output channel of one layer (the issue's corruption)."""
    model = onnx.load(src)
    dq, init = _dq_weights(model)[layer]
    w = nh.to_array(init).astype(np.int64)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    index = [slice(None)] * w.ndim
    index[axis] = channel
    # -(-128) does not fit: saturate
    w[tuple(index)] = np.minimum(-w[tuple(index)], -_LOWEST[init.data_type] - 1)
    assert np.any(w != nh.to_array(init))
    _replace(model, init, w)
    onnx.save(model, dst)
    return dst


def negate_one_weight(src: Path, dst: Path) -> Path:
    """Negate one nonzero integer weight of the first layer: a corruption too small to flip many
    predictions."""
    model = onnx.load(src)
    _, init = _dq_weights(model)[0]
    w = nh.to_array(init).astype(np.int64)
    flat = w.reshape(-1)
    i = int(np.argmax(np.abs(flat)))
    lo = _LOWEST[init.data_type]
    flat[i] = -flat[i] if flat[i] != lo else -lo - 1
    _replace(model, init, w)
    onnx.save(model, dst)
    return dst


def report_of(path: Path) -> dict:
    return json.loads(path.read_text())


def checks(report: dict, suffix: str) -> list[dict]:
    return [c for c in report["checks"] if c["name"].endswith(suffix)]


@pytest.mark.parametrize("profile", ["portable", "compact", "ort-int8"])
def test_honest_exports_pass_with_logit_parity(exports, digits_artifact, tmp_path, profile):
    # the toy artifact's preservation set is small: ort-int8's activation steps flip 2 of its near-tie
    # samples, which the agreement check (not the subject here) sees at its default 0.99
    loose = ["--min-agreement", "0.95"] if profile == "ort-int8" else []
    code, out = sgsc("validate", exports[profile], "--run", digits_artifact, "--report", tmp_path / "r.json",
                     *loose, *FAST)
    assert code == 0, out
    parity = checks(report_of(tmp_path / "r.json"), "/logit_parity")
    assert len(parity) == 4  # cpu × {disabled, all} × {preservation, test}
    for check in parity:
        assert check["status"] == "passed" and check["value"] <= check["threshold"], check
        assert f"profile {profile}" in check["reason"]
    if profile != "ort-int8":  # exact: float rounding only, well below 1e-3 of a logit
        assert max(c["value"] for c in parity) < 1e-4 and min(c["threshold"] for c in parity) < 0.05


def test_tampered_portable_fails_on_logit_parity(exports, digits_artifact, tmp_path):
    bad = negate_output_channel(exports["portable"], tmp_path / "bad.onnx")
    code, out = sgsc("validate", bad, "--run", digits_artifact, "--report", tmp_path / "r.json", *FAST)
    assert code == 1, out
    assert "FAILED cpu/disabled/test/logit_parity" in out
    report = report_of(tmp_path / "r.json")
    assert report["status"] == "failed" and all(c["status"] == "failed"
                                                for c in checks(report, "/logit_parity"))


def test_a_corruption_that_flips_nothing_still_fails(exports, digits_artifact, tmp_path):
    """Top-1 agreement and accuracy may not see a small corruption; the logits do."""
    bad = negate_one_weight(exports["portable"], tmp_path / "bad.onnx")
    code, out = sgsc("validate", bad, "--run", digits_artifact, "--report", tmp_path / "r.json",
                     "--min-agreement", "0.9", "--max-accuracy-drop", "5", *FAST)
    report = report_of(tmp_path / "r.json")
    assert code == 1, out
    failed = {c["name"].rsplit("/", 1)[1] for c in report["checks"] if c["status"] == "failed"}
    assert failed == {"logit_parity"}, report["checks"]


def test_tampered_compact_packed_bytes_fail(exports, digits_artifact, tmp_path):
    model = onnx.load(exports["compact"])
    blob = max((i for i in model.graph.initializer if i.data_type == onnx.TensorProto.UINT8),
               key=lambda i: len(nh.to_array(i).reshape(-1)))
    data = nh.to_array(blob).copy()
    flat = data.reshape(-1)
    flat[len(flat) // 2] ^= 0xFF  # flip every bit of one byte of the packed weights
    blob.CopyFrom(nh.from_array(data, blob.name))
    onnx.save(model, tmp_path / "bad.onnx")
    code, out = sgsc("validate", tmp_path / "bad.onnx", "--run", digits_artifact,
                     "--report", tmp_path / "r.json", *FAST)
    assert code == 1, out
    assert all(c["status"] == "failed" for c in checks(report_of(tmp_path / "r.json"), "/logit_parity"))


def test_tampered_ort_int8_fails(exports, digits_artifact, tmp_path):
    bad = negate_output_channel(exports["ort-int8"], tmp_path / "bad.onnx")
    code, out = sgsc("validate", bad, "--run", digits_artifact, "--report", tmp_path / "r.json", *FAST)
    assert code == 1, out
    parity = checks(report_of(tmp_path / "r.json"), "/logit_parity")
    assert parity and all(c["status"] == "failed" for c in parity)
    assert all("float twin" in c["reason"] for c in parity)


def test_max_logit_diff_overrides_the_derived_tolerance(exports, digits_artifact, tmp_path):
    bad = negate_one_weight(exports["portable"], tmp_path / "bad.onnx")
    code, out = sgsc("validate", bad, "--run", digits_artifact, "--report", tmp_path / "r.json",
                     "--min-agreement", "0.9", "--max-accuracy-drop", "5", "--max-logit-diff", "1000", *FAST)
    assert code == 0, out
    report = report_of(tmp_path / "r.json")
    assert report["thresholds"]["max_logit_diff"] == 1000.0
    for check in checks(report, "/logit_parity"):
        assert check["threshold"] == 1000.0 and "set by max_logit_diff" in check["reason"]
    code, out = sgsc("validate", exports["portable"], "--run", digits_artifact, "--max-logit-diff", "-1",
                     *FAST)
    assert code == 2 and "max_logit_diff" in out


def test_a_file_made_elsewhere_gets_the_exact_tolerance_and_says_so(exports, digits_artifact, tmp_path):
    model = onnx.load(exports["portable"])
    keep = [p for p in model.metadata_props if p.key != "sgsc.profile"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, tmp_path / "elsewhere.onnx")
    code, out = sgsc("validate", tmp_path / "elsewhere.onnx", "--run", digits_artifact, "--report",
                     tmp_path / "r.json", *FAST)
    assert code == 0, out
    for check in checks(report_of(tmp_path / "r.json"), "/logit_parity"):
        assert "no sgsc.profile metadata" in check["reason"] and "exact tolerance" in check["reason"]


def user_npz(artifact: Path, path: Path, logits: np.ndarray | None = None,
             with_logits: bool = True) -> np.ndarray:
    """The artifact's test split + preservation set as a user's npz (``x``, ``y``, ``preservation_indices``,
    and the PyTorch ``logits`` unless ``with_logits`` is false); returns the logits."""
    with np.load(artifact / "eval.npz") as ev:
        x = np.concatenate([ev["x_test"], ev["x_preservation"]])
        y = np.concatenate([ev["y_test"], ev["y_preservation"]])
        ref = np.concatenate([ev["logits_test"], ev["logits_preservation"]])
        n = len(ev["x_test"])
    arrays = dict(x=x, y=y, preservation_indices=np.arange(n, len(x), dtype=np.int64))
    if with_logits:
        arrays["logits"] = ref if logits is None else logits
    np.savez(path, **arrays)
    return ref


def test_no_pytorch_reference_is_reported_not_passed(exports, digits_artifact, tmp_path):
    user_npz(digits_artifact, tmp_path / "d.npz", with_logits=False)
    code, out = sgsc("validate", exports["portable"], "--data", f"npz:{tmp_path / 'd.npz'}", "--report",
                     tmp_path / "r.json", *FAST)
    parity = checks(report_of(tmp_path / "r.json"), "/logit_parity")
    assert len(parity) == 4 and all(c["status"] == "skipped" and "no PyTorch reference" in c["reason"]
                                    for c in parity)
    assert code == 0, out  # the accuracy checks ran; the skip is named in the report


def test_user_logits_are_a_reference_too(exports, digits_artifact, tmp_path):
    logits = user_npz(digits_artifact, tmp_path / "d.npz").copy()
    assert sgsc("validate", exports["portable"], "--data", f"npz:{tmp_path / 'd.npz'}", *FAST)[0] == 0
    logits[:, 0] += 0.5  # a reference the file does not reproduce
    user_npz(digits_artifact, tmp_path / "d.npz", logits)
    code, out = sgsc("validate", exports["portable"], "--data", f"npz:{tmp_path / 'd.npz'}", *FAST)
    assert code == 1 and "logit_parity" in out


def test_an_artifact_without_its_reference_logits_is_an_error(tmp_path):
    model, data = make_model(), make_data()
    run, path = write_run(tmp_path, model, data)
    with np.load(run / "eval.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith("logits")}
    np.savez(run / "eval.npz", **arrays)
    seal_run(run)  # a complete, consistent artifact that simply has no reference logits
    code, out = sgsc("validate", path, "--run", run, *FAST)
    assert code == 2 and "logit_parity could not run" in out


# -- item 7: an asked-for check that cannot run is an error --------------------------------------------------

def test_layers_with_a_reference_that_does_not_match_is_exit_2(exports, digits_artifact, tmp_path):
    other = tmp_path / "other.onnx"
    onnx.save(make_model(), other)  # a different model: 2 layers, other names
    code, out = sgsc("validate", exports["portable"], "--run", digits_artifact, "--layers",
                     "--layer-reference",
                     other, "--report", tmp_path / "r.json", *FAST)
    assert code == 2, out
    assert "layers/max_error_steps could not run" in out and "no match in the reference" in out
    report = report_of(tmp_path / "r.json")
    assert report["status"] == "error" and not report["passed"]


def _float_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """The tiny model with every weight DequantizeLinear folded to a float initializer (no quantised
    layer)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            w, s = nh.to_array(inits[node.input[0]]).astype(np.float32), nh.to_array(inits[node.input[1]])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * w.ndim
            shape[axis] = -1
            out.graph.initializer.append(nh.from_array(w * s.reshape(shape), node.output[0]))
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def test_layers_on_a_model_without_quantised_layers_is_exit_2(tmp_path):
    run, path = write_run(tmp_path, _float_only(make_model()), make_data())
    code, out = sgsc("validate", path, "--run", run, "--layers", *FAST)
    assert code == 2, out
    assert "no quantised layers" in out
    assert sgsc("validate", path, "--run", run, *FAST)[0] == 0  # without --layers the file is fine


def test_layers_without_the_artifact_float_weights_is_exit_2(tmp_path):
    run, path = write_run(tmp_path, make_model(), make_data())
    (run / "model.safetensors").unlink()
    code, out = sgsc("validate", path, "--run", run, "--layers", *FAST)
    assert code == 2 and "model.safetensors" in out


def test_layers_with_artifact_weights_that_miss_a_layer_is_exit_2(tmp_path):
    """A layer without its artifact weight would be compared against its own dequantized weight: never
    silently."""
    from safetensors.numpy import load_file, save_file

    from tests.runtime_checks.conftest import save_artifact_weights
    model = make_model()
    run, path = write_run(tmp_path, model, make_data())
    save_artifact_weights(run, model)
    assert sgsc("validate", path, "--run", run, "--layers", *FAST)[0] == 0
    state = load_file(str(run / "model.safetensors"))
    save_file({"conv.weight": state["conv.weight"]}, str(run / "model.safetensors"))  # fc's weight gone
    seal_run(run)
    code, out = sgsc("validate", path, "--run", run, "--layers", *FAST)
    assert code == 2 and "1 of 2 quantised layers have no match" in out, out


# -- language models: [N, T, vocab] logits, the same check over every real position --------------------------

def test_language_model_honest_passes_and_tampered_fails(lm_artifact, lm_portable, tmp_path):
    # the toy LM's compression costs accuracy; the loose
    # accuracy/perplexity limits leave logit parity the judge
    loose = ["--max-accuracy-drop", "100", "--max-perplexity-ratio", "100", *FAST]
    code, out = sgsc("validate", lm_portable, "--run", lm_artifact, "--report", tmp_path / "r.json", *loose)
    assert code == 0, out
    parity = checks(report_of(tmp_path / "r.json"), "/logit_parity")
    assert len(parity) == 4 and all(c["status"] == "passed" and c["value"] < 1e-3 for c in parity), parity
    bad = negate_output_channel(lm_portable, tmp_path / "bad.onnx", channel=1, layer=0)
    code, out = sgsc("validate", bad, "--run", lm_artifact, "--report", tmp_path / "r2.json", *loose)
    assert code == 1, out
    assert all(c["status"] == "failed" for c in checks(report_of(tmp_path / "r2.json"), "/logit_parity"))


def rescale_one_activation(src: Path, dst: Path, factor: float = 4.0) -> Path:
    """Give the DequantizeLinear of the last activation QDQ pair its own scale, ``factor`` times the
    QuantizeLinear's: a pair that rescales the activation instead of only rounding it."""
    model = onnx.load(src)
    inits = {i.name: i for i in model.graph.initializer}
    q_out = {n.output[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"
             and n.input[0] not in inits}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in q_out][-1]
    scale = nh.to_array(inits[dq.input[1]]) * np.float32(factor)
    model.graph.initializer.append(nh.from_array(scale.astype(np.float32), "tampered.scale"))
    dq.input[1] = "tampered.scale"
    onnx.save(model, dst)
    return dst


def test_a_qdq_pair_that_rescales_is_not_absorbed_by_the_twin(exports, digits_artifact, tmp_path):
    """The float twin removes only true round trips; a rescaling pair stays in it and counts against the
    file."""
    bad = rescale_one_activation(exports["ort-int8"], tmp_path / "bad.onnx")
    code, out = sgsc("validate", bad, "--run", digits_artifact, "--report", tmp_path / "r.json",
                     "--min-agreement", "0", "--max-accuracy-drop", "100", *FAST)
    assert code == 1, out
    parity = checks(report_of(tmp_path / "r.json"), "/logit_parity")
    assert parity and all(c["status"] == "failed" for c in parity)
