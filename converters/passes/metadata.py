"""Pass: ``metadata_props`` that make the file self-describing (``sgsc inspect`` reads them back).

Keys: ``sgsc.profile``, ``sgsc.opset``, ``sgsc.layers`` (per layer its name, weight value, bits histogram,
learned bits, stored bytes and container, by column: ``layer_records`` reads it), ``sgsc.manifest_sha256``,
``sgsc.version``,
``sgsc.preservation_sha256``, ``sgsc.task``, ``sgsc.float_onnx_bytes``, for a language model ``sgsc.vocab``
(JSON string, token id = index) and ``sgsc.context``, and, for ``ort-int8``, ``sgsc.fused``: layer → the
integer kernel its layout targets (QLinearConv, QGemm, QLinearMatMul, MatMulIntegerToFloat, MatMulNBits) or
``float``, as ``converters.passes.kernels`` reads it from the graph, and ``sgsc.activation_qdq``: which
activations were quantised and what that measured on held data (``converters.passes.qdq_select``; each
layer's entry in ``sgsc.layers`` then says ``"activation": "int8"`` or ``"float"``). The kernel is what the
converter laid the layer out for, not a measurement: ``sgsc validate`` (``runtime_checks.fusion``) measures
which kernel onnxruntime really runs. Values are canonical JSON so the file is reproducible.

Precondition: a weights pass ran (every layer has a container and its stored bytes). Postcondition: the keys
above are set and ``sgsc.layers`` lists every layer.
"""

from __future__ import annotations

import json

from converters.passes._base import Pass
from converters.passes._context import ExportContext

__all__ = ["LAYERS_KEY", "AddMetadata", "add_metadata", "encode_layers", "layer_records"]

LAYERS_KEY = "sgsc.layers"
_KEYS = ("sgsc.profile", "sgsc.opset", LAYERS_KEY, "sgsc.manifest_sha256", "sgsc.version",
         "sgsc.preservation_sha256", "sgsc.task", "sgsc.float_onnx_bytes")


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


_COLUMNS = ("name", "weight", "bits_histogram", "learned_bits", "stored_bytes", "container", "activation")
_SHARED = ("container", "activation")  # string columns stored once when every layer has the same value


def encode_layers(records: list[dict]) -> str:
    """``sgsc.layers``: one JSON object of columns, each a list with an entry per layer, or one value that
    every layer shares (``container`` and ``activation``, strings), and ``layers``, their count. A bits
    histogram is a list of counts at widths 0, 1, … (trailing zeros dropped); fp32 bytes are not stored (4 ×
    the weight's size in the graph). Keys once per column, not once per layer: a 16-layer ResNet's
    ``sgsc.layers`` took 2.9 kB as a list of objects."""
    columns = {}
    for key in _COLUMNS:
        values = [r.get(key) for r in records]
        if all(v is None for v in values):
            continue
        if key == "bits_histogram":
            values = [_counts(h) for h in values]
        shared = key in _SHARED and values and all(v == values[0] for v in values)
        columns[key] = values[0] if shared else values
    columns["layers"] = len(records)
    return _dumps(columns)


def _counts(hist: dict[str, int]) -> list[int]:
    width = max((int(b) for b in hist), default=-1) + 1
    return [int(hist.get(str(b), 0)) for b in range(width)]


def layer_records(value: str) -> list[dict]:
    """The per-layer records of an ``sgsc.layers`` value: the columns of ``encode_layers``, or the list of
    objects that files before it carry. A value that is neither raises ``ValueError``."""
    data = json.loads(value)
    if isinstance(data, list):
        if not all(isinstance(r, dict) for r in data):
            raise ValueError("sgsc.layers: a list of objects expected")
        return data
    if not isinstance(data, dict) or not isinstance(data.get("layers"), int):
        raise ValueError("sgsc.layers: an object of columns with 'layers' expected")
    n = data["layers"]
    if not 0 <= n <= len(value):  # each layer has a name in the value: a count beyond it is a lie
        raise ValueError(f"sgsc.layers: {n} layers in a value of {len(value)} characters")
    records: list[dict] = [{} for _ in range(n)]
    for key in _COLUMNS:
        if key not in data:
            continue
        column = data[key]
        values = column if isinstance(column, list) else [column] * n
        if len(values) != n:
            raise ValueError(f"sgsc.layers: column {key!r} has {len(values)} entries for {n} layers")
        for record, v in zip(records, values):
            if key == "bits_histogram":
                if not isinstance(v, list):
                    raise ValueError("sgsc.layers: a bits histogram is a list of counts")
                v = {str(b): c for b, c in enumerate(v) if c}
            record[key] = v
    return records


def _without_widths(record: dict, profile: str) -> dict:
    """A compact file stores every channel's width (``pk.bits``): its records leave out what those give, the
    bits histogram and the learned bits (``converters.inspection`` reads them back from the widths)."""
    if profile != "compact":
        return record
    return {k: v for k, v in record.items() if k not in ("bits_histogram", "learned_bits")}


class AddMetadata(Pass):
    name = "add_metadata"

    def requires(self, ctx: ExportContext) -> None:
        for layer in ctx.layers:
            if not layer.container:
                raise self.refuse(
                    f"every layer to have a container (a weights pass ran); {layer.name!r} has none"
                )

    def call(self, ctx: ExportContext) -> None:
        m = ctx.manifest
        props = {
            "sgsc.profile": ctx.profile,
            "sgsc.opset": str(ctx.opset),
            LAYERS_KEY: encode_layers([_without_widths(layer.record(), ctx.profile) for layer in ctx.layers]),
            "sgsc.manifest_sha256": ctx.manifest_sha256,
            "sgsc.version": ctx.version,
            "sgsc.preservation_sha256": str((m.get("preservation") or {}).get("sha256", "")),
            "sgsc.task": str((m.get("model") or {}).get("task", "")),
            "sgsc.float_onnx_bytes": str(ctx.float_onnx_bytes),
        }
        lm = m.get("language_model")
        if lm:  # what a sampler needs without the artifact (examples/sample_names.py)
            props["sgsc.vocab"] = _dumps(lm["vocab"])
            props["sgsc.context"] = str(lm["context"])
        if ctx.fused:
            props["sgsc.fused"] = _dumps(ctx.fused)
        if ctx.activation_qdq:
            props["sgsc.activation_qdq"] = _dumps(ctx.activation_qdq)
        ctx.model.metadata_props.clear()
        ctx.model.metadata_props.update(props)

    def ensures(self, ctx: ExportContext) -> None:
        props = ctx.model.metadata_props
        missing = [k for k in _KEYS if k not in props]
        if missing:
            raise self.broken(f"every sgsc key is set; {missing[0]!r} is not")
        if len(layer_records(props[LAYERS_KEY])) != len(ctx.layers):
            raise self.broken(f"{LAYERS_KEY} lists every layer")


add_metadata = AddMetadata()
