"""Pass: find each quantised layer's weight initializer in the float graph and check it against the artifact.

Precondition: the float graph came from the artifact's deployable module, so a quantised layer ``L`` has an
initializer equal to ``L.weight_int × L.scale`` exactly — named ``L.weight`` (the exporter keeps parameter
names) or, failing that, found by value; a MatMul weight may appear transposed (``[in, out]``, channel axis
1). Postcondition: ``ctx.layers`` holds one ``LayerWeight`` per quantised layer, in manifest order.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from converters.passes._base import Pass
from converters.passes._context import ExportContext, LayerWeight
from sgsc_export.errors import ArtifactError, ExportError

__all__ = ["SUPPORTED_KINDS", "LocateWeights", "locate_weights"]

SUPPORTED_KINDS = ("Conv1d", "Conv2d", "Conv3d", "Linear", "Embedding")


def _artifact_tensors(ctx: ExportContext, layer: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    name = layer["name"]
    try:
        ints = ctx.quant[f"{name}.weight_int"]
        scale = ctx.quant[f"{name}.scale"].astype(np.float32)
        bits = ctx.quant[f"{name}.bits"].astype(np.uint8)
    except KeyError as exc:
        raise ArtifactError(f"quant.safetensors has no {exc.args[0]!r} for manifest layer {name!r}; "
                            "the artifact is incomplete, re-run `sgsc compress`") from None
    shape = [int(d) for d in layer["weight_shape"]]
    if list(ints.shape) != shape or scale.shape != (shape[0],) or bits.shape != (shape[0],):
        raise ArtifactError(
            f"layer {name!r}: quant.safetensors shapes {list(ints.shape)}/{list(scale.shape)} do "
            f"not match the manifest's weight_shape {shape}; re-run `sgsc compress`"
        )
    if [int(b) for b in bits] != [int(b) for b in layer["bits"]]:
        raise ArtifactError(
            f"layer {name!r}: bits in quant.safetensors differ from the manifest; "
            "the artifact was edited, re-run `sgsc compress`"
        )
    flat = ints.reshape(shape[0], -1).astype(np.int64)
    lo, hi = -(1 << (bits.astype(np.int64) - 1)), (1 << (bits.astype(np.int64) - 1)) - 1
    lo, hi = np.where(bits == 0, 0, lo), np.where(bits == 0, 0, hi)
    if (flat.min(axis=1, initial=0) < lo).any() or (flat.max(axis=1, initial=0) > hi).any():
        raise ArtifactError(
            f"layer {name!r}: weight_int holds values outside the signed range of its bits; "
            "re-run `sgsc compress`"
        )
    return ints.astype(np.int8), scale, bits


class LocateWeights(Pass):
    name = "locate_weights"

    def requires(self, ctx: ExportContext) -> None:
        if ctx.layers:
            raise self.refuse(f"no layers located yet (it runs once); {len(ctx.layers)} are")
        if not isinstance(ctx.manifest.get("layers"), list) or not ctx.manifest["layers"]:
            raise self.refuse("a manifest with compressed layers; 'layers' is missing or empty")

    def call(self, ctx: ExportContext) -> None:
        _locate(ctx)

    def ensures(self, ctx: ExportContext) -> None:
        names = [layer["name"] for layer in ctx.manifest["layers"]]
        if [layer.name for layer in ctx.layers] != names:
            raise self.broken(
                f"one located layer per manifest layer, in order; found "
                f"{[layer.name for layer in ctx.layers]} for {names}"
            )
        inits = ctx.model.graph.initializers
        for layer in ctx.layers:
            value = layer.value
            if (
                inits.get(value.name) is not value
                or value.const_value is None
                or value.const_value.dtype != ir.DataType.FLOAT
                or tuple(value.const_value.shape) != layer.ints.shape
            ):
                raise self.broken(
                    f"each layer's weight is a float initializer of its integers' shape; "
                    f"{layer.name!r} is not"
                )


locate_weights = LocateWeights()


def _locate(ctx: ExportContext) -> None:
    graph = ctx.model.graph
    floats = {
        n: v
        for n, v in graph.initializers.items()
        if v.const_value is not None and v.const_value.dtype.name == "FLOAT"
    }
    for layer in ctx.manifest["layers"]:
        name = layer["name"]
        kind = ctx.kinds.get(name) or layer.get("kind", "?")  # the module's class is the ground truth
        if kind not in SUPPORTED_KINDS:
            raise ExportError(
                f"layer {name!r} is a {kind}, which the converters do not support "
                f"(supported: {', '.join(SUPPORTED_KINDS)}); exclude it from compression"
            )
        ints, scale, bits = _artifact_tensors(ctx, layer)
        bshape = (-1,) + (1,) * (ints.ndim - 1)
        expected = (ints.astype(np.float32) * scale.reshape(bshape)).astype(np.float32)
        found = None
        named = floats.get(f"{name}.weight")
        if named is not None:
            arr = named.const_value.numpy()
            if arr.shape == expected.shape and np.array_equal(arr, expected):
                found = (named, 0)
            else:
                raise ArtifactError(
                    f"layer {name!r}: model.safetensors weight is not weight_int × scale; "
                    "the state does not match the manifest, re-run `sgsc compress`"
                )
        else:
            for value in floats.values():
                arr = value.const_value.numpy()
                if arr.shape == expected.shape and np.array_equal(arr, expected):
                    found = (value, 0)
                    break
                if expected.ndim == 2 and arr.shape == expected.T.shape and np.array_equal(arr, expected.T):
                    found = (value, 1)
                    break
        if found is None:
            raise ExportError(
                f"layer {name!r}: no weight initializer equal to weight_int × scale in the exported "
                "graph; the model's forward does not use this weight as a constant"
            )
        value, axis = found
        if axis == 1:
            ints = np.ascontiguousarray(ints.T)
        ctx.layers.append(
            LayerWeight(name=name, kind=kind, value=value, ints=ints, scale=scale, bits=bits, axis=axis)
        )
