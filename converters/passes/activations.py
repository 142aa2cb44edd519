"""Pass (``ort-int8``): 8-bit activation QDQ, calibrated on the artifact's preservation set, and int32 biases.

Layout, chosen so that onnxruntime's CPU QDQ fusions fire (Conv → QLinearConv, Gemm → QGemm, MatMul →
QLinearMatMul; ``converters.passes.kernels`` records which one each layer is laid out for): a ``QuantizeLinear
→ DequantizeLinear`` pair (uint8, per tensor, min/max range) on the graph input and on every float activation
that a node consumes; the logits stay float. Tensors that only feed a Relu take the Relu's range (zero point
0), and Relu / MaxPool / Reshape / Flatten / Transpose outputs reuse their input's parameters, so onnxruntime
drops those QDQ pairs and the Relu instead of requantising. A bias of a Conv or Gemm becomes int32 with scale
``s_x · s_w[c]`` (the form QLinearConv / QGemm take). Tensors with a non-finite calibration range (an
attention mask's -inf) stay float.

Precondition: ``weights_to_int8`` ran (weights are INT8 → DequantizeLinear); ``ctx.calibration`` holds the
preservation inputs (float, or int64 token ids for a language model, whose ids are not activations).
Postcondition: every QuantizeLinear feeds only DequantizeLinear nodes with its own scale and zero point, and
the graph outputs are still float values computed as before.

The one use of onnxruntime in ``converters`` (the import-linter contract names this module as the only one
allowed to import it): calibration runs the float graph in onnxruntime — imported in :func:`calibrate`, not at
package import — with one thread and optimisations off, so the ranges, and the file, are reproducible. The
ranges decide the scales and so every byte of an ``ort-int8`` file: another engine (``onnx.reference``) would
compute the same graph with other float rounding, move some min/max by an ulp and change the files that users
and the tests have pinned.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from converters.passes._base import Pass, first_consumer
from converters.passes._context import ExportContext, GraphEditor
from sgsc_export.errors import ExportError

__all__ = ["ActivationQDQ", "activation_qdq", "calibrate"]

_SAME_PARAMS = {"Relu", "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
_WITH_BIAS = {"Conv", "Gemm"}


def calibrate(proto: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, tuple[float, float]]:
    """min / max of each tensor in ``names`` over the inputs ``x``, running the float graph in onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise ExportError("the ort-int8 profile calibrates in onnxruntime, which is not installed; "
                          "pip install onnxruntime") from exc
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ranges = {n: (np.inf, -np.inf) for n in names}
    for start in range(0, len(x), 256):
        outs = session.run(names, {session.get_inputs()[0].name: x[start : start + 256]})
        for n, o in zip(names, outs):
            lo, hi = ranges[n]
            ranges[n] = (min(lo, float(o.min())), max(hi, float(o.max())))
    return ranges


def _uint8_params(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
    zp = np.uint8(np.clip(np.round(-lo / float(scale)), 0, 255))
    return np.array(scale, dtype=np.float32), np.array(zp, dtype=np.uint8)


class ActivationQDQ(Pass):
    name = "activation_qdq"

    def requires(self, ctx: ExportContext) -> None:
        if ctx.calibration is None or len(ctx.calibration) == 0:
            raise self.refuse(
                "calibration data (ort-int8 calibrates on the preservation set): the artifact's "
                "eval.npz has no x_preservation; re-run `sgsc compress`"
            )
        self.require_int8_weights(ctx)
        if any(n.op_type == "QuantizeLinear" for n in ctx.model.graph):
            raise self.refuse("a graph without activation QDQ (it runs once); it has QuantizeLinear nodes")

    def call(self, ctx: ExportContext) -> None:
        _insert_qdq(ctx)

    def ensures(self, ctx: ExportContext) -> None:
        graph = ctx.model.graph
        for node in graph:
            if node.op_type != "QuantizeLinear":
                continue
            params = [_const_bytes(v) for v in node.inputs[1:]]
            for use in node.outputs[0].uses():
                pair = use.node
                if pair.op_type != "DequantizeLinear" or [_const_bytes(v) for v in pair.inputs[1:]] != params:
                    raise self.broken(
                        f"each QuantizeLinear feeds DequantizeLinear with its own scale and zero "
                        f"point; {node.outputs[0].name!r} feeds a {pair.op_type} that does not"
                    )
        for out in graph.outputs:
            producer = out.producer()
            if producer is not None and producer.op_type in ("QuantizeLinear", "DequantizeLinear"):
                raise self.broken(f"the graph outputs stay float as computed; {out.name!r} is requantised")


activation_qdq = ActivationQDQ()


def _const_bytes(value: ir.Value | None) -> bytes | None:
    return None if value is None or value.const_value is None else value.const_value.numpy().tobytes()


def _insert_qdq(ctx: ExportContext) -> None:
    graph = ctx.model.graph
    dq_outputs = {id(n.outputs[0]) for n in graph if n.op_type == "DequantizeLinear"}
    outputs = {id(v) for v in graph.outputs}

    def is_activation(v: ir.Value) -> bool:
        return (
            v.const_value is None
            and id(v) not in dq_outputs
            and id(v) not in outputs
            and bool(v.uses())
            and (v.type is None or v.type.dtype == ir.DataType.FLOAT)
        )

    targets = [v for v in graph.inputs if is_activation(v)]
    targets += [o for n in graph if n.op_type != "DequantizeLinear" for o in n.outputs if is_activation(o)]
    proto = ir.serde.serialize_model(ctx.model)
    calibration = ctx.calibration
    calibration = calibration.astype(np.int64 if np.issubdtype(calibration.dtype, np.integer) else np.float32)
    ranges = calibrate(proto, [v.name for v in targets], calibration)
    # an attention mask's -inf (or any non-finite value) has no uint8 range: that tensor stays float
    targets = [v for v in targets if np.isfinite(ranges[v.name]).all()]

    params: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for v in targets:
        producer = v.producer()
        src = producer.inputs[0] if producer is not None and producer.inputs else None
        if (
            producer is not None
            and producer.op_type in _SAME_PARAMS
            and src is not None
            and id(src) in params
        ):
            params[id(v)] = params[id(src)]
            continue
        lo, hi = ranges[v.name]
        users = [u.node for u in v.uses()]
        if users and all(u.op_type == "Relu" for u in users):
            lo = 0.0
        params[id(v)] = _uint8_params(lo, hi)

    editor = GraphEditor(graph, "qdq.")
    scale_of: dict[int, np.ndarray] = {}
    consts: dict[tuple[bytes, bytes], tuple[ir.Value, ir.Value]] = {}
    for i, v in enumerate(targets):
        scale, zp = params[id(v)]
        key = (scale.tobytes(), zp.tobytes())
        if key not in consts:
            consts[key] = (editor.constant(scale, f"s{i}"), editor.constant(zp, f"z{i}"))
        s_v, z_v = consts[key]
        users = list(v.uses())
        anchor = first_consumer(graph, v)
        q = editor.op("QuantizeLinear", [v, s_v, z_v], anchor)
        dq = editor.op("DequantizeLinear", [q, s_v, z_v], anchor)
        for use in users:
            use.node.replace_input_with(use.idx, dq)
        scale_of[id(dq)] = scale
    _bias_to_int32(ctx, scale_of)


def _bias_to_int32(ctx: ExportContext, scale_of: dict[int, np.ndarray]) -> None:
    graph = ctx.model.graph
    for layer in ctx.layers:
        for use in list(layer.value.uses()):
            node = use.node
            if node.op_type not in _WITH_BIAS or len(node.inputs) < 3 or node.inputs[2] is None:
                continue
            bias = node.inputs[2]
            x = node.inputs[0]
            if bias.const_value is None or x is None or id(x) not in scale_of:
                continue
            s = (np.float32(scale_of[id(x)]) * layer.scale.astype(np.float32)).astype(np.float32)
            b = bias.const_value.numpy().astype(np.float64)
            q = np.clip(np.round(b / s.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
            editor = GraphEditor(graph, f"{layer.name}.")
            q_v = editor.constant(q, "bias_int")
            s_v = editor.constant(s, "bias_scale")
            dq = editor.op("DequantizeLinear", [q_v, s_v], node, axis=0)
            node.replace_input_with(2, dq)
            if not bias.uses():
                graph.initializers.pop(bias.name, None)
