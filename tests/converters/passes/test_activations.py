"""activation_qdq: calibrated uint8 QDQ pairs on the activations, int32 biases."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from converters.passes import activation_qdq, locate_weights, weights_to_dq, weights_to_int8
from sgsc_export.errors import ExportError
from tests.converters.passes.toy import assert_outputs_kept, toy_context


def _int8_context(matmul: bool = False):
    ctx = toy_context("ort-int8", matmul=matmul)
    locate_weights(ctx)
    weights_to_int8(ctx)
    return ctx


def test_pairs_on_activations_int32_biases_and_float_logits():
    ctx = _int8_context()
    activation_qdq(ctx)
    graph = ctx.model.graph
    ops = [n.op_type for n in graph]
    assert ops.count("QuantizeLinear") == 4  # input, Conv output (the Relu's range), Relu and Flatten outputs
    (q_in,) = [u.node for u in graph.inputs[0].uses()]
    assert q_in.op_type == "QuantizeLinear" and q_in.inputs[2].const_value.dtype == ir.DataType.UINT8
    for node in graph:
        if node.op_type in ("Conv", "Gemm"):
            bias = node.inputs[2].producer()
            assert (
                bias.op_type == "DequantizeLinear" and bias.inputs[0].const_value.dtype == ir.DataType.INT32
            )
    assert graph.outputs[0].producer().op_type == "Gemm"  # the logits stay float
    conv = next(n for n in graph if n.op_type == "Conv")
    (q_conv,) = [u.node for u in conv.outputs[0].uses()]
    assert q_conv.op_type == "QuantizeLinear" and int(q_conv.inputs[2].const_value.numpy()) == 0  # Relu range


@pytest.mark.parametrize("matmul", [False, True])
def test_result_checks_and_stays_close_to_the_float_graph(matmul):
    """Tolerance 0.1 absolute on outputs up to ~5: three 8-bit requantisations of min/max ranges (a step is
    range/255) accumulate through two layers; measured 0.03 (conv, Gemm) and 0.02 (MatMul)."""
    ctx = toy_context("ort-int8", matmul=matmul)
    assert_outputs_kept(ctx, locate_weights, weights_to_int8, activation_qdq, matmul=matmul, atol=0.1)


def test_requires_int8_weights():
    ctx = toy_context("ort-int8")
    locate_weights(ctx)
    weights_to_dq(ctx)  # INT4, no zero point
    with pytest.raises(
        ExportError,
        match=r"^pass activation_qdq: requires every weight to be INT8 → "
        r"DequantizeLinear with a zero point .*; layer 'conv' is not",
    ):
        activation_qdq(ctx)


def test_requires_calibration_data_and_runs_once():
    ctx = _int8_context()
    ctx.calibration = np.zeros((0, 2, 6, 6), np.float32)
    with pytest.raises(ExportError, match=r"^pass activation_qdq: requires calibration data"):
        activation_qdq(ctx)
    ctx = _int8_context()
    activation_qdq(ctx)
    with pytest.raises(ExportError, match=r"^pass activation_qdq: requires a graph without activation QDQ"):
        activation_qdq(ctx)
