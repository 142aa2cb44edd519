"""Tiny ONNX models and artifact directories for the runtime_checks tests (built with onnx.helper, no torch).

The model: x [N,1,8,8] → DequantizeLinear(W_conv) → Conv (4 channels, 3×3) → Relu → Reshape → DequantizeLinear
(W_fc) → MatMul [144, 10] → Add bias → logits. Weights are int8, INT4 (opset 21) or INT2 (opset 25)
initializers with per-channel power-of-two scales, as the converters write them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from runtime_checks.data import preservation_sha256

RANGES = {T.INT8: (-128, 127), T.INT4: (-8, 7), T.INT2: (-2, 1)}


def make_model(weight_type: int = T.INT8, opset: int = 21, seed: int = 0, sha256: str | None = None,
               wc: np.ndarray | None = None, wm: np.ndarray | None = None,
               act_qdq: bool = False) -> onnx.ModelProto:
    """The tiny quantised classifier; ``wc`` / ``wm`` override the integer weights (for breaking it)."""
    rng = np.random.default_rng(seed)
    lo, hi = RANGES[weight_type]
    drawn_wc, drawn_wm = rng.integers(lo, hi + 1, size=(4, 1, 3, 3)), rng.integers(lo, hi + 1, size=(144, 10))
    wc, wm = drawn_wc if wc is None else wc, drawn_wm if wm is None else wm
    conv_scale = (2.0 ** -rng.integers(2, 4, 4)).astype(np.float32)
    fc_scale = (2.0 ** -rng.integers(4, 6, 10)).astype(np.float32)
    if weight_type == T.INT2:
        conv_scale, fc_scale = conv_scale * 8, fc_scale * 8

    def qt(name: str, arr: np.ndarray) -> onnx.TensorProto:
        return h.make_tensor(name, weight_type, arr.shape, np.asarray(arr).astype(np.int8).flatten().tolist())

    inits = [qt("conv.weight_q", wc), nh.from_array(conv_scale, "conv.scale"),
             nh.from_array(np.full(4, 0.1, np.float32), "conv.bias"),
             qt("fc.weight_q", wm), nh.from_array(fc_scale, "fc.scale"),
             nh.from_array(rng.normal(size=10).astype(np.float32) * 0.1, "fc.bias"),
             nh.from_array(np.array([-1, 144], np.int64), "shape")]
    flat = "flat"
    nodes = [h.make_node("DequantizeLinear", ["conv.weight_q", "conv.scale"], ["conv.weight"], axis=0,
                         name="conv.dq"),
             h.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["conv.out"], name="conv"),
             h.make_node("Relu", ["conv.out"], ["relu.out"], name="relu"),
             h.make_node("Reshape", ["relu.out", "shape"], ["flat"], name="flatten")]
    if act_qdq:
        inits += [nh.from_array(np.array(0.05, np.float32), "act.scale"),
                  nh.from_array(np.array(0, np.uint8), "act.zp")]
        nodes += [h.make_node("QuantizeLinear", ["flat", "act.scale", "act.zp"], ["flat.q"], name="act.q"),
                  h.make_node("DequantizeLinear", ["flat.q", "act.scale", "act.zp"], ["flat.dq"],
                              name="act.dq")]
        flat = "flat.dq"
    nodes += [h.make_node("DequantizeLinear", ["fc.weight_q", "fc.scale"], ["fc.weight"], axis=1,
                          name="fc.dq"),
              h.make_node("MatMul", [flat, "fc.weight"], ["fc.mm"], name="fc"),
              h.make_node("Add", ["fc.mm", "fc.bias"], ["logits"], name="fc.add")]
    graph = h.make_graph(nodes, "tiny", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 8, 8])],
                         [h.make_tensor_value_info("logits", T.FLOAT, ["N", 10])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 10 if opset < 25 else 11
    meta = {"sgsc.task": "classification", "sgsc.profile": "portable", "sgsc.opset": str(opset)}
    if sha256:
        meta["sgsc.preservation_sha256"] = sha256
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return model


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


def weights_of(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Integer weights as int64 arrays, by initializer name."""
    out = {}
    for init in model.graph.initializer:
        if init.name.endswith("weight_q"):
            out[init.name] = nh.to_array(init).astype(np.int64)
    return out


def make_data(n_test: int = 300, n_pres: int = 60, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_test + n_pres, 1, 8, 8)).astype(np.float32)
    return {"x_test": x[:n_test], "x_preservation": x[n_test:]}


def write_run(tmp: Path, model: onnx.ModelProto, data: dict[str, np.ndarray], float_acc: float | None = None,
              tamper: bool = False) -> tuple[Path, Path]:
    """An artifact-like directory whose labels and PyTorch references are the good model's predictions."""
    run = tmp / "run"
    run.mkdir(parents=True, exist_ok=True)
    logits_test, logits_pres = run_onnx(model, data["x_test"]), run_onnx(model, data["x_preservation"])
    y_test, y_pres = logits_test.argmax(1).astype(np.int64), logits_pres.argmax(1).astype(np.int64)
    sha = preservation_sha256(data["x_preservation"], y_pres)
    np.savez(run / "eval.npz", x_test=data["x_test"], y_test=y_test, x_preservation=data["x_preservation"],
             y_preservation=(y_pres + 1) % 10 if tamper else y_pres, logits_test=logits_test,
             logits_preservation=logits_pres)
    manifest = {"format": "sgsc-artifact", "format_version": 1,
                "layers": [{"name": "conv"}, {"name": "fc"}],
                "metrics": {"float": {"test_accuracy": 1.0 if float_acc is None else float_acc,
                                      "preservation_accuracy": 1.0 if float_acc is None else float_acc}},
                "preservation": {"size": len(y_pres), "sha256": sha}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    save_artifact_weights(run, model)  # a complete artifact: `--run` checks every file's SHA-256 (issue 14)
    path = tmp / "model.onnx"
    stamped = onnx.ModelProto()
    stamped.CopyFrom(model)
    stamped.metadata_props.append(onnx.StringStringEntryProto(key="sgsc.preservation_sha256", value=sha))
    onnx.save(stamped, str(path))
    return run, path


def save_artifact_weights(run: Path, model: onnx.ModelProto) -> None:
    """model.safetensors as the artifact stores it: torch layout (Linear weight [out, in]), int × scale."""
    from safetensors.numpy import save_file
    w = weights_of(model)
    scales = {i.name: nh.to_array(i) for i in model.graph.initializer if i.name.endswith("scale")}
    conv = (w["conv.weight_q"] * scales["conv.scale"][:, None, None, None]).astype(np.float32)
    fc = (w["fc.weight_q"] * scales["fc.scale"][None, :]).astype(np.float32).T.copy()
    save_file({"conv.weight": conv, "fc.weight": fc}, str(run / "model.safetensors"))
    seal_run(run)


def seal_run(run: Path) -> None:
    """Complete an artifact-like directory as ``sgsc compress`` does: every listed file present, and the
    manifest's ``files`` table holding their SHA-256s (placeholders for the files the runtime checks never
    read)."""
    import hashlib

    from safetensors.numpy import save_file
    if not (run / "quant.safetensors").is_file():
        save_file({"conv.scale": np.ones(1, np.float32)}, str(run / "quant.safetensors"))
    if not (run / "preservation.npz").is_file():
        np.savez(run / "preservation.npz", indices=np.zeros(0, np.int64))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"] = {name: hashlib.sha256((run / name).read_bytes()).hexdigest()
                         for name in ("model.safetensors", "quant.safetensors", "preservation.npz",
                                      "eval.npz")}
    (run / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def tiny_model() -> onnx.ModelProto:
    return make_model()


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    return make_data()


@pytest.fixture
def run_dir(tmp_path: Path, tiny_model: onnx.ModelProto, data: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """``(run directory, stamped model path)`` of the good tiny model."""
    run, path = write_run(tmp_path, tiny_model, data)
    save_artifact_weights(run, tiny_model)
    return run, path
