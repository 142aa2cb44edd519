"""The artifact: the contract between compression and the converters (see docs/ARTIFACT.md).

``CompressedModel`` holds the deployable state (BatchNorm folded, pruned channels removed, weights equal to
integers × 2^e exactly), the integers themselves with their bits, exponents and masks, the preservation set,
the evaluation data with PyTorch reference logits, and the manifest. ``save`` writes each file atomically and
the manifest last; ``load`` checks every file against the SHA-256 the manifest records.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import core
from ._io import write_atomic
from .errors import ArtifactError
from .nn import quantized_layers
from .pruning import load_state_resizing_

__all__ = ["FORMAT", "FORMAT_VERSION", "CompressedModel", "freeze", "rebuild_module", "write_atomic"]

FORMAT = "sgsc-artifact"
FORMAT_VERSION = 1
_FILES = ("model.safetensors", "quant.safetensors", "preservation.npz", "eval.npz")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed, deterministic member order
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@torch.no_grad()
def freeze(qmodel: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A plain copy of a quantised model, and the integer state of its quantised layers.

    Every quantised layer becomes its float base class with ``weight = weight_int × scale`` (exactly what the
    quantised forward computes) and its zero-bit channels' bias set to 0 (as masked in training).
    """
    module = copy.deepcopy(qmodel)
    quant: dict[str, torch.Tensor] = {}
    for name, layer in quantized_layers(module).items():
        wi = layer.integer_weight()
        scale = layer.scale()
        bits = core.stored_bits(layer.b).reshape(-1)
        shape = (-1,) + (1,) * (wi.dim() - 1)
        plain_cls = next(c for c in type(layer).__mro__[1:] if c.__module__.startswith("torch.nn"))
        plain = plain_cls.__new__(plain_cls)
        plain.__dict__ = layer.__dict__.copy()
        plain._parameters = {"weight": nn.Parameter(wi.to(torch.float32) * scale.reshape(shape))}
        if "bias" in layer._parameters:  # Conv/Linear (None when bias=False); an Embedding has none
            plain._parameters["bias"] = None if layer.bias is None else nn.Parameter(layer.qbias().detach().clone())
        plain._buffers = {}
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, plain)
        quant[f"{name}.weight_int"] = wi.contiguous()
        quant[f"{name}.scale"] = scale.contiguous()
        quant[f"{name}.exponent"] = layer.e.detach().reshape(-1).to(torch.float32).contiguous()
        quant[f"{name}.bits"] = bits.to(torch.uint8).contiguous()
        quant[f"{name}.mask"] = (bits > 0).to(torch.uint8).contiguous()
    module.eval()
    return module, quant


def rebuild_module(manifest: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """Rebuild the deployable module from its factory, the manifest's structural edits, and the state."""
    from .models import build_model

    spec = manifest["model"]
    model, digest = build_model(spec["factory"], spec.get("kwargs") or {})
    if spec.get("source_sha256") and digest != spec["source_sha256"]:
        raise ArtifactError(f"model file of {spec['factory']} changed since compression (SHA-256 differs); "
                            "restore the original file")
    for _, bn in manifest.get("folded_batchnorm", []):
        parent, _, child = bn.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Identity())
    expected = set(model.state_dict())
    if expected - set(state) or set(state) - expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        # a conv whose BatchNorm was folded gains a bias
        if missing or any(not k.endswith(".bias") for k in extra):
            raise ArtifactError(f"model.safetensors does not match the model: missing {missing}, unexpected {extra}")
    load_state_resizing_(model, state, trainable=False)
    model.eval()
    return model


@dataclass
class CompressedModel:
    """A compressed model and everything later stages need. See docs/ARTIFACT.md."""

    manifest: dict[str, Any]
    state: dict[str, torch.Tensor]
    quant: dict[str, torch.Tensor]
    preservation: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    history: dict[str, Any] = field(default_factory=dict)
    _module: nn.Module | None = field(default=None, repr=False)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.manifest["layers"]

    def to_module(self) -> nn.Module:
        """The deployable PyTorch module (eval mode); weights equal ``weight_int × scale`` exactly."""
        if self._module is None:
            self._module = rebuild_module(self.manifest, self.state)
        return self._module

    def example_input(self, batch: int = 1) -> torch.Tensor:
        shape = list(self.manifest["model"]["input_shape"])
        dtype = torch.int64 if self.manifest["model"].get("input_dtype") == "int64" else torch.float32
        return torch.zeros([batch] + shape[1:], dtype=dtype)

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        blobs = {
            "model.safetensors": save({k: v.contiguous() for k, v in self.state.items()}),
            "quant.safetensors": save(self.quant),
            "preservation.npz": _npz_bytes(self.preservation),
            "eval.npz": _npz_bytes(self.eval),
        }
        self.manifest["files"] = {name: _sha(b) for name, b in blobs.items()}
        for name, b in blobs.items():
            write_atomic(d / name, b)
        write_atomic(d / "history.json", json.dumps(self.history, indent=1).encode())
        write_atomic(d / "manifest.json", json.dumps(self.manifest, indent=2).encode())
        return d

    @classmethod
    def load(cls, directory: str | Path) -> CompressedModel:
        from safetensors.torch import load

        d = Path(directory)
        if not d.is_dir():
            raise ArtifactError(f"artifact directory {d} does not exist; run `sgsc compress --out {d}` first")
        mpath = d / "manifest.json"
        if not mpath.is_file():
            raise ArtifactError(f"{d} has no manifest.json: not an artifact, or compression did not finish")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{mpath} is not valid JSON ({exc}); re-run `sgsc compress`") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArtifactError(f"{mpath} is not an sgsc artifact manifest (format != {FORMAT!r})")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{mpath} has format_version {manifest.get('format_version')}; this toolchain reads {FORMAT_VERSION}")
        blobs = {}
        for name in _FILES:
            p = d / name
            if not p.is_file():
                raise ArtifactError(f"{p} is missing; the artifact is incomplete, re-run `sgsc compress`")
            b = p.read_bytes()
            want = manifest.get("files", {}).get(name)
            if want != _sha(b):
                raise ArtifactError(f"{p} does not match the manifest (SHA-256 differs); the artifact was modified or corrupted")
            blobs[name] = b
        try:
            state, quant = load(blobs["model.safetensors"]), load(blobs["quant.safetensors"])
            with np.load(io.BytesIO(blobs["preservation.npz"]), allow_pickle=False) as z:
                pres = {k: z[k] for k in z.files}
            with np.load(io.BytesIO(blobs["eval.npz"]), allow_pickle=False) as z:
                ev = {k: z[k] for k in z.files}
        except Exception as exc:
            raise ArtifactError(f"cannot read the tensors of {d}: {exc}") from exc
        for layer in manifest.get("layers", []):
            wi = quant.get(f"{layer['name']}.weight_int")
            if wi is None or list(wi.shape) != list(layer["weight_shape"]) or len(layer["bits"]) != wi.shape[0]:
                raise ArtifactError(f"layer {layer['name']!r}: quant.safetensors does not match the manifest's weight_shape/bits")
        hist_path = d / "history.json"
        history = json.loads(hist_path.read_text()) if hist_path.is_file() else {}
        return cls(manifest, state, quant, pres, ev, history)


