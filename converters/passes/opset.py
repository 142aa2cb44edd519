"""Pass: the opset a model needs, chosen from the containers it uses, and the check that it has it.

INT4 weights need opset 21 (DequantizeLinear-21), INT2 need 25; 21 is the floor for every profile (the first
opset with INT4 and per-axis blocked QDQ; onnxruntime 1.20+ runs it). ``required_opset`` decides before the
float export (so the exporter targets it directly); ``check_opset`` verifies the finished graph against it: it
requires a default-domain opset import, and is itself the check that every container's opset is there.
"""

from __future__ import annotations

import numpy as np

from converters import packing
from converters.passes._base import Pass
from converters.passes._context import ExportContext
from sgsc_export.errors import ExportError

__all__ = ["BASE_OPSET", "CheckOpset", "check_opset", "required_opset"]

BASE_OPSET = 21
_MIN_OPSET = {"INT2": 25, "UINT2": 25, "INT4": 21, "UINT4": 21}


def required_opset(bits_per_layer: list[np.ndarray], profile: str) -> int:
    """The opset ``profile`` needs for layers with these per-channel widths."""
    if profile != "portable":
        return BASE_OPSET
    widest = [int(np.max(b, initial=0)) for b in bits_per_layer]
    return max([BASE_OPSET] + [packing.CONTAINERS[packing.container_for(w)][1] for w in widest])


class CheckOpset(Pass):
    name = "check_opset"

    def requires(self, ctx: ExportContext) -> None:
        if "" not in ctx.model.opset_imports:
            raise self.refuse(f"a default-domain opset import; the graph imports only "
                              f"{sorted(ctx.model.opset_imports)}")

    def call(self, ctx: ExportContext) -> None:
        have = ctx.model.opset_imports[""]
        for name, value in ctx.model.graph.initializers.items():
            dtype = value.const_value.dtype.name if value.const_value is not None else ""
            need = _MIN_OPSET.get(dtype, 0)
            if have < need:
                raise ExportError(
                    f"initializer {name!r} is {dtype}, which needs opset {need}, but the graph has "
                    f"opset {have}; this is a converter bug, please report it"
                )
        if have != ctx.opset:
            raise ExportError(
                f"the float export produced opset {have}, not the requested {ctx.opset}; "
                "upgrade torch/onnxscript or report this"
            )


check_opset = CheckOpset()
