"""The artifact: the contract between compression and the converters (see docs/ARTIFACT.md).

``CompressedModel`` holds the deployable state (BatchNorm folded, pruned channels removed, weights equal to
integers × 2^e exactly), the integers themselves with their bits, exponents and masks, the preservation set,
the evaluation data with PyTorch reference logits, and the manifest. ``save`` writes each file atomically and
the manifest last; ``load`` checks every file against the SHA-256 the manifest records
(:mod:`sgsc_export.artifact.format`, torch-free) and the manifest's schema, and runs no code.

The trust rule: an artifact is data. ``to_module`` rebuilds the module only from a built-in factory or a model
file the user named (``load(..., model="file.py:make")``) or trusted (``trust_model_code=True``), whose
SHA-256 equals the manifest's (:mod:`sgsc_export.artifact.rebuild`). This module imports no training code:
``freeze``, which makes the deployable state from the quantised layers, is part of compression
(``sgsc_export.train``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sgsc_export._io import load_npz_bounded, write_atomic
from sgsc_export.artifact.format import (
    FORMAT,
    FORMAT_VERSION,
    check_manifest,
    read_artifact_files,
    read_json,
    sha256_hex,
)
from sgsc_export.artifact.rebuild import rebuild_module
from sgsc_export.errors import ArtifactError

__all__ = ["FORMAT", "FORMAT_VERSION", "CompressedModel"]


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed, deterministic member order
    return buf.getvalue()



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
    # the trust decision for rebuilding a user's model (see the module docstring); set by ``load``
    model_source: str | None = field(default=None, kw_only=True)
    trust_model_code: bool = field(default=False, kw_only=True)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.manifest["layers"]

    def to_module(self, *, model: str | None = None, trust_model_code: bool | None = None) -> nn.Module:
        """The deployable PyTorch module (eval mode); weights equal ``weight_int × scale`` exactly.

        ``model`` / ``trust_model_code`` override what ``load`` was given: a user's model file runs only when
        it is named or trusted, and its SHA-256 equals the manifest's
        (:func:`sgsc_export.artifact.rebuild.resolve_rebuild_factory`).
        """
        if self._module is None:
            self._module = rebuild_module(
                self.manifest, self.state, model=model if model is not None else self.model_source,
                trust_model_code=self.trust_model_code if trust_model_code is None else trust_model_code)
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
        self.manifest["files"] = {name: sha256_hex(b) for name, b in blobs.items()}
        for name, b in blobs.items():
            write_atomic(d / name, b)
        write_atomic(d / "history.json", json.dumps(self.history, indent=1).encode())
        write_atomic(d / "manifest.json", json.dumps(self.manifest, indent=2).encode())
        return d

    @classmethod
    def load(cls, directory: str | Path, *, model: str | None = None,
             trust_model_code: bool = False) -> CompressedModel:
        """Read and check an artifact directory; no code runs (the module is rebuilt by ``to_module``).

        Every file's SHA-256 is checked against the manifest, and the manifest's schema (``check_manifest``).
        ``model="file.py:make"`` names the user's model file the artifact was compressed with, or
        ``trust_model_code=True`` trusts the path the manifest records; either way the file's SHA-256 must
        equal ``model.source_sha256``. A built-in model (``BUILTIN_FACTORIES``) needs neither.
        """
        from safetensors.torch import load

        d = Path(directory)
        manifest, blobs = read_artifact_files(d)
        check_manifest(manifest)
        try:
            state, quant = load(blobs["model.safetensors"]), load(blobs["quant.safetensors"])
            pres = load_npz_bounded(blobs["preservation.npz"], error=ArtifactError,
                                    name=f"{d}/preservation.npz")
            ev = load_npz_bounded(blobs["eval.npz"], error=ArtifactError, name=f"{d}/eval.npz")
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(f"cannot read the tensors of {d}: {str(exc).splitlines()[0][:160]}") from exc
        for layer in manifest["layers"]:
            wi = quant.get(f"{layer['name']}.weight_int")
            if wi is None or list(wi.shape) != list(layer["weight_shape"]):
                raise ArtifactError(f"layer {layer['name']!r}: quant.safetensors does not match the "
                                    "manifest's weight_shape/bits; re-run `sgsc compress`")
        x_test = ev.get("x_test")
        if x_test is None or list(x_test.shape[1:]) != list(manifest["model"]["input_shape"][1:]):
            raise ArtifactError(f"{d}: eval.npz x_test {None if x_test is None else list(x_test.shape)} does "
                                "not match the manifest's model.input_shape "
                                f"{manifest['model']['input_shape']}; re-run `sgsc compress`")
        hist_path = d / "history.json"
        history = read_json(hist_path, "training history") if hist_path.is_file() else {}
        if not isinstance(history, dict):
            raise ArtifactError(f"{hist_path} is not a JSON object; the training history is corrupt, re-run "
                                "`sgsc compress`")
        return cls(manifest, state, quant, pres, ev, history, model_source=model,
                   trust_model_code=trust_model_code)
