"""The artifact: the contract between compression and the converters (see docs/ARTIFACT.md).

``CompressedModel`` holds the deployable state (BatchNorm folded, pruned channels removed, weights equal to
integers × 2^e exactly), the integers themselves with their bits, exponents and masks, the preservation set,
the evaluation data with PyTorch reference logits, and the manifest. ``save`` writes each file atomically and
the manifest last; ``load`` checks every file against the SHA-256 the manifest records
(:mod:`sgsc_export.artifact.format`, torch-free) and the manifest's schema, and runs no code.

The trust rule: an artifact is data. Rebuilding the module (``to_module``) calls a factory only if it is a
built-in of :data:`sgsc_export.models.BUILTIN_FACTORIES` (with range-checked integer arguments), or a model file
the user named (``load(..., model="file.py:make")``, the command line's ``--model``) or trusted
(``trust_model_code=True``, ``--trust-model-code``: the path the manifest records), whose SHA-256 equals the
manifest's ``model.source_sha256``. Anything else is refused before anything is imported.
"""

from __future__ import annotations

import copy
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
from sgsc_export.errors import ArtifactError, ModelError
from sgsc_export.method import core
from sgsc_export.method.nn import quantized_layers
from sgsc_export.method.pruning import load_state_resizing_

__all__ = ["FORMAT", "FORMAT_VERSION", "CompressedModel", "freeze", "rebuild_module", "resolve_rebuild_factory",
           "write_atomic"]


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed, deterministic member order
    return buf.getvalue()


_sha = sha256_hex


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


def resolve_rebuild_factory(manifest: dict[str, Any], model: str | None = None,
                            trust_model_code: bool = False) -> tuple[str, dict[str, Any], str | None]:
    """``(factory spec, kwargs, expected SHA-256)`` that the trust rule lets rebuild this artifact; imports nothing.

    A built-in factory (``BUILTIN_FACTORIES``) with checked arguments needs nothing. A model file runs only if the
    user names it (``model="file.py:make"``) or passes ``trust_model_code=True`` (then the manifest's path is used),
    and only with the SHA-256 recorded at compression. Every other spec is refused.
    """
    from sgsc_export.models import BUILTIN_FACTORIES, check_builtin_kwargs

    spec = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    factory, kwargs = spec.get("factory"), spec.get("kwargs") or {}
    if not isinstance(factory, str) or not isinstance(kwargs, dict):
        raise ArtifactError("manifest.json has no model.factory string and kwargs object; re-run `sgsc compress`")
    if factory in BUILTIN_FACTORIES:
        if model is not None and model != factory:
            raise ModelError(f"the artifact was made with the built-in model {factory}; drop --model {model}")
        return factory, check_builtin_kwargs(factory, kwargs), None
    target, _, attr = factory.rpartition(":")
    if not target.endswith(".py") or not attr:
        raise ArtifactError(f"manifest.json names the model factory {factory!r}, which is neither a built-in model "
                            f"({', '.join(sorted(BUILTIN_FACTORIES))}) nor a FILE.py:factory; refused, nothing was "
                            "imported (the artifact is not trusted)")
    digest = spec.get("source_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ArtifactError(f"manifest.json records no SHA-256 of the model file {target} (model.source_sha256 is "
                            "null), so it cannot be checked and will not run; re-run `sgsc compress --model "
                            "FILE.py:factory`, which records it")
    if model is None and not trust_model_code:
        raise ModelError(f"this artifact's model is user code ({factory}); it runs only if you name it: pass "
                         f"--model FILE.py:{attr} (the file it was compressed with), or --trust-model-code to run "
                         f"{target} (API: model=... or trust_model_code=True)")
    if model is not None:
        m_target, sep, m_attr = model.rpartition(":")
        if not sep or not m_target.endswith(".py") or not m_attr:
            raise ModelError(f"--model {model!r} must look like path/to/file.py:factory (the file the artifact was "
                             "compressed with)")
        return model, kwargs, digest
    return factory, kwargs, digest


def rebuild_module(manifest: dict[str, Any], state: dict[str, torch.Tensor], *, model: str | None = None,
                   trust_model_code: bool = False) -> nn.Module:
    """Rebuild the deployable module from its factory (the trust rule of ``resolve_rebuild_factory``), the
    manifest's structural edits, and the state."""
    from sgsc_export.models import build_model

    factory, kwargs, digest = resolve_rebuild_factory(manifest, model, trust_model_code)
    module, _ = build_model(factory, kwargs, expected_sha256=digest)
    for _, bn in manifest.get("folded_batchnorm", []):
        parent, _, child = bn.rpartition(".")
        try:
            owner = module.get_submodule(parent)
        except AttributeError:
            owner = None
        if owner is None or child not in owner._modules:
            raise ArtifactError(f"manifest.json: folded_batchnorm names {bn!r}, which is not a submodule of "
                                f"{factory}; the manifest does not match the model, re-run `sgsc compress`")
        setattr(owner, child, nn.Identity())
    expected = set(module.state_dict())
    if expected - set(state) or set(state) - expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        # a conv whose BatchNorm was folded gains a bias
        if missing or any(not k.endswith(".bias") for k in extra):
            raise ArtifactError(f"model.safetensors does not match the model: missing {missing}, unexpected {extra}")
    try:
        load_state_resizing_(module, state, trainable=False)
    except (RuntimeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"model.safetensors does not fit {factory}: {str(exc).splitlines()[0][:160]}; "
                            "re-run `sgsc compress`") from None
    module.eval()
    return module


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

        ``model`` / ``trust_model_code`` override what ``load`` was given: a user's model file runs only when it is
        named or trusted, and its SHA-256 equals the manifest's (``resolve_rebuild_factory``).
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
        self.manifest["files"] = {name: _sha(b) for name, b in blobs.items()}
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
        ``trust_model_code=True`` trusts the path the manifest records; either way the file's SHA-256 must equal
        ``model.source_sha256``. A built-in model (``BUILTIN_FACTORIES``) needs neither.
        """
        from safetensors.torch import load

        d = Path(directory)
        manifest, blobs = read_artifact_files(d)
        check_manifest(manifest)
        try:
            state, quant = load(blobs["model.safetensors"]), load(blobs["quant.safetensors"])
            pres = load_npz_bounded(blobs["preservation.npz"], error=ArtifactError, name=f"{d}/preservation.npz")
            ev = load_npz_bounded(blobs["eval.npz"], error=ArtifactError, name=f"{d}/eval.npz")
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(f"cannot read the tensors of {d}: {str(exc).splitlines()[0][:160]}") from exc
        for layer in manifest["layers"]:
            wi = quant.get(f"{layer['name']}.weight_int")
            if wi is None or list(wi.shape) != list(layer["weight_shape"]):
                raise ArtifactError(f"layer {layer['name']!r}: quant.safetensors does not match the manifest's "
                                    "weight_shape/bits; re-run `sgsc compress`")
        x_test = ev.get("x_test")
        if x_test is None or list(x_test.shape[1:]) != list(manifest["model"]["input_shape"][1:]):
            raise ArtifactError(f"{d}: eval.npz x_test {None if x_test is None else list(x_test.shape)} does not "
                                f"match the manifest's model.input_shape {manifest['model']['input_shape']}; "
                                "re-run `sgsc compress`")
        hist_path = d / "history.json"
        history = read_json(hist_path, "training history") if hist_path.is_file() else {}
        if not isinstance(history, dict):
            raise ArtifactError(f"{hist_path} is not a JSON object; the training history is corrupt, re-run "
                                "`sgsc compress`")
        return cls(manifest, state, quant, pres, ev, history, model_source=model, trust_model_code=trust_model_code)
