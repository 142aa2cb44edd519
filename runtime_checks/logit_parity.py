"""The logit-parity tolerance: how far an honest export's logits may be from its PyTorch reference.

An export of the ``portable`` or ``compact`` profile computes exactly the reference's function: the same
integer weights times the same power-of-two scales, in float32. Only the order of the float additions differs
(onnxruntime's kernels against PyTorch's), and a sum of ``K`` float32 products carries a rounding error of
about ``sqrt(K) · eps · Σ|w·x|`` (Higham's probabilistic bound; ``eps = 2^-23``). Rounding errors of
successive layers add up relative to the magnitudes flowing through them, so the tolerance of an *exact* file
is

    atol_exact = C · eps · max|ref| · Σ_l sqrt(K_l)          C = EXACT_C

with ``K_l`` the fan-in (contraction length) of every Conv / Gemm / MatMul node and ``max|ref|`` the largest
reference logit of the split (at least 1: the scale of the values the network computes). ``C`` covers
cancellation (``Σ|w·x| > |y|``) with margin; honest files measure 10²–10³ times below it (docs/REPORT.md).

An *activation-quantised* file (``ort-int8``: QuantizeLinear → DequantizeLinear on activations) adds rounding
to the activation steps, which the reference does not have. Its bound comes from the file's own steps,
propagated through its own graph on the same inputs: the *float twin* is the same graph with each activation's
QDQ pair removed (weights untouched), and by the triangle inequality an honest file satisfies

    max|y − ref| ≤ max|y − twin| + max|twin − ref|,      D_q = max|y − twin|

``twin − ref`` is float rounding (``atol_exact``) plus the rounding of the int32 biases (step ``s_x·s_w/2``,
which the reference does not have either). A bias step is below the effect of the same layer's input
activation step (``Σ_i w_i·e_i`` with ``|w_i| ≥ s_w``) by far, so it is covered by a fraction of ``D_q``:

    threshold = (1 + β) · D_q + atol_exact          β = QDQ_MARGIN (measured: the bias term is ~2 % of D_q)

Only true round trips are removed (the DequantizeLinear has the QuantizeLinear's own scale, zero point and
axis): a pair that rescales changes the function, stays in the twin and so counts against the file, never into
``D_q``. It catches any change of the weights, biases or graph whose effect on the logits exceeds about
``(2 + β) · D_q``; it cannot catch a smaller one, and a file whose activation steps were made coarse widens
its own bound (the accuracy and agreement checks see the damage that does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from runtime_checks.graph import COMPUTE_OPS, ModelInfo

__all__ = ["EPS_F32", "EXACT_C", "EXACT_PROFILES", "QDQ_MARGIN", "ToleranceBasis", "fan_ins", "float_twin",
           "logit_tolerance_basis"]

EPS_F32 = float(np.finfo(np.float32).eps)  # 2^-23
EXACT_C = 64.0
EXACT_PROFILES = ("portable", "compact")
QUANTISED_PROFILES = ("ort-int8",)
QDQ_MARGIN = 0.5


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Static shapes of initializers and of every tensor onnx's shape inference can type."""
    shapes: dict[str, list[int | None]] = {i.name: list(i.dims) for i in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference is a help, never required
        inferred = model
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes.setdefault(vi.name, [d.dim_value if d.HasField("dim_value") else None
                                        for d in vi.type.tensor_type.shape.dim])
    for node in model.graph.node:  # Constant nodes
        if (node.op_type == "Constant" and node.attribute
                and node.attribute[0].type == onnx.AttributeProto.TENSOR):
            shapes.setdefault(node.output[0], list(node.attribute[0].t.dims))
    return shapes


def fan_ins(model: onnx.ModelProto) -> list[int | None]:
    """The contraction length of every Conv / Gemm / MatMul node (``None`` where the shape is not static)."""
    shapes = _shapes(model)
    out: list[int | None] = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        dims = shapes.get(node.input[1])
        k: int | None = None
        if dims:
            if node.op_type == "Conv" and len(dims) >= 3:
                k = math.prod(d or 0 for d in dims[1:]) or None
            elif node.op_type == "Gemm" and len(dims) == 2:
                trans = any(a.name == "transB" and a.i for a in node.attribute)
                k = dims[1] if trans else dims[0]
            elif node.op_type == "MatMul":
                k = dims[0] if len(dims) == 1 else dims[-2]
        out.append(k or None)
    return out


@dataclass(frozen=True)
class ToleranceBasis:
    """What the derived tolerance of one file rests on (independent of the split)."""

    kind: str                  # "exact" | "activation_quantised"
    profile: str               # the file's sgsc.profile, "" when it has none
    sum_sqrt_fan_in: float     # Σ_l sqrt(K_l)
    n_layers: int
    note: str                  # how the kind was chosen

    def exact_atol(self, ref_max: float) -> float:
        """``C · eps · max(max|ref|, 1) · Σ sqrt(K)``."""
        return EXACT_C * EPS_F32 * max(ref_max, 1.0) * self.sum_sqrt_fan_in

    def threshold(self, ref_max: float, d_q: float | None = None) -> tuple[float, str]:
        """The threshold for one split and a sentence saying how it was derived; ``d_q`` (max|y − float twin|)
        is needed for an activation-quantised file."""
        atol = self.exact_atol(ref_max)
        exact = (f"{EXACT_C:g}·eps32·max(|ref|={ref_max:.3g},1)·Σsqrt(fan-in)={self.sum_sqrt_fan_in:.1f} "
                 f"over {self.n_layers} Conv/Gemm/MatMul = {atol:.3g}")
        if self.kind == "exact" or d_q is None:
            return atol, f"{self.note}; {exact}"
        value = (1.0 + QDQ_MARGIN) * d_q + atol
        return value, (f"{self.note}; (1+{QDQ_MARGIN:g})·D_q + atol, D_q = max|y − its float twin| "
                       f"= {d_q:.3g} (the activation steps' own effect), atol = {exact}")


def logit_tolerance_basis(info: ModelInfo) -> ToleranceBasis:
    """The tolerance kind of ``info``: its declared profile, checked against the graph (activation QDQ or
    not)."""
    ks = fan_ins(info.model)
    known = [k for k in ks if k]
    fallback = max(known, default=1024)  # a symbolic contraction (attention over T): the largest known fan-in
    total = float(sum(math.sqrt(k or fallback) for k in ks)) or 1.0
    profile = info.metadata.get("sgsc.profile", "")
    qdq = info.has_activation_qdq
    if profile in EXACT_PROFILES and not qdq:
        note = f"profile {profile}: exact weights, float rounding only"
    elif profile in QUANTISED_PROFILES and qdq:
        note = f"profile {profile}: activation QDQ"
    elif profile in EXACT_PROFILES + QUANTISED_PROFILES:
        note = (f"the file says profile {profile} but its graph {'has' if qdq else 'has no'} activation QDQ; "
                f"judged by the graph")
    else:
        note = ("no sgsc.profile metadata (made elsewhere?): " if not profile
                else f"unknown profile {profile!r}: ")
        note += "activation QDQ found" if qdq else "no activation QDQ, so the exact tolerance"
    return ToleranceBasis("activation_quantised" if qdq else "exact", profile, total, len(ks), note)


def _constant_names(model: onnx.ModelProto) -> set[str]:
    names = {i.name for i in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _constant_values(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    values = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if (node.op_type == "Constant" and node.attribute
                and node.attribute[0].type == onnx.AttributeProto.TENSOR):
            values[node.output[0]] = node.attribute[0].t
    return values


def _same_input(q: onnx.NodeProto, dq: onnx.NodeProto, i: int, consts: dict[str, onnx.TensorProto]) -> bool:
    """Input ``i`` (scale 1, zero point 2) of the QuantizeLinear and the DequantizeLinear is the same
    tensor."""
    a = q.input[i] if len(q.input) > i else ""
    b = dq.input[i] if len(dq.input) > i else ""
    if a == b:
        return True
    if not (a in consts and b in consts):
        return False
    x, y = numpy_helper.to_array(consts[a]), numpy_helper.to_array(consts[b])
    return x.shape == y.shape and x.dtype == y.dtype and bool(np.array_equal(x, y))


def _is_round_trip(q: onnx.NodeProto, dq: onnx.NodeProto, consts: dict[str, onnx.TensorProto]) -> bool:
    """``dq(q(x))`` only rounds ``x`` to its steps: the same scale, zero point and attributes on both sides. A
    pair that rescales (another scale or zero point on the DequantizeLinear) changes the function and stays in
    the twin, so its effect counts against the file, not into its tolerance."""
    def attrs(n: onnx.NodeProto) -> list:
        return sorted((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute
                      if a.name in ("axis", "block_size"))
    return _same_input(q, dq, 1, consts) and _same_input(q, dq, 2, consts) and attrs(q) == attrs(dq)


def float_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every activation QuantizeLinear → DequantizeLinear round trip removed (the
    weights' DequantizeLinear, any pair that rescales, and everything else untouched): what the file computes
    without its activation steps."""
    consts = _constant_names(model)
    values = _constant_values(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in consts or node.output[0] in graph_outputs:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "DequantizeLinear" or not _is_round_trip(node, u, values)
                            for u in users):
            continue
        drop.add(id(node))
        for dq in users:
            drop.add(id(dq))
            rename[dq.output[0]] = node.input[0]
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    kept = [n for n, original in zip(twin.graph.node, model.graph.node) if id(original) not in drop]

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    for out in twin.graph.output:
        if out.name in rename:  # keep the output's name: an Identity from the float tensor
            kept.append(onnx.helper.make_node("Identity", [resolve(out.name)], [out.name]))
    del twin.graph.node[:]
    twin.graph.node.extend(kept)
    return twin
