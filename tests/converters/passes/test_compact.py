"""weights_to_packed: exact per-channel widths in one uint8 blob, unpacked by standard ops."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from converters.passes import locate_weights, weights_to_packed
from sgsc_export.errors import ExportError
from tests.converters.passes.toy import assert_outputs_kept, full_check, toy_context


def test_every_weight_is_unpacked_from_one_blob():
    ctx = toy_context(max_bits=5)
    locate_weights(ctx)
    weights_to_packed(ctx)
    graph = ctx.model.graph
    shapes = {lw.ints.shape for lw in ctx.layers}
    floats = [n for n, v in graph.initializers.items()
              if v.const_value.dtype == ir.DataType.FLOAT and tuple(v.const_value.shape) in shapes]
    assert floats == []  # no weight is stored as float
    blob = graph.initializers["pk.blob"].const_value.numpy()
    learned = sum(int(lw.bits.sum()) * (lw.ints.size // len(lw.bits)) for lw in ctx.layers)
    assert (
        blob.dtype == np.uint8
        and blob.size
        <= sum(-(-int(lw.bits.sum()) * (lw.ints.size // len(lw.bits)) // 8) for lw in ctx.layers) + 1
    )
    assert blob.size * 8 >= learned
    for layer in ctx.layers:
        assert layer.container == "packed" and layer.value.producer().op_type == "DequantizeLinear"
    full_check(ctx)


@pytest.mark.parametrize("matmul", [False, True])
@pytest.mark.parametrize("max_bits", [1, 3, 8])
def test_computes_exactly_what_the_float_graph_did(matmul, max_bits):
    """Exact: the unpacked integers are the artifact's, so the float32 weights are the input graph's."""
    assert_outputs_kept(
        toy_context(matmul=matmul, max_bits=max_bits), locate_weights, weights_to_packed, matmul=matmul
    )


# its other precondition, located float initializers, is tested with the weights passes' (test_weights.py)


def test_requires_opset_18():
    ctx = toy_context(opset=17)
    locate_weights(ctx)
    with pytest.raises(ExportError, match=r"^pass weights_to_packed: requires opset 18 or later"):
        weights_to_packed(ctx)
