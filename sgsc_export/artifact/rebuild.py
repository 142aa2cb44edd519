"""Rebuild the deployable module of an artifact: from an allowed factory only, resized to the stored state.

The trust rule (docs/ARTIFACT.md): an artifact is data. ``resolve_rebuild_factory`` decides, before anything
is imported, which factory may rebuild it: a built-in of :data:`sgsc_export.models.BUILTIN_FACTORIES` (with
range-checked integer arguments), or a model file the user named (``model="file.py:make"``, the command line's
``--model``) or trusted (``trust_model_code=True``, ``--trust-model-code``: the path the manifest records),
whose SHA-256 equals the manifest's ``model.source_sha256``. Anything else is refused.

``rebuild_module`` then builds the module, replaces the folded BatchNorms by ``nn.Identity`` and loads the
state with ``load_state_resizing_``: channels and heads removed at compression make the stored tensors smaller
than the factory's, and the layers' size attributes follow the stored shapes. The compression's resume loads a
checkpoint the same way (``sgsc_export.train``), so the resizing lives here, where both may import it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sgsc_export.errors import ArtifactError, ModelError

__all__ = ["load_state_resizing_", "rebuild_module", "resolve_rebuild_factory"]


def load_state_resizing_(model: nn.Module, state: dict[str, torch.Tensor], trainable: bool = True) -> None:
    """Load a state dict whose tensors may be smaller than the model's (channels removed), in place.

    Each tensor replaces the model's own; Conv/Linear/BatchNorm size attributes follow the new shapes.
    """
    for key, value in state.items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        if attr in owner._buffers:
            owner._buffers[attr] = value.detach().clone()
        else:
            grad = trainable and value.is_floating_point()
            owner._parameters[attr] = nn.Parameter(value.detach().clone(), requires_grad=grad)
        w = owner._parameters.get("weight")
        if isinstance(owner, (nn.Conv1d, nn.Conv2d)) and w is not None:
            depthwise = owner.groups > 1 and owner.groups == owner.out_channels == owner.in_channels
            if depthwise and w.shape[1] == 1:
                owner.groups = w.shape[0]  # a depthwise convolution stays one: its channels left in threes
            owner.out_channels, owner.in_channels = w.shape[0], w.shape[1] * owner.groups
        elif isinstance(owner, nn.Linear) and w is not None:
            owner.out_features, owner.in_features = w.shape
        elif isinstance(owner, (nn.BatchNorm1d, nn.BatchNorm2d)) and attr == "running_mean":
            owner.num_features = value.shape[0]


def resolve_rebuild_factory(manifest: dict[str, Any], model: str | None = None,
                            trust_model_code: bool = False) -> tuple[str, dict[str, Any], str | None]:
    """``(factory spec, kwargs, expected SHA-256)`` that the trust rule lets rebuild this artifact; imports
    nothing.

    A built-in factory (``BUILTIN_FACTORIES``) with checked arguments needs nothing. A model file runs only if
    the user names it (``model="file.py:make"``) or passes ``trust_model_code=True`` (then the manifest's path
    is used), and only with the SHA-256 recorded at compression. Every other spec is refused.
    """
    from sgsc_export.models import BUILTIN_FACTORIES, check_builtin_kwargs

    spec = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    factory, kwargs = spec.get("factory"), spec.get("kwargs") or {}
    if not isinstance(factory, str) or not isinstance(kwargs, dict):
        raise ArtifactError("manifest.json has no model.factory string and kwargs object; re-run "
                            "`sgsc compress`")
    if factory in BUILTIN_FACTORIES:
        if model is not None and model != factory:
            raise ModelError(f"the artifact was made with the built-in model {factory}; drop --model {model}")
        return factory, check_builtin_kwargs(factory, kwargs), None
    target, _, attr = factory.rpartition(":")
    if not target.endswith(".py") or not attr:
        raise ArtifactError(f"manifest.json names the model factory {factory!r}, which is neither a built-in "
                            f"model ({', '.join(sorted(BUILTIN_FACTORIES))}) nor a FILE.py:factory; refused, "
                            "nothing was imported (the artifact is not trusted)")
    digest = spec.get("source_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ArtifactError(f"manifest.json records no SHA-256 of the model file {target} "
                            "(model.source_sha256 is null), so it cannot be checked and will not run; re-run "
                            "`sgsc compress --model FILE.py:factory`, which records it")
    if model is None and not trust_model_code:
        raise ModelError(f"this artifact's model is user code ({factory}); it runs only if you name it: pass "
                         f"--model FILE.py:{attr} (the file it was compressed with), or --trust-model-code "
                         f"to run {target} (API: model=... or trust_model_code=True)")
    if model is not None:
        m_target, sep, m_attr = model.rpartition(":")
        if not sep or not m_target.endswith(".py") or not m_attr:
            raise ModelError(f"--model {model!r} must look like path/to/file.py:factory (the file the "
                             "artifact was compressed with)")
        return model, kwargs, digest
    return factory, kwargs, digest


def _identity_for_folded_batchnorm_(module: nn.Module, manifest: dict[str, Any], factory: str) -> None:
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


def rebuild_module(manifest: dict[str, Any], state: dict[str, torch.Tensor], *, model: str | None = None,
                   trust_model_code: bool = False) -> nn.Module:
    """Rebuild the deployable module from its factory (the trust rule of ``resolve_rebuild_factory``), the
    manifest's structural edits, and the state."""
    from sgsc_export.models import build_model

    factory, kwargs, digest = resolve_rebuild_factory(manifest, model, trust_model_code)
    module, _ = build_model(factory, kwargs, expected_sha256=digest)
    _identity_for_folded_batchnorm_(module, manifest, factory)
    expected = set(module.state_dict())
    if expected - set(state) or set(state) - expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        # a conv whose BatchNorm was folded gains a bias
        if missing or any(not k.endswith(".bias") for k in extra):
            raise ArtifactError(f"model.safetensors does not match the model: missing {missing}, unexpected "
                                f"{extra}")
    try:
        load_state_resizing_(module, state, trainable=False)
    except (RuntimeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"model.safetensors does not fit {factory}: {str(exc).splitlines()[0][:160]}; "
                            "re-run `sgsc compress`") from None
    module.eval()
    return module
