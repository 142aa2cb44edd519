"""``export(compressed, path, profile)``: artifact → one standard ONNX file, written atomically.

Why graph passes over ``onnx_ir`` after a float ``torch.onnx.export`` (and not a custom torch op translated to
DequantizeLinear): the float export is the one step that must understand the user's model, and torch already
does it for anything it can export in float (``--model`` included). Everything the compression adds — integer
containers, exact packing, activation QDQ, metadata — is then a local rewrite of named initializers that is
the same for every model, can be checked before and after (each pass states its pre/postconditions), and never
depends on how torch lowers a custom op at a given opset. It also makes the result reproducible: after the
exporter's stack-trace metadata is stripped, every name and byte depends only on the artifact and the profile.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters._table import LayerRow, SizeTable
from sgsc_export.errors import ArtifactError, ExportError

__all__ = ["TOOLCHAIN_VERSION", "ExportResult", "export", "write_atomic"]

TOOLCHAIN_VERSION = "0.1.0"


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` wrote: the file, its profile and opset, and the per-layer size table."""

    path: Path
    profile: str
    opset: int
    table: SizeTable
    sha256: str
    fused: dict[str, str] = field(default_factory=dict)

    @property
    def file_bytes(self) -> int:
        return self.table.file_bytes

    @property
    def float_onnx_bytes(self) -> int:
        return self.table.float_onnx_bytes

    @property
    def ratio(self) -> float:
        return self.table.ratio


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` atomically; the output directory must exist (a typo in ``-o`` is an error, not a new
    tree)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"output directory {path.parent} does not exist; create it first")
    from sgsc_export._io import write_atomic as _write_atomic

    _write_atomic(path, data)


def _load(compressed: Any, model: str | None, trust_model_code: bool) -> tuple[Any, bytes]:
    """The CompressedModel and the bytes of its manifest.json."""
    from sgsc_export.artifact.compressed import CompressedModel

    if isinstance(compressed, (str, os.PathLike)):
        directory = Path(compressed)
        cm = CompressedModel.load(directory, model=model, trust_model_code=trust_model_code)
        return cm, (directory / "manifest.json").read_bytes()
    if not hasattr(compressed, "manifest") or not hasattr(compressed, "to_module"):
        raise ExportError(
            f"export() takes an artifact directory or a CompressedModel, not {type(compressed).__name__}"
        )
    # CompressedModel.save writes json.dumps(manifest, indent=2): the same bytes, without a path to read
    # them from
    return compressed, json.dumps(compressed.manifest, indent=2).encode()


def _numpy(t: Any) -> Any:
    import numpy as np

    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def export(
    compressed: Any,
    path: str | os.PathLike,
    profile: str = "portable",
    *,
    model: str | None = None,
    trust_model_code: bool = False,
    qdq_targets: Any = None,
) -> ExportResult:
    """Export an artifact (directory or ``CompressedModel``) to ``path`` in ``profile``; see
    ``converters.profiles``.

    An artifact is data: a built-in model rebuilds as is, a user's model file only when named (``model=
    "file.py:make"``, the command line's ``--model``) or trusted (``trust_model_code=True``), with the SHA-256
    recorded at compression (``sgsc_export.artifact.rebuild.resolve_rebuild_factory``).

    ``qdq_targets`` (``converters.passes.qdq_select.QDQTargets``, default: ``sgsc validate``'s gate) are the
    bounds ``ort-int8`` keeps on held data when it chooses the activations to quantise.
    """
    import numpy as np
    import onnx_ir as ir

    from converters.passes import ExportContext, required_opset
    from converters.profiles import get_profile

    prof = get_profile(profile)
    cm, manifest_bytes = _load(compressed, model, trust_model_code)
    manifest = cm.manifest
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ArtifactError(
            "manifest.json has no compressed layers ('layers' missing or empty); the artifact is "
            "corrupt, re-run `sgsc compress`"
        )
    quant = {k: _numpy(v) for k, v in cm.quant.items()}
    bits = [np.asarray(layer.get("bits", []), dtype=np.int64) for layer in layers]
    opset = required_opset(bits, prof.name)

    from converters._torch_export import export_float

    module = (
        cm.to_module(model=model, trust_model_code=trust_model_code)
        if model or trust_model_code
        else cm.to_module()
    )  # duck-typed artifacts take no arguments
    owners = {layer["name"]: _owner(module, layer["name"]) for layer in layers}
    kinds = {name: _kind(owner) for name, owner in owners.items() if owner is not None}
    model = export_float(module, cm.example_input(2), opset)
    float_bytes = len(ir.serde.serialize_model(model).SerializeToString())
    calibration = selection = None
    if prof.needs_calibration:
        calibration, selection = _held_data(cm, manifest)
    ctx = ExportContext(
        model=model,
        profile=prof.name,
        opset=opset,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        version=TOOLCHAIN_VERSION,
        float_onnx_bytes=float_bytes,
        quant=quant,
        kinds=kinds,
        calibration=calibration,
        selection=selection,
        qdq_targets=qdq_targets,
    )
    prof.run(ctx)
    proto = ir.serde.serialize_model(ctx.model)
    inits = {t.name for t in proto.graph.initializer}
    kept = [v for v in proto.graph.value_info if v.name not in inits]  # initializers carry their own type
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    data = proto.SerializeToString()
    if len(data) >= 2**31:
        raise ExportError(
            "the model is over 2 GB; external data is not supported yet, export a smaller model"
        )
    out = Path(path)
    write_atomic(out, data)
    rows = tuple(
        LayerRow(
            name=r["name"],
            shape=tuple(int(d) for d in layer.ints.shape),
            fp32_bytes=r["fp32_bytes"],
            bits_histogram=r["bits_histogram"],
            learned_bits=r["learned_bits"],
            stored_bytes=r["stored_bytes"],
            container=r["container"],
            fused=layer.fused,
            activation=layer.activation,
        )
        for r, layer in ((lw.record(), lw) for lw in ctx.layers)
    )
    table = SizeTable(
        rows=rows, file_bytes=len(data), float_onnx_bytes=float_bytes, profile=prof.name, opset=opset
    )
    return ExportResult(
        path=out,
        profile=prof.name,
        opset=opset,
        table=table,
        sha256=hashlib.sha256(data).hexdigest(),
        fused=dict(ctx.fused),
    )


def _held_data(cm: Any, manifest: dict[str, Any]) -> tuple[Any, Any]:
    """``ort-int8``'s calibration inputs (the preservation set) and the held splits its choice of quantised
    activations is measured on: the artifact's validation split when it has one, and the preservation set
    (training samples the gate checks too; the test split is never used to build a file)."""
    import numpy as np

    from converters.passes._ort import model_input
    from converters.passes.qdq_select import SelectionData

    ev = getattr(cm, "eval", None) or {}
    calibration = np.asarray(ev.get("x_preservation", np.zeros((0,))))
    lm = str((manifest.get("model") or {}).get("task", "")) == "language_model"
    held = []
    for split in ("validation", "preservation"):
        x = ev.get(f"x_{split}")
        if x is None or len(x) == 0:
            continue
        y, float_logits = ev.get(f"y_{split}"), ev.get(f"logits_float_{split}")
        held.append(SelectionData(x=model_input(x), split=split, y=None if y is None else np.asarray(y),
                                  float_logits=None if float_logits is None else np.asarray(float_logits),
                                  language_model=lm))
    return calibration, held or None


def _kind(module: Any) -> str:
    """The layer's class name; for a subclass of a supported torch.nn layer (``MultiheadAttention.out_proj``,
    a user's ``class MyConv(nn.Conv2d)``), that layer's name; a GRU's tensor has its module's (``GRU``)."""
    from converters.passes.locate import SUPPORTED_KINDS

    names = (c.__name__ for c in type(module).__mro__
             if c.__module__.startswith("torch.nn") and c.__name__ in SUPPORTED_KINDS)
    return next(names, type(module).__name__)


def _owner(module: Any, name: str) -> Any:
    """The module a manifest layer names; for one tensor of a module (``rnn.weight_ih_l0``), that module; or
    None."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        pass
    parent, _, attr = name.rpartition(".")
    try:
        owner = module.get_submodule(parent)
    except AttributeError:
        return None
    return owner if attr in getattr(owner, "_parameters", {}) else None
