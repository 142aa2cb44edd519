"""remove_unused and check_model, the two passes that end every profile."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from converters.passes import check_model, locate_weights, remove_unused, weights_to_dq
from sgsc_export.errors import ExportError
from tests.converters.passes.toy import assert_outputs_kept, toy_context


def _with_stray_initializer():
    ctx = toy_context()
    locate_weights(ctx)
    weights_to_dq(ctx)
    stray = ir.Value(name="stray", const_value=ir.tensor(np.ones(3, np.float32), name="stray"))
    ctx.model.graph.register_initializer(stray)
    return ctx


def test_remove_unused_drops_unread_initializers_and_keeps_the_outputs():
    ctx = _with_stray_initializer()
    assert_outputs_kept(ctx, remove_unused)  # exact: only unread constants go
    graph = ctx.model.graph
    assert "stray" not in graph.initializers
    assert all(v.uses() for v in graph.initializers.values())


def test_remove_unused_requires_every_located_weight_to_be_read():
    ctx = toy_context()
    locate_weights(ctx)
    graph = ctx.model.graph
    copy = ir.Value(name="copy", const_value=graph.initializers["conv.weight"].const_value)
    graph.register_initializer(copy)
    next(n for n in graph if n.op_type == "Conv").replace_input_with(1, copy)  # nothing reads conv.weight now
    with pytest.raises(
        ExportError,
        match=r"^pass remove_unused: requires every quantised layer's weight to be "
        r"read by a node; 'conv.weight' is not",
    ):
        remove_unused(ctx)


def test_check_model_passes_a_good_graph_unchanged():
    ctx = toy_context()
    locate_weights(ctx)
    assert_outputs_kept(ctx, weights_to_dq, check_model)


def test_check_model_refuses_a_graph_the_checker_rejects():
    ctx = toy_context()
    gemm = next(n for n in ctx.model.graph if n.op_type == "Gemm")
    gemm.attributes["transB"] = ir.AttrInt64("transB", 0)  # [N,64] x [3,64]: shapes no longer agree
    with pytest.raises(ExportError, match=r"the exported graph fails onnx.checker"):
        check_model(ctx)


def test_check_model_requires_declared_outputs():
    ctx = toy_context()
    ctx.model.graph.outputs.clear()
    with pytest.raises(ExportError, match=r"^pass check_model: requires a graph that declares its outputs"):
        check_model(ctx)
