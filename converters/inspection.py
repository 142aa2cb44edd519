"""``inspect_model(path)``: the per-layer size table of any ONNX file whose weights feed DequantizeLinear.

A weight is a DequantizeLinear whose input is computed from initializers alone (directly — an INT2/INT4/INT8
container — or through a constant subgraph, as in ``compact``, which is evaluated with ``onnx.reference``).
Learned bits and stored bytes come from the ``sgsc.layers`` metadata when the file has it, otherwise from the
integers themselves (the narrowest signed width of each channel) and the bytes of the initializers behind each
weight (shared ones split in proportion to the layers' bits).

The file is untrusted: it is read by ``sgsc_export._onnx_safety.load_onnx_bounded`` (external data beside the
model only, declared sizes checked), and a constant subgraph is evaluated only when it uses the ops an
unpacking needs (``_EVAL_OPS``) and shape inference bounds every intermediate by ``SGSC_MAX_ONNX_ELEMENTS``
and their sum by ``SGSC_MAX_INPUT_BYTES``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from converters import packing
from converters._table import LayerRow, SizeTable
from converters.passes.metadata import layer_records
from sgsc_export._limits import input_limit_message, max_input_bytes
from sgsc_export._onnx_safety import check_static_sizes, load_onnx_bounded
from sgsc_export.errors import ExportError, SGSCError

__all__ = ["inspect_model"]


def _ancestors(
    name: str, producers: dict[str, onnx.NodeProto], inits: set[str]
) -> tuple[list, set[str]] | None:
    """Nodes (topological order) and initializers that ``name`` is computed from, or None if it reads an
    input."""
    nodes, used, seen, order = [], set(), set(), []
    stack = [name]
    while stack:
        n = stack.pop()
        if n in seen or n == "":
            continue
        seen.add(n)
        if n in inits:
            used.add(n)
        elif n in producers:
            node = producers[n]
            order.append(node)
            stack.extend(node.input)
        else:
            return None
    for node in reversed(order):
        if node not in nodes:
            nodes.append(node)
    return nodes, used


# What an unpacking subgraph (``compact``) needs, and a few ops of the same kind: nothing that loops,
# branches, or creates a tensor whose size is not bounded by shape inference.
_EVAL_OPS = frozenset(
    {
        "Add",
        "BitShift",
        "BitwiseAnd",
        "BitwiseOr",
        "Cast",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "CumSum",
        "Div",
        "Expand",
        "Flatten",
        "Gather",
        "Identity",
        "Mod",
        "Mul",
        "Neg",
        "Range",
        "ReduceSum",
        "Reshape",
        "ScatterElements",
        "Slice",
        "Split",
        "Squeeze",
        "Sub",
        "Transpose",
        "Unsqueeze",
    }
)


def _evaluate(
    graph: onnx.GraphProto, nodes: list, used: set[str], outputs: list[str], opsets, label: str
) -> dict[str, np.ndarray]:
    """``outputs`` computed from the constant subgraph ``nodes`` / ``used``, in one evaluation (layers that
    share an unpacking reader are decoded together)."""
    from onnx.reference import ReferenceEvaluator

    what = repr(outputs[0]) if len(outputs) == 1 else f"{len(outputs)} weights"
    ids = {n.output[0] for n in nodes if n.output}  # SSA: a node is known by its first output
    order = [n for n in graph.node if n.output and n.output[0] in ids]  # the file's (topological) order
    bad = sorted({n.op_type for n in order if n.op_type not in _EVAL_OPS or n.domain not in ("", "ai.onnx")})
    if bad:
        raise ExportError(
            f"{label}: the constant subgraph of {what} uses {', '.join(bad)}, which inspect does "
            "not evaluate (an unpacking needs only arithmetic, bit and shape ops)"
        )
    sub = onnx.helper.make_graph(
        order,
        "sub",
        [],
        [onnx.helper.make_tensor_value_info(o, 0, None) for o in outputs],
        [t for t in graph.initializer if t.name in used],
    )
    model = onnx.helper.make_model(sub, opset_imports=opsets)
    total = check_static_sizes(
        model, f"{label}: constant subgraph of {what}", ExportError, require_static_constants=True
    )
    limit = max_input_bytes()
    if total * 8 > limit:  # the evaluator keeps every intermediate; 8 bytes bounds each element
        raise ExportError(
            input_limit_message(f"{label}: evaluating the constant subgraph of {what}", total * 8, limit)
        )
    try:
        values = ReferenceEvaluator(model).run(None, {})
    except Exception as exc:  # noqa: BLE001 - the reference evaluator raises many types on a bad graph
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(
            f"{label}: cannot evaluate the constant subgraph of {what} ({type(exc).__name__}: {text})"
        ) from None
    return {o: np.asarray(v) for o, v in zip(outputs, values)}


def inspect_model(path: str | os.PathLike) -> SizeTable:
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p} does not exist; pass the path of an .onnx file")
    model = load_onnx_bounded(p, ExportError)
    try:
        return _table(p, model)
    except SGSCError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile file reaches corners no check foresaw: one line, no traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(f"{p}: cannot inspect this ONNX file ({type(exc).__name__}: {text})") from None


def _widths_from_blob(bits: onnx.TensorProto | None, records: dict[str, dict], found: list) -> None:
    """A compact file's records carry no bits histogram nor learned bits: every channel's width is in
    ``pk.bits`` (two to a byte, the layers in the order of ``sgsc.layers``). Fill them in from there where the
    widths and the decoded weights agree (each channel's integers fit its width, the channel counts add up);
    otherwise leave the records as they are (the table then reads the integers themselves)."""
    if bits is None or not records or any("bits_histogram" in r for r in records.values()):
        return
    if bits.data_type != onnx.TensorProto.UINT8:
        return
    packed = numpy_helper.to_array(bits).reshape(-1)
    widths = np.stack([packed & 15, packed >> 4], 1).reshape(-1).astype(np.int64)
    decoded = {name: (values, axis) for name, values, axis, _, _ in found}
    filled, start = {}, 0
    for weight in records:
        if weight not in decoded:
            return
        values, axis = decoded[weight]
        ax = (axis if values.ndim > 1 else 0) % max(values.ndim, 1)
        c = values.shape[ax] if values.ndim else 1
        w = widths[start:start + c]
        start += c
        if len(w) != c or (w > 8).any() or (packing.channel_bits(values, ax) > w).any():
            return
        per = values.size // max(c, 1)
        filled[weight] = ({str(b): int(n) for b, n in enumerate(np.bincount(w, minlength=9)) if n},
                          int(w.sum()) * per)
    if start > len(widths) or widths[start:].any():
        return
    for weight, (hist, learned) in filled.items():
        records[weight].update(bits_histogram=hist, learned_bits=learned)


def _table(p: Path, model: onnx.ModelProto) -> SizeTable:
    graph = model.graph
    meta = {m.key: m.value for m in model.metadata_props}
    records = {}
    if "sgsc.layers" in meta:
        try:
            records = {r["weight"]: r for r in layer_records(meta["sgsc.layers"])}
        except (ValueError, KeyError, TypeError):
            records = {}
    fused = json.loads(meta.get("sgsc.fused", "{}") or "{}")
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    found = []
    held, limit = 0, max_input_bytes()
    weights = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not node.input:
            continue
        anc = _ancestors(node.input[0], producers, set(inits))
        if anc is not None:
            weights.append((node, *anc))
    computed = [(n, nodes, used) for n, nodes, used in weights if n.input[0] not in inits]
    decoded = {}
    if computed:  # one evaluation for every computed weight: a reader shared by layers runs once
        all_nodes = [x for _, nodes, _ in computed for x in nodes]
        decoded = _evaluate(graph, all_nodes, set().union(*(u for _, _, u in computed)),
                            [n.input[0] for n, _, _ in computed], model.opset_import, str(p))
    for node, _, used in weights:
        x_name = node.input[0]
        if x_name in inits:
            if inits[x_name].data_type == onnx.TensorProto.INT32:
                continue  # a quantised bias, not a weight
            values = numpy_helper.to_array(inits[x_name])
            container = onnx.TensorProto.DataType.Name(inits[x_name].data_type)
        else:
            values = decoded[x_name]
            container = "packed"
        if values.dtype == np.int32:
            continue
        held += values.nbytes
        if held > limit:
            raise ExportError(input_limit_message(f"{p}: the weights it decodes", held, limit))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        extra = {n for n in node.input[1:] if n in inits}
        found.append((node.output[0], values, axis, container, used | extra))
    _widths_from_blob(inits.get("pk.bits"), records, found)
    owners: dict[str, int] = {}
    for _, _, _, _, used in found:
        for n in used:
            owners[n] = owners.get(n, 0) + 1
    rows = []
    for name, values, axis, container, used in found:
        rec = records.get(name)
        if rec is not None and "bits_histogram" in rec and "learned_bits" in rec:
            hist, learned, stored = rec["bits_histogram"], int(rec["learned_bits"]), int(rec["stored_bytes"])
            label = rec.get("name", name)
        else:
            ax = axis if values.ndim > 1 else 0
            cb = (
                packing.channel_bits(values, ax % max(values.ndim, 1))
                if values.ndim
                else np.zeros(1, np.uint8)
            )
            per = values.size // max(len(cb), 1)
            hist = {str(b): int(n) for b, n in enumerate(np.bincount(cb, minlength=9)) if n}
            learned = int(cb.astype(np.int64).sum()) * per
            own = sum(len(inits[n].SerializeToString()) for n in used if owners[n] == 1)
            shared = sum(len(inits[n].SerializeToString()) / owners[n] for n in used if owners[n] > 1)
            stored = round(own + shared)
            label = name
        rows.append(
            LayerRow(
                name=label,
                shape=tuple(int(d) for d in values.shape),
                fp32_bytes=int(values.size) * 4,
                bits_histogram=hist,
                learned_bits=learned,
                stored_bytes=stored,
                container=container,
                fused="" if not fused else fused.get(label, ""),
                activation=str(rec.get("activation", "")) if rec is not None else "",
            )
        )
    size = p.stat().st_size
    float_bytes = int(meta.get("sgsc.float_onnx_bytes", 0) or 0)
    estimated = float_bytes <= 0
    if estimated:
        float_bytes = size - sum(r.stored_bytes for r in rows) + sum(r.fp32_bytes for r in rows)
    return SizeTable(
        rows=tuple(rows),
        file_bytes=size,
        float_onnx_bytes=float_bytes,
        float_estimated=estimated,
        profile=meta.get("sgsc.profile", ""),
        opset=int(meta.get("sgsc.opset", 0) or 0),
    )
