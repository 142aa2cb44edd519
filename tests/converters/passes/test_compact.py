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
    assert blob.dtype == np.uint8 and blob.size == -(-learned // 8) + 2  # no padding but 2 bytes at the end
    widths = graph.initializers["pk.bits"].const_value.numpy()  # two 4-bit widths a byte
    assert widths.size == -(-sum(len(lw.bits) for lw in ctx.layers) // 2)
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


def test_requires_opset_13():
    ctx = toy_context(opset=12)
    locate_weights(ctx)
    with pytest.raises(ExportError, match=r"^pass weights_to_packed: requires opset 13 or later"):
        weights_to_packed(ctx)


@pytest.mark.parametrize("limit", [1, 40, 10**9])
def test_groups_of_layers_each_read_their_part_of_the_blob(limit, monkeypatch):
    """A reader unpacks at most GROUP_VALUES values: with groups of one layer, of some, or all, the weights
    are exactly the input graph's."""
    from converters.passes import compact

    monkeypatch.setattr(compact, "GROUP_VALUES", limit)
    assert_outputs_kept(toy_context(max_bits=6), locate_weights, weights_to_packed, matmul=False)


def test_every_width_and_value_round_trips():
    """Widths 0..8 with every value of each, in channels of one layer and across two (a layer starting in
    the middle of a byte): the integers the graph unpacks are the artifact's."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from converters.passes import compact
    from converters.passes._context import ExportContext, LayerWeight

    rng = np.random.default_rng(0)
    k = 256
    ints = []
    for b in range(9):
        lo, hi = (0, 0) if b == 0 else (-(1 << (b - 1)), (1 << (b - 1)) - 1)
        ints.append(rng.permutation(np.resize(np.arange(lo, hi + 1), k)))
    ints = np.stack(ints).astype(np.int8)  # [9, K]: channel b holds every b-bit value
    bits = np.arange(9, dtype=np.uint8)
    second = rng.integers(-4, 4, size=(5, 3)).astype(np.int8)  # 3 bits, 15 values: odd lengths
    inits = [numpy_helper.from_array(ints.astype(np.float32), "w1"),
             numpy_helper.from_array(second.astype(np.float32), "w2")]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1),
         helper.make_node("Identity", ["w2"], ["y2"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 9]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [5, 3])], inits)
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    g = model.graph
    layers = [LayerWeight("a", "Linear", g.initializers["w1"], ints, np.ones(9, np.float32), bits),
              LayerWeight("b", "Linear", g.initializers["w2"], second, np.ones(5, np.float32),
                          np.full(5, 3, np.uint8))]
    ctx = ExportContext(model=model, profile="compact", opset=21, manifest={}, manifest_sha256="", version="",
                        layers=layers)
    compact._pack(ctx)
    for layer in layers:  # the unpacked integers, as outputs
        g.outputs.append(layer.value.producer().inputs[0])
    sess = ort.InferenceSession(onnx.ModelProto.FromString(
        ir.serde.serialize_model(model).SerializeToString()).SerializeToString(),
        providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": np.zeros((1, k), np.float32)})
    assert np.array_equal(out[2], ints) and np.array_equal(out[3], second)


def test_the_models_large_int64_constants_are_stored_narrow_and_cast_back():
    """A GatherND index table of the model's own (int64, small values) is stored as int8 + Cast: same
    outputs, a smaller file."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from converters.passes import compact

    idx = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(64, 2)[::-1].copy()
    graph = helper.make_graph(
        [helper.make_node("GatherND", ["x", "idx"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])],
        [numpy_helper.from_array(idx.astype(np.int64), "idx")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model = ir.serde.deserialize_model(proto)
    compact._narrow_indices(model.graph)
    out = ir.serde.serialize_model(model)
    assert [t.data_type for t in out.graph.initializer] == [TensorProto.INT8]
    x = np.arange(64, dtype=np.float32).reshape(8, 8)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (proto, out)]
    run = [s.run(None, {"x": x})[0] for s in sessions]
    assert np.array_equal(run[0], run[1]) and len(out.SerializeToString()) < len(proto.SerializeToString())


def test_a_convs_default_strides_dilations_and_pads_are_not_stored():
    """The specs give these defaults in words (unit strides and dilations, zero pads), not in the schema, and
    infer a Conv's kernel_shape from W; the file leaves them out and computes exactly what the graph with them
    did; other values stay."""
    ctx = toy_context(max_bits=4)
    conv = next(n for n in ctx.model.graph if n.op_type == "Conv")
    conv.attributes["strides"] = ir.AttrInt64s("strides", [1, 1])
    conv.attributes["dilations"] = ir.AttrInt64s("dilations", [1, 1])
    conv.attributes["pads"] = ir.AttrInt64s("pads", [0, 0, 0, 0])
    conv.attributes["kernel_shape"] = ir.AttrInt64s("kernel_shape", [3, 3])
    assert_outputs_kept(ctx, locate_weights, weights_to_packed)
    conv = next(n for n in ctx.model.graph if n.op_type == "Conv")
    assert set(conv.attributes) == set()

    ctx = toy_context(max_bits=4)
    conv = next(n for n in ctx.model.graph if n.op_type == "Conv")
    conv.attributes["pads"] = ir.AttrInt64s("pads", [1, 1, 1, 1])  # not the default: kept
    locate_weights(ctx)
    weights_to_packed(ctx)
    conv = next(n for n in ctx.model.graph if n.op_type == "Conv")
    assert list(conv.attributes["pads"].value) == [1, 1, 1, 1]


def test_float_tensors_float16_holds_exactly_share_one_half_blob():
    """Float initializers whose values float16 holds exactly (the artifact rounds them so) are stored once in
    ``pk.half`` and read back by Cast → Split (→ Reshape): the same outputs, fewer bytes; a tensor float16
    does not hold exactly, or a small one, stays float32 as it was."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from converters.passes import compact

    rng = np.random.default_rng(0)
    bias = rng.normal(size=32).astype(np.float16).astype(np.float32)
    table = rng.normal(size=(2, 3, 16)).astype(np.float16).astype(np.float32)
    exact32 = rng.normal(size=32).astype(np.float32)  # not float16-exact
    small = np.array([[0.5], [0.25]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["a"]), helper.make_node("Mul", ["a", "exact32"], ["b"]),
         helper.make_node("Mul", ["b", "small"], ["c"]), helper.make_node("Add", ["t", "table"], ["d"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3, 16])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 32]),
         helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 3, 16])],
        [numpy_helper.from_array(v, n) for v, n in
         ((bias, "bias"), (exact32, "exact32"), (small, "small"), (table, "table"))])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model = ir.serde.deserialize_model(type(proto).FromString(proto.SerializeToString()))  # renames reach it
    compact._finish(model.graph, 21)  # the half blob, then the short names
    out = ir.serde.serialize_model(model)
    inits = {t.name: t for t in out.graph.initializer}
    assert inits["pk.half"].data_type == TensorProto.FLOAT16 and inits["pk.half"].dims == [32 + 96]
    floats = sorted(list(t.dims) for t in out.graph.initializer if t.data_type == TensorProto.FLOAT)
    assert floats == [[2, 1], [32]]  # small, exact32: as they were
    feeds = {"x": rng.normal(size=(2, 32)).astype(np.float32),
             "t": rng.normal(size=(2, 3, 16)).astype(np.float32)}
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (proto, out)]
    run = [s.run(None, feeds) for s in sessions]
    assert all(np.array_equal(a, b) for a, b in zip(*run))
    assert len(out.SerializeToString()) < len(proto.SerializeToString())


def test_attributes_that_change_nothing_here_are_not_stored():
    """A Reshape's allowzero = 1 with a constant shape without 0, an AveragePool's count_include_pad = 1
    without padding: the file leaves them out and computes the same; where they matter they stay."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from converters.passes import compact

    def model(shape, pads):
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], allowzero=1),
                 helper.make_node("AveragePool", ["r"], ["y"], kernel_shape=[2, 2], count_include_pad=1,
                                  pads=pads)]
        out = [2, 3, 1 + pads[0] + pads[2], 1 + pads[1] + pads[3]]
        x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12])
        y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, out)
        graph = helper.make_graph(nodes, "g", [x_info], [y_info],
                                  [numpy_helper.from_array(np.array(shape, np.int64), "shape")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])

    x = np.random.default_rng(0).normal(size=(2, 12)).astype(np.float32)
    for pads, kept in (([0, 0, 0, 0], set()), ([1, 1, 1, 1], {"count_include_pad"})):
        proto = model([2, 3, 2, 2], pads)
        m = ir.serde.deserialize_model(type(proto).FromString(proto.SerializeToString()))
        compact._finish(m.graph, 21)
        out = ir.serde.serialize_model(m)
        reshape, pool = out.graph.node
        assert not reshape.attribute and {a.name for a in pool.attribute} - {"kernel_shape", "pads"} == kept
        runs = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0] for p in (proto, out)]
        assert np.array_equal(*runs)
