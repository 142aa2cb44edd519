"""A toy float graph and the ExportContext the passes take, built with ``onnx.helper`` (no training run).

``conv``: Conv(x [N,2,6,6], W [4,2,3,3], b) → Relu → Flatten → ``fc``: Gemm(·, W [3,64], b, transB=1) → y
[N,3], or, with ``matmul=True``, ``mm``: MatMul(x [N,5,4], W [4,3]) + b → y [N,5,3] (a weight stored ``[in,
out]``, found by value). Each weight is exactly ``ints × scale`` with per-channel widths of at most
``max_bits`` bits, as an artifact's is, so ``locate_weights`` accepts it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from converters.passes import ExportContext
from converters.passes.qdq_select import QDQTargets

EVERY_ACTIVATION = QDQTargets(min_agreement=0.0, max_accuracy_drop=100.0, max_perplexity_ratio=1e9)

X_SHAPE = {False: ["N", 2, 6, 6], True: ["N", 5, 4]}


def _layer(rng: np.random.Generator, name: str, kind: str, shape: tuple[int, ...], max_bits: int) -> dict:
    c = shape[0]
    bits = rng.integers(1, max_bits + 1, c).astype(np.uint8)
    half = (1 << (bits.astype(np.int64) - 1)).reshape((-1,) + (1,) * (len(shape) - 1))
    ints = rng.integers(-half, half, size=shape).astype(np.int8)
    scale = np.exp2(rng.integers(-6, -2, c)).astype(np.float32)
    weight = (ints.astype(np.float32) * scale.reshape(half.shape)).astype(np.float32)
    return {"name": name, "kind": kind, "ints": ints, "scale": scale, "bits": bits, "weight": weight}


def toy_model(*, max_bits: int = 4, matmul: bool = False, opset: int = 21, seed: int = 0
              ) -> tuple[onnx.ModelProto, list[dict]]:
    """The float graph and its layers (name, kind, ints, scale, bits, weight)."""
    rng = np.random.default_rng(seed)
    if matmul:
        mm = _layer(rng, "mm", "Linear", (3, 4), max_bits)  # torch's [out, in]; the graph stores [in, out]
        inits = [numpy_helper.from_array(mm["weight"].T.copy(), "mm_w_t"),
                 numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "mm.bias")]
        nodes = [helper.make_node("MatMul", ["x", "mm_w_t"], ["h"]),
                 helper.make_node("Add", ["h", "mm.bias"], ["y"])]
        layers, y_shape = [mm], ["N", 5, 3]
    else:
        conv = _layer(rng, "conv", "Conv2d", (4, 2, 3, 3), max_bits)
        fc = _layer(rng, "fc", "Linear", (3, 64), max_bits)
        inits = [numpy_helper.from_array(conv["weight"], "conv.weight"),
                 numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "conv.bias"),
                 numpy_helper.from_array(fc["weight"], "fc.weight"),
                 numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "fc.bias")]
        nodes = [helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"]),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("Flatten", ["r"], ["f"], axis=1),
                 helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1)]
        layers, y_shape = [conv, fc], ["N", 3]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X_SHAPE[matmul])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model, layers


def toy_context(
    profile: str = "portable", *, max_bits: int = 4, matmul: bool = False, opset: int = 21, seed: int = 0
) -> ExportContext:
    """An ExportContext over the toy graph, as ``converters.export`` makes it before the first pass; its
    ``qdq_targets`` let ort-int8 quantise every activation (64 unlabeled calibration samples are too few for
    the gate's bounds: tests/converters/passes/test_qdq_select.py tests the choice)."""
    proto, layers = toy_model(max_bits=max_bits, matmul=matmul, opset=opset, seed=seed)
    manifest = {
        "layers": [
            {
                "name": lw["name"],
                "kind": lw["kind"],
                "weight_shape": list(lw["ints"].shape),
                "bits": lw["bits"].tolist(),
            }
            for lw in layers
        ],
        "model": {"task": "classification"},
        "preservation": {"sha256": "0" * 64},
    }
    quant = {}
    for lw in layers:
        quant |= {
            f"{lw['name']}.weight_int": lw["ints"],
            f"{lw['name']}.scale": lw["scale"],
            f"{lw['name']}.bits": lw["bits"],
        }
    return ExportContext(
        model=ir.serde.deserialize_model(proto),
        profile=profile,
        opset=opset,
        manifest=manifest,
        manifest_sha256="0" * 64,
        version="test",
        quant=quant,
        kinds={lw["name"]: lw["kind"] for lw in layers},
        calibration=inputs(matmul, 64, seed=1),
        qdq_targets=EVERY_ACTIVATION,
    )


def inputs(matmul: bool = False, n: int = 8, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=[n] + X_SHAPE[matmul][1:]).astype(np.float32)


def proto(ctx_or_model: ExportContext | ir.Model | onnx.ModelProto) -> onnx.ModelProto:
    model = ctx_or_model.model if isinstance(ctx_or_model, ExportContext) else ctx_or_model
    return model if isinstance(model, onnx.ModelProto) else ir.serde.serialize_model(model)


def full_check(ctx: ExportContext) -> None:
    onnx.checker.check_model(proto(ctx), full_check=True)


def run(model: ExportContext | ir.Model | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The graph's output in onnxruntime, optimisations off (what the graph says, not what a fusion makes)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(proto(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def assert_outputs_kept(ctx: ExportContext, *steps, matmul: bool = False, atol: float = 0.0) -> None:
    """Run ``steps`` on ``ctx``; the result passes the full checker and computes what the input graph did:
    exactly
    (``atol=0``, the default) or within ``atol`` (absolute, on the toy's outputs of magnitude ~1–5)."""
    x = inputs(matmul)
    ref = run(ctx, x)
    for step in steps:
        step(ctx)
    full_check(ctx)
    out = run(ctx, x)
    if atol:
        np.testing.assert_allclose(out, ref, rtol=0, atol=atol)
    else:
        np.testing.assert_array_equal(out, ref)
