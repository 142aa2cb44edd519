"""Every profile exports the char transformer; onnxruntime reproduces PyTorch; embeddings are
Gather(DQ(int))."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converters import export
from converters.passes.metadata import layer_records
from sgsc_export import CompressedModel


def _session(path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(
        str(path),
        so,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=["QDQSelectorActionTransformer"] if optimized is None else [],
    )


@pytest.mark.parametrize("profile,min_agreement", [("portable", 1.0), ("compact", 1.0), ("ort-int8", 0.97)])
def test_every_profile_runs_in_onnxruntime(lm_artifact, tmp_path, profile, min_agreement):
    art = CompressedModel.load(lm_artifact)
    path = tmp_path / f"{profile}.onnx"
    res = export(lm_artifact, path, profile)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["sgsc.task"] == "language_model" and meta["sgsc.context"] == "32"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert len(res.table.rows) == 27
    x, y, ref = art.eval["x_test"], art.eval["y_test"], art.eval["logits_test"]
    out = _session(path).run(None, {"input": x})[0]
    real = y != -1
    agreement = (out.argmax(-1) == ref.argmax(-1))[real].mean()
    assert agreement >= min_agreement
    if profile != "ort-int8":
        assert np.abs(out - ref).max() < 1e-4
        assert "sgsc.activation_qdq" not in meta
        return
    choice = json.loads(meta["sgsc.activation_qdq"])
    assert choice["split"] == "validation+preservation"
    assert choice["quantised"] + len(choice["kept_float"]) == choice["candidates"]
    for split, measured in choice["measured"].items():
        for level in ("disabled", "all"):
            if level in measured:  # absent only when no activation could be quantised
                assert measured[level]["flip_bound"] <= measured["bounds"]["max_flip_bound"], split
    layers = layer_records(meta["sgsc.layers"])
    assert {r["activation"] for r in layers} <= {"int8", "float"}
    assert next(r for r in layers if r["name"] == "tok")["activation"] == "float"  # a Gather has no input QDQ
    assert [r.activation for r in res.table.rows] == [r["activation"] for r in layers]


def test_portable_embedding_is_gathered_from_dequantized_integer_rows(lm_portable):
    g = onnx.load(str(lm_portable)).graph
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    gathers = [n for n in g.node if n.op_type == "Gather" and n.input[1] == "input"]
    assert len(gathers) == 1
    dq = producers[gathers[0].input[0]]
    assert dq.op_type == "DequantizeLinear"
    assert inits[dq.input[0]].data_type in (
        onnx.TensorProto.INT2,
        onnx.TensorProto.INT4,
        onnx.TensorProto.INT8,
    )
    assert not any(
        i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2 and i.dims[0] * i.dims[1] >= 64 * 27
        for i in g.initializer
    )  # no float weight matrix left


def test_matmul_weights_become_matmulnbits_exactly(lm_artifact, lm_portable, tmp_path):
    """With accuracy level 0, onnxruntime turns the per-channel DQ → MatMul of INT4/INT8 layers into
    MatMulNBits, and the result still equals PyTorch's."""
    path, opt = lm_portable, tmp_path / "opt.onnx"
    art = CompressedModel.load(lm_artifact)
    out = _session(path, optimized=opt).run(None, {"input": art.eval["x_test"][:64]})[0]
    ops = [n.op_type for n in onnx.load(str(opt)).graph.node]
    assert ops.count("MatMulNBits") >= 20
    assert np.abs(out - art.eval["logits_test"][:64]).max() < 1e-4
