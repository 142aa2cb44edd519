"""Pass (``ort-int8``): 8-bit activation QDQ, calibrated on the artifact's preservation set, and int32 biases.

Layout, chosen so that onnxruntime's CPU QDQ fusions fire (Conv → QLinearConv, Gemm → QGemm, MatMul →
QLinearMatMul; ``converters.passes.kernels`` records which one each layer is laid out for): a ``QuantizeLinear
→ DequantizeLinear`` pair (uint8, per tensor, min/max range) on the graph input and on every float activation
that a node consumes; the logits stay float. Tensors that only feed a Relu take the Relu's range (zero point
0), and Relu / MaxPool / Reshape / Flatten / Transpose outputs reuse their input's parameters, so onnxruntime
drops those QDQ pairs and the Relu instead of requantising. A bias of a Conv or Gemm becomes int32 with scale
``s_x · s_w[c]`` (the form QLinearConv / QGemm take). Tensors with a non-finite calibration range (an
attention mask's -inf) stay float, and so do values computed from initializers alone (weights, not
activations). A GRU/LSTM node has no integer kernel: it reads its dequantised INT8 weights in float, and its
input may get a QDQ pair like any activation (which only rounds it, so the choice keeps it only when the gate
holds).

Precondition: ``weights_to_int8`` ran (weights are INT8 → DequantizeLinear); ``ctx.calibration`` holds the
preservation inputs (float, or int64 token ids for a language model, whose ids are not activations).
Postcondition: every QuantizeLinear feeds only DequantizeLinear nodes with its own scale and zero point, and
the graph outputs are still float values computed as before.

Which tensors get a pair is measured, not assumed: ``converters.passes.qdq_select`` keeps in float the
activations whose rounding would fail the gate on held data (weight-only INT8 there), and records the choice.
Calibration and that measurement run in onnxruntime (``converters.passes._ort``), one thread, optimisations
off for the ranges, so the ranges, the choice and the file are reproducible.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from converters.passes._base import Pass, first_consumer
from converters.passes._context import ExportContext, GraphEditor
from converters.passes._ort import model_input, run_graph
from converters.passes.qdq_select import QDQTargets, SelectionData, choose

__all__ = ["ActivationQDQ", "activation_qdq", "calibrate"]

_SAME_PARAMS = {"Relu", "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
_WITH_BIAS = {"Conv", "Gemm"}


def calibrate(proto: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, tuple[float, float]]:
    """min / max of each tensor in ``names`` over the inputs ``x``, running the float graph in onnxruntime."""
    ranges = {n: (np.inf, -np.inf) for n in names}
    for outs in run_graph(proto, x, names):
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
        base = ir.serde.serialize_model(ctx.model)
        names, params = _plan(ctx, base)
        weights = [(layer.name, layer.value.name, layer.scale) for layer in ctx.layers]

        def build(enabled: frozenset[str]) -> onnx.ModelProto:
            model = ir.serde.deserialize_model(base)
            _apply(model, weights, names, params, enabled)
            return ir.serde.serialize_model(model)

        data = ctx.selection
        if data is None:  # no held split with labels: agreement with the weight-only file on the calibration
            data = SelectionData(model_input(ctx.calibration), "preservation")
        choice = choose(names, build, data, ctx.qdq_targets or QDQTargets())
        _apply(ctx.model, weights, names, params, choice.enabled)
        ctx.activation_qdq = choice.record()

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


def _from_constants(graph: ir.Graph) -> set[int]:
    """The values computed from initializers alone (a dequantised weight's Split into q, k, v, or the Concat
    of a GRU's two directions): weights, not activations."""
    const: set[int] = set()
    for node in graph:  # in topological order
        if all(v is None or v.const_value is not None or id(v) in const for v in node.inputs):
            const.update(id(o) for o in node.outputs)
    return const


def _plan(ctx: ExportContext,
          proto: onnx.ModelProto) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The candidate activations (graph order) and each one's uint8 scale and zero point, calibrated once
    on the float graph, whichever subset is then quantised."""
    graph = ctx.model.graph
    dq_outputs = {id(n.outputs[0]) for n in graph if n.op_type == "DequantizeLinear"}
    outputs = {id(v) for v in graph.outputs}
    weights = _from_constants(graph)

    def is_activation(v: ir.Value) -> bool:
        return (
            v.const_value is None
            and id(v) not in dq_outputs
            and id(v) not in weights
            and id(v) not in outputs
            and bool(v.uses())
            and (v.type is None or v.type.dtype == ir.DataType.FLOAT)
        )

    targets = [v for v in graph.inputs if is_activation(v)]
    targets += [o for n in graph if n.op_type != "DequantizeLinear" for o in n.outputs if is_activation(o)]
    ranges = calibrate(proto, [v.name for v in targets], model_input(ctx.calibration))
    # an attention mask's -inf (or any non-finite value) has no uint8 range: that tensor stays float
    targets = [v for v in targets if np.isfinite(ranges[v.name]).all()]

    params: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for v in targets:
        producer = v.producer()
        src = producer.inputs[0] if producer is not None and producer.inputs else None
        inherit = producer is not None and producer.op_type in _SAME_PARAMS
        if inherit and src is not None and src.name in params:
            params[v.name] = params[src.name]
            continue
        lo, hi = ranges[v.name]
        users = [u.node for u in v.uses()]
        if users and all(u.op_type == "Relu" for u in users):
            lo = 0.0
        params[v.name] = _uint8_params(lo, hi)
    return [v.name for v in targets], params


def _apply(model: ir.Model, weights: list[tuple[str, str, np.ndarray]], names: list[str],
           params: dict[str, tuple[np.ndarray, np.ndarray]], enabled: frozenset[str]) -> None:
    """QDQ pairs on the ``enabled`` activations of ``names`` (constants named by their place in ``names``,
    so a name does not depend on the subset), then int32 biases where a layer's input is quantised."""
    graph = model.graph
    values = {v.name: v for v in graph.inputs}
    values.update({o.name: o for n in graph for o in n.outputs})
    editor = GraphEditor(graph, "qdq.")
    scale_of: dict[int, np.ndarray] = {}
    consts: dict[tuple[bytes, bytes], tuple[ir.Value, ir.Value]] = {}
    for i, name in enumerate(names):
        if name not in enabled:
            continue
        v = values[name]
        scale, zp = params[name]
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
    _bias_to_int32(graph, [(n, values[w], s) for n, w, s in weights if w in values], scale_of)


def _bias_to_int32(graph: ir.Graph, weights: list[tuple[str, ir.Value, np.ndarray]],
                   scale_of: dict[int, np.ndarray]) -> None:
    """A Conv / Gemm bias becomes int32 with scale ``s_x · s_w[c]`` where the layer's input ``x`` is
    quantised (``weights``: layer name, its dequantised weight, its per-channel scale)."""
    for layer_name, weight, w_scale in weights:
        for use in list(weight.uses()):
            node = use.node
            if node.op_type not in _WITH_BIAS or len(node.inputs) < 3 or node.inputs[2] is None:
                continue
            bias = node.inputs[2]
            x = node.inputs[0]
            if bias.const_value is None or x is None or id(x) not in scale_of:
                continue
            s = (np.float32(scale_of[id(x)]) * w_scale.astype(np.float32)).astype(np.float32)
            b = bias.const_value.numpy().astype(np.float64)
            q = np.clip(np.round(b / s.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
            editor = GraphEditor(graph, f"{layer_name}.")
            q_v = editor.constant(q, "bias_int")
            s_v = editor.constant(s, "bias_scale")
            dq = editor.op("DequantizeLinear", [q_v, s_v], node, axis=0)
            node.replace_input_with(2, dq)
            if not bias.uses():
                graph.initializers.pop(bias.name, None)
