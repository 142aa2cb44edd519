"""GRU, LSTM and a ViT-like model with ``nn.MultiheadAttention`` (issue 16, item 3): compressed at toy size,
every weight quantised, exported in every profile to standard ONNX with integer weights feeding
DequantizeLinear, and run by onnxruntime and the ONNX reference to PyTorch's logits; the same seed gives the
same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from converters import export
from converters.passes.locate import gate_rows
from sgsc_export import CompressConfig, compress
from tests.converters import recurrent_models
from tests.converters.sessions import safe_session

PROFILES = ("portable", "compact", "ort-int8")
MODEL_FILE = Path(recurrent_models.__file__)
# model → (recurrent op, the quantised tensors of its GRU/LSTM or attention, with their kinds)
CASES = {
    "gru": ("GRU", {"rnn.weight_ih_l0": "GRU", "rnn.weight_hh_l0": "GRU"}),
    "gru_bi2": ("GRU", {f"rnn.weight_{t}_l{k}{s}": "GRU" for k in (0, 1) for s in ("", "_reverse")
                        for t in ("ih", "hh")}),
    "lstm2": ("LSTM", {f"rnn.weight_{t}_l{k}": "LSTM" for k in (0, 1) for t in ("ih", "hh")}),
    "lstm_bi": ("LSTM", {f"rnn.weight_{t}_l0{s}": "LSTM" for s in ("", "_reverse") for t in ("ih", "hh")}),
    "vit": (None, {f"blocks.{i}.attn.in_proj_weight": "MultiheadAttention" for i in (0, 1)}),
}
# a few float epochs and a mild γ: the recurrent tensors keep live rows, so parity says something
CONFIG = CompressConfig(steps=40, finetune_steps=5, float_epochs=4, lr=0.01, gamma=0.05, init_bits=4,
                        restore_every=20, prune_every=20, checkpoint_every=100, seed=0, max_drop=100)


def _compress(name: str, out: Path, data) -> object:
    spec = {"factory": f"{MODEL_FILE}:{name}", "kwargs": {},
            "source_sha256": hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compress(getattr(recurrent_models, name)(), data, CONFIG, out_dir=out, model_spec=spec)
    finally:
        torch.set_num_threads(threads)


def _float_weights_in_graph(model: onnx.ModelProto, allowed: list[np.ndarray]) -> set[str]:
    """Float initializers of two or more dimensions that are not a GRU/LSTM bias (input B) or one of the
    ``allowed`` arrays (a user's parameter of positions, by value: compact renames every initializer): a
    weight left float."""
    biases = {n.input[3] for n in model.graph.node if n.op_type in ("GRU", "LSTM") and len(n.input) > 3}
    return {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
            and len(t.dims) > 1 and t.name not in biases
            and not any(np.array_equal(onnx.numpy_helper.to_array(t).reshape(a.shape), a) for a in allowed
                        if a.size == int(np.prod(t.dims)))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compress_export_every_profile_and_parity(name, digits_split, tmp_path):
    op, tensors = CASES[name]
    out = tmp_path / name
    cm = _compress(name, out, digits_split)
    m = cm.manifest
    layers = {layer["name"]: layer for layer in m["layers"]}
    assert {n: layers[n]["kind"] for n in tensors} == tensors
    for n in tensors:  # rows are channels, never removed; zero-bit rows are masked
        layer = layers[n]
        assert layer["channels_kept"] == layer["channels_before"] == layer["weight_shape"][0]
        assert layer["channels_removed"] == 0 and layer["channels_masked"] == layer["bits"].count(0)
        assert list(cm.quant[f"{n}.weight_int"].shape) == layer["weight_shape"]
    assert [e["name"] for e in m["float_weights"]] == (["pos"] if name == "vit" else [])
    assert sum(max(layers[n]["bits"]) > 0 for n in tensors) > len(tensors) // 2  # mostly live tensors
    params = dict(cm.to_module(model=f"{MODEL_FILE}:{name}").named_parameters())
    allowed = [params[e["name"]].detach().numpy() for e in m["float_weights"]]
    x, ref = cm.eval["x_test"][:64], cm.eval["logits_test"][:64]
    tol = 1e-4 * float(np.abs(ref).max())
    for profile in PROFILES:
        result = export(out, tmp_path / f"{name}-{profile}.onnx", profile, model=f"{MODEL_FILE}:{name}")
        model = onnx.load(str(result.path))
        onnx.checker.check_model(model, full_check=True)
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
        ops = {n.op_type for n in model.graph.node}
        assert op is None or op in ops
        assert _float_weights_in_graph(model, allowed) == set()  # every weight is stored as integers
        assert [r.name for r in result.table.rows] == list(layers)
        if profile == "ort-int8":
            assert {r.container for r in result.table.rows} == {"INT8"}
            assert all(result.fused[n] == "float" for n in tensors if op is not None)  # no integer GRU kernel
            got = safe_session(result.path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL).run(
                None, {"input": cm.eval["x_test"]})[0]
            assert (got.argmax(1) == cm.eval["logits_test"].argmax(1)).mean() >= 0.95
            continue
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            got = safe_session(result.path, level).run(None, {"input": x})[0]
            assert np.abs(got - ref).max() <= tol, (profile, level)
            assert np.array_equal(got.argmax(1), ref.argmax(1))
        got = ReferenceEvaluator(model).run(None, {"input": x[:8]})[0]
        assert np.abs(got - ref[:8]).max() <= tol, profile


def test_gates_and_directions_keep_their_rows_scales(digits_split, tmp_path):
    """In the file, each direction's W holds torch's rows in ONNX's gate order (LSTM i, o, f, c), each row's
    integers with that row's scale (the same weights)."""
    cm = _compress("lstm_bi", tmp_path / "a", digits_split)
    result = export(tmp_path / "a", tmp_path / "lstm.onnx", "ort-int8", model=f"{MODEL_FILE}:lstm_bi")
    model = onnx.load(str(result.path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    concat = {n.output[0]: n for n in model.graph.node if n.op_type == "Concat"}
    for index, tensor in ((1, "ih"), (2, "hh")):
        parts = concat[node.input[index]].input  # the two directions
        for part, suffix in zip(parts, ("", "_reverse")):
            name = f"rnn.weight_{tensor}_l0{suffix}"
            rows = gate_rows("LSTM", cm.quant[f"{name}.weight_int"].shape[0])
            ints, scale = inits[dq[part].input[0]], inits[dq[part].input[1]]
            assert dq[part].attribute[0].name == "axis" and dq[part].attribute[0].i == 1
            want_ints = cm.quant[f"{name}.weight_int"].numpy()[rows]
            want_scale = cm.quant[f"{name}.scale"].numpy()[rows]
            assert np.array_equal(ints[0], want_ints)
            live = want_ints.any(1)  # an all-zero row's scale is free (converters.passes.weights)
            assert np.array_equal(scale[live], want_scale[live])
            assert np.array_equal(ints[0] * scale[:, None], want_ints * want_scale[:, None])


def test_same_seed_same_bytes(digits_split, tmp_path):
    files = []
    for run in ("a", "b"):
        _compress("gru_bi2", tmp_path / run, digits_split)
        for profile in ("compact", "ort-int8"):
            path = tmp_path / f"{run}-{profile}.onnx"
            export(tmp_path / run, path, profile, model=f"{MODEL_FILE}:gru_bi2")
            files.append(path.read_bytes())
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert files[:2] == files[2:]
