"""weights_to_dq / weights_to_int8: float weights become an integer container → DequantizeLinear."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from converters.passes import locate_weights, weights_to_dq, weights_to_int8, weights_to_packed
from sgsc_export.errors import ExportError
from tests.converters.passes.toy import assert_outputs_kept, full_check, toy_context


def _dq_input(layer) -> ir.Value:
    node = layer.value.producer()
    assert node.op_type == "DequantizeLinear"
    return node


@pytest.mark.parametrize(
    ("max_bits", "opset", "container"), [(2, 25, "INT2"), (4, 21, "INT4"), (8, 21, "INT8")]
)
def test_portable_picks_the_smallest_container(max_bits, opset, container):
    ctx = toy_context(max_bits=max_bits, opset=opset)
    locate_weights(ctx)
    weights_to_dq(ctx)
    for layer in ctx.layers:
        dq = _dq_input(layer)
        assert layer.container == container
        assert dq.inputs[0].const_value.dtype.name == container and len(dq.inputs) == 2  # no zero point
        assert layer.value.name not in ctx.model.graph.initializers  # the float weight is gone
    full_check(ctx)


def test_int8_keeps_an_explicit_zero_point():
    ctx = toy_context(max_bits=3)
    locate_weights(ctx)
    weights_to_int8(ctx)
    for layer in ctx.layers:
        dq = _dq_input(layer)
        assert layer.container == "INT8" and dq.inputs[0].const_value.dtype == ir.DataType.INT8
        assert not dq.inputs[2].const_value.numpy().any()
    full_check(ctx)


@pytest.mark.parametrize("step", [weights_to_dq, weights_to_int8], ids=lambda p: p.name)
@pytest.mark.parametrize("matmul", [False, True])
def test_computes_exactly_what_the_float_graph_did(step, matmul):
    """Exact: DequantizeLinear rebuilds ``ints × scale``, the very float32 weights of the input graph."""
    assert_outputs_kept(toy_context(matmul=matmul), locate_weights, step, matmul=matmul)


@pytest.mark.parametrize("step", [weights_to_dq, weights_to_int8, weights_to_packed], ids=lambda p: p.name)
def test_requires_located_float_initializers(step):
    with pytest.raises(ExportError, match=rf"^pass {step.name}: requires located weights"):
        step(toy_context())
    ctx = toy_context()
    locate_weights(ctx)
    weights_to_dq(ctx)
    with pytest.raises(
        ExportError,
        match=rf"^pass {step.name}: requires every located weight to be an "
        r"initializer read by a node; 'conv.weight' is not",
    ):
        step(ctx)


def test_int8_gives_an_all_zero_row_a_usable_scale():
    """A row of integers all 0 dequantises to 0 at any scale: ort-int8 stores the median of the others, so
    that an int32 bias at s_x · s_w[c] is not coarser than the bias (a drifted exponent, 2^7, was)."""
    from converters.passes.weights import free_zero_rows

    ints = np.array([[1, -2], [0, 0], [3, 0], [0, 1]], dtype=np.int8)
    scale = np.array([0.25, 128.0, 0.5, 0.125], dtype=np.float32)
    fixed = free_zero_rows(ints, scale, 0)
    assert fixed.tolist() == [0.25, 0.25, 0.5, 0.125]
    assert np.array_equal(ints * fixed[:, None], ints * scale[:, None])  # the same weight
    assert free_zero_rows(ints.T.copy(), scale, 1).tolist() == fixed.tolist()  # a MatMul weight [in, out]
    assert free_zero_rows(np.zeros((2, 3), np.int8), scale[:2], 0).tolist() == [1.0, 1.0]
    ctx = toy_context("ort-int8")
    locate_weights(ctx)
    ctx.layers[0].ints[1] = 0
    ctx.layers[0].scale[1] = 1e6
    weights_to_int8(ctx)
    assert ctx.layers[0].scale[1] < 1.0
