"""Pass: ``metadata_props`` that make the file self-describing (``sgsc inspect`` reads them back).

Keys: ``sgsc.profile``, ``sgsc.opset``, ``sgsc.layers`` (JSON list: per layer its weight name, bits histogram,
learned bits, fp32 / stored bytes and container), ``sgsc.manifest_sha256``, ``sgsc.version``, ``sgsc.preservation_sha256``, ``sgsc.task``, ``sgsc.float_onnx_bytes``, for a language model ``sgsc.vocab`` (JSON string, token id = index)
and ``sgsc.context``, and, for ``ort-int8``,
``sgsc.fused`` (layer → the onnxruntime kernel it became). Values are canonical JSON so the file is reproducible.
"""

from __future__ import annotations

import json

from converters.passes._context import ExportContext

__all__ = ["LAYERS_KEY", "add_metadata"]

LAYERS_KEY = "sgsc.layers"


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def add_metadata(ctx: ExportContext) -> None:
    m = ctx.manifest
    props = {
        "sgsc.profile": ctx.profile,
        "sgsc.opset": str(ctx.opset),
        LAYERS_KEY: _dumps([layer.record() for layer in ctx.layers]),
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
    ctx.model.metadata_props.clear()
    ctx.model.metadata_props.update(props)
