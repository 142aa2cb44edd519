"""``inspect_model(path)``: the per-layer size table of any ONNX file whose weights feed DequantizeLinear.

A weight is a DequantizeLinear whose input is computed from initializers alone (directly — an INT2/INT4/INT8
container — or through a constant subgraph, as in ``compact``, which is evaluated with ``onnx.reference``).
Learned bits and stored bytes come from the ``sgsc.layers`` metadata when the file has it, otherwise from the
integers themselves (the narrowest signed width of each channel) and the bytes of the initializers behind each
weight (shared ones split in proportion to the layers' bits).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sgsc_export.errors import ExportError

from . import packing
from ._table import LayerRow, SizeTable

__all__ = ["inspect_model"]


def _ancestors(name: str, producers: dict[str, onnx.NodeProto], inits: set[str]) -> tuple[list, set[str]] | None:
    """Nodes (topological order) and initializers that ``name`` is computed from, or None if it reads an input."""
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


def _evaluate(graph: onnx.GraphProto, nodes: list, used: set[str], output: str, opsets) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    order = [n for n in graph.node if n in nodes]  # keep the file's (topological) order
    sub = onnx.helper.make_graph(order, "sub", [], [onnx.helper.make_tensor_value_info(output, 0, None)],
                                 [t for t in graph.initializer if t.name in used])
    model = onnx.helper.make_model(sub, opset_imports=opsets)
    return ReferenceEvaluator(model).run(None, {})[0]


def inspect_model(path: str | os.PathLike) -> SizeTable:
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p} does not exist; pass the path of an .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ExportError(f"{p} is not a readable ONNX file ({type(exc).__name__}); check the path") from None
    graph = model.graph
    meta = {m.key: m.value for m in model.metadata_props}
    records = {}
    if "sgsc.layers" in meta:
        try:
            records = {r["weight"]: r for r in json.loads(meta["sgsc.layers"])}
        except (ValueError, KeyError, TypeError):
            records = {}
    fused = json.loads(meta.get("sgsc.fused", "{}") or "{}")
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not node.input:
            continue
        anc = _ancestors(node.input[0], producers, set(inits))
        if anc is None:
            continue
        nodes, used = anc
        x_name = node.input[0]
        if x_name in inits:
            if inits[x_name].data_type == onnx.TensorProto.INT32:
                continue  # a quantised bias, not a weight
            values = numpy_helper.to_array(inits[x_name])
            container = onnx.TensorProto.DataType.Name(inits[x_name].data_type)
        else:
            values = _evaluate(graph, nodes, used, x_name, model.opset_import)
            container = "packed"
        if values.dtype == np.int32:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        extra = {n for n in node.input[1:] if n in inits}
        found.append((node.output[0], values, axis, container, used | extra))
    owners: dict[str, int] = {}
    for _, _, _, _, used in found:
        for n in used:
            owners[n] = owners.get(n, 0) + 1
    rows = []
    for name, values, axis, container, used in found:
        rec = records.get(name)
        if rec is not None:
            hist, learned, stored = rec["bits_histogram"], int(rec["learned_bits"]), int(rec["stored_bytes"])
            label = rec.get("name", name)
        else:
            ax = axis if values.ndim > 1 else 0
            cb = packing.channel_bits(values, ax % max(values.ndim, 1)) if values.ndim else np.zeros(1, np.uint8)
            per = values.size // max(len(cb), 1)
            hist = {str(b): int(n) for b, n in enumerate(np.bincount(cb, minlength=9)) if n}
            learned = int(cb.astype(np.int64).sum()) * per
            own = sum(len(inits[n].SerializeToString()) for n in used if owners[n] == 1)
            shared = sum(len(inits[n].SerializeToString()) / owners[n] for n in used if owners[n] > 1)
            stored = round(own + shared)
            label = name
        rows.append(LayerRow(name=label, shape=tuple(int(d) for d in values.shape), fp32_bytes=int(values.size) * 4,
                             bits_histogram=hist, learned_bits=learned, stored_bytes=stored, container=container,
                             fused="" if not fused else fused.get(label, "")))
    size = p.stat().st_size
    float_bytes = int(meta.get("sgsc.float_onnx_bytes", 0) or 0)
    estimated = float_bytes <= 0
    if estimated:
        float_bytes = size - sum(r.stored_bytes for r in rows) + sum(r.fp32_bytes for r in rows)
    return SizeTable(rows=tuple(rows), file_bytes=size, float_onnx_bytes=float_bytes, float_estimated=estimated,
                     profile=meta.get("sgsc.profile", ""), opset=int(meta.get("sgsc.opset", 0) or 0))
