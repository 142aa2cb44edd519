"""Pass: ``metadata_props`` that make the file self-describing (``sgsc inspect`` reads them back).

Keys: ``sgsc.profile``, ``sgsc.opset``, ``sgsc.layers`` (JSON list: per layer its weight name, bits histogram,
learned bits, fp32 / stored bytes and container), ``sgsc.manifest_sha256``, ``sgsc.version``,
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

__all__ = ["LAYERS_KEY", "AddMetadata", "add_metadata"]

LAYERS_KEY = "sgsc.layers"
_KEYS = ("sgsc.profile", "sgsc.opset", LAYERS_KEY, "sgsc.manifest_sha256", "sgsc.version",
         "sgsc.preservation_sha256", "sgsc.task", "sgsc.float_onnx_bytes")


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


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
        if ctx.activation_qdq:
            props["sgsc.activation_qdq"] = _dumps(ctx.activation_qdq)
        ctx.model.metadata_props.clear()
        ctx.model.metadata_props.update(props)

    def ensures(self, ctx: ExportContext) -> None:
        props = ctx.model.metadata_props
        missing = [k for k in _KEYS if k not in props]
        if missing:
            raise self.broken(f"every sgsc key is set; {missing[0]!r} is not")
        if len(json.loads(props[LAYERS_KEY])) != len(ctx.layers):
            raise self.broken(f"{LAYERS_KEY} lists every layer")


add_metadata = AddMetadata()
