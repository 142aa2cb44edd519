"""record_kernels: the integer kernel each ort-int8 layer is laid out for, read from the graph alone.

The rules in ``converters.passes.kernels`` are replayed here against onnxruntime on toy QDQ graphs, one per
case the rules name: ``layout_kernel`` must say what ``runtime_checks.fusion`` measures in the optimised
graph.
"""

from __future__ import annotations

import itertools
import os
import tempfile

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.passes import (
    LayerWeight,
    activation_qdq,
    locate_weights,
    record_kernels,
    weights_to_dq,
    weights_to_int8,
)
from converters.passes.kernels import layout_kernel
from runtime_checks.fusion import classify_layers
from runtime_checks.graph import find_quant_layers
from sgsc_export.errors import ExportError
from tests.converters.passes.toy import assert_outputs_kept, proto, toy_context


def _laid_out(matmul: bool = False):
    ctx = toy_context("ort-int8", matmul=matmul)
    for step in (locate_weights, weights_to_int8, activation_qdq):
        step(ctx)
    return ctx


@pytest.mark.parametrize(("matmul", "expected"), [(False, {"conv": "QLinearConv", "fc": "QGemm"}),
                                                  (True, {"mm": "QLinearMatMul"})])
def test_records_the_kernel_of_each_layer_and_changes_no_byte(matmul, expected):
    ctx = _laid_out(matmul)
    before = proto(ctx).SerializeToString()
    assert_outputs_kept(ctx, record_kernels, matmul=matmul)  # exact: it only reads the graph
    assert proto(ctx).SerializeToString() == before
    assert ctx.fused == expected
    assert {lw.name: lw.fused for lw in ctx.layers} == expected


def test_requires_int8_weights_and_runs_once():
    ctx = toy_context()
    locate_weights(ctx)
    weights_to_dq(ctx)
    with pytest.raises(ExportError, match=r"^pass record_kernels: requires every weight to be INT8 → "
                                          r"DequantizeLinear with a zero point"):
        record_kernels(ctx)
    ctx = _laid_out()
    record_kernels(ctx)
    with pytest.raises(ExportError, match=r"^pass record_kernels: requires no kernels recorded yet"):
        record_kernels(ctx)


# -- the rules against onnxruntime
# -------------------------------------------------------------------------------

def _c(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _qdq_graph(op: str, out_q: bool, relu: bool, *, trans_b: int = 1, per_tensor: bool = False,
               act_int8: bool = False, bias: str = "int32", mm3d: bool = False, input_qdq: bool = True,
               alpha: float = 1.0, branch: bool = False, relu_zp: int = 0, w_zero_point: bool = True,
               graph_output: bool = False) -> onnx.ModelProto:
    """``x → QDQ → op(·, DQ(W int8)) [→ Relu] [→ QDQ] → y``, with one deviation from the ort-int8 layout."""
    rng = np.random.default_rng(0)
    act = np.int8 if act_int8 else np.uint8
    x_shape, w_shape, axis, y_shape = {
        "Conv": ([1, 3, 8, 8], (4, 3, 3, 3), 0, [1, 4, 6, 6]),
        "Gemm": ([2, 6], (4, 6) if trans_b else (6, 4), 0 if trans_b else 1, [2, 4]),
        "MatMul": ([2, 5, 6] if mm3d else [2, 6], (6, 4), 1, [2, 5, 4] if mm3d else [2, 4])}[op]
    scale = np.float32(0.02) if per_tensor else np.full(4, 0.02, np.float32)
    inits = [_c("xs", np.float32(0.05)), _c("xz", act(0 if act_int8 else 128)),
             _c("W", rng.integers(-8, 8, w_shape).astype(np.int8)), _c("ws", scale),
             _c("wz", np.zeros_like(scale, dtype=np.int8))]
    w_inputs = ["W", "ws", "wz"] if w_zero_point else ["W", "ws"]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", w_inputs, ["wd"], **({} if per_tensor else {"axis": axis}))]
    inputs = ["xd" if input_qdq else "x", "wd"]
    if op != "MatMul" and bias == "int32":
        inits += [_c("b", np.arange(4, dtype=np.int32)), _c("bs", np.full(4, 0.001, np.float32))]
        nodes.append(helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], axis=0))
        inputs.append("bd")
    elif op != "MatMul" and bias == "float":
        inits.append(_c("bf", np.ones(4, np.float32)))
        inputs.append("bf")
    attrs = {"transB": trans_b, **({"alpha": alpha} if alpha != 1.0 else {})} if op == "Gemm" else {}
    last = "y" if not (graph_output and not relu and not out_q) else "final"
    nodes.append(helper.make_node(op, inputs, [last], **attrs))
    outputs = [helper.make_tensor_value_info("final", TensorProto.FLOAT, y_shape)]
    if branch:
        nodes.append(helper.make_node("Identity", [last], ["side"]))
        outputs.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, y_shape))
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["r"]))
        last = "r"
    if out_q:
        inits += [_c("ys", np.float32(0.1)), _c("yz", act(relu_zp))]
        nodes += [helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["yd"])]
        last = "yd"
    if last != "final":
        nodes.append(helper.make_node("Identity", [last], ["final"]))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def _static(model: onnx.ModelProto) -> str:
    ir_model = ir.serde.deserialize_model(model)
    dq = next(n for n in ir_model.graph if n.op_type == "DequantizeLinear" and n.inputs[0].name == "W")
    layer = LayerWeight(name="w", kind="", value=dq.outputs[0], ints=np.zeros((4, 1), np.int8),
                        scale=np.ones(4, np.float32), bits=np.full(4, 8, np.uint8))
    return layout_kernel(ir_model.graph, layer)


def _measured(model: onnx.ModelProto) -> str:
    """What onnxruntime's CPU provider runs the weight as at ORT_ENABLE_EXTENDED (the QDQ fusions' level)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath)
    (fusion,) = classify_layers(find_quant_layers(model), optimized)
    return fusion.kernel if fusion.integer else "float"


_VARIANTS = [{}, {"per_tensor": True}, {"act_int8": True}, {"input_qdq": False}, {"branch": True},
             {"relu_zp": 10}, {"w_zero_point": False}, {"graph_output": True}]
_BY_OP = {"Conv": [{"bias": "none"}, {"bias": "float"}],
          "Gemm": [{"trans_b": 0}, {"bias": "none"}, {"bias": "float"}, {"alpha": 0.5}],
          "MatMul": [{"mm3d": True}, {"input_qdq": False, "per_tensor": True},
                     {"input_qdq": False, "mm3d": True}]}
CASES = [
    (op, out_q, relu, v)
    for op in ("Conv", "Gemm", "MatMul")
    for out_q, relu in itertools.product((True, False), (False, True))
    for v in _VARIANTS + _BY_OP[op]
    if not (v.get("relu_zp") and not (out_q and relu)) and not (v.get("graph_output") and (out_q or relu))
]


@pytest.mark.parametrize(
    ("op", "out_q", "relu", "variant"),
    CASES,
    ids=[
        f"{op}-{'q' if q else 'float'}{'-relu' if r else ''}-{'-'.join(map(str, v.items()))}"
        for op, q, r, v in CASES
    ],
)
def test_the_static_rules_say_what_onnxruntime_fuses(op, out_q, relu, variant):
    model = _qdq_graph(op, out_q, relu, **variant)
    onnx.checker.check_model(model, full_check=True)
    assert _static(model) == _measured(model)
