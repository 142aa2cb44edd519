"""Built-in models, and loading a user's own from ``file.py:factory``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgsc_export.errors import ModelError

__all__ = ["BUILTIN_FACTORIES", "build_model", "check_builtin_kwargs", "default_factory", "default_kwargs",
           "digits_cnn", "load_untrusted", "load_weights", "mnist_cnn", "resolve_factory"]


def digits_cnn(num_classes: int = 10, width: int = 32) -> nn.Module:
    """A small CNN for 1×8×8 digits: channels (w, 2w, 2w); 58k weights at the default w = 32.

    Deliberately wider than 8×8 digits need: self-compression starts over-parameterised and learns the size
    (it keeps about 15–30 channels a layer at 4–7 bits, about 9 KiB of weights).
    """
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * w * 2 * 2, num_classes),
    )


def mnist_cnn(num_classes: int = 10) -> nn.Module:
    """The SGSC paper's MNIST CNN: Conv5×5 1→32, Conv5×5 32→32, BN, MaxPool, Conv3×3 32→64, Conv3×3 64→64, BN,
    MaxPool, Linear 576→10 (ReLU after each convolution)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(),
        nn.Conv2d(32, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(576, num_classes),
    )


_DEFAULTS = {"digits": "sgsc_export.models:digits_cnn", "mnist": "sgsc_export.models:mnist_cnn",
             "names": "sgsc_export.charlm:char_transformer", "text": "sgsc_export.charlm:char_transformer"}

# The only factories an artifact may name without the user naming a model file (the trust rule,
# docs/ARTIFACT.md): factory → {argument: (lowest, highest)}. Arguments are JSON integers in these ranges and
# nothing else, so a manifest cannot make a built-in factory allocate a huge model (the largest allowed is a
# few hundred MB). A built-in factory's name is a stable identifier recorded in manifests, not an import path:
# ``sgsc_export.charlm`` names the module ``sgsc_export.models.charlm`` (``_BUILTIN_MODULES``).
_BUILTIN_MODULES = {"sgsc_export.charlm": "sgsc_export.models.charlm"}

BUILTIN_FACTORIES: dict[str, dict[str, tuple[int, int]]] = {
    "sgsc_export.models:digits_cnn": {"num_classes": (1, 10_000), "width": (1, 512)},
    "sgsc_export.models:mnist_cnn": {"num_classes": (1, 10_000)},
    "sgsc_export.charlm:char_transformer": {"vocab_size": (1, 65_536), "context": (1, 2048),
                                            "n_embd": (1, 512), "n_head": (1, 64), "n_layer": (1, 12)},
}


def default_kwargs(data: Any) -> dict[str, Any]:
    """The built-in model's factory arguments for a data set: its classes, or its vocabulary and context."""
    if getattr(data, "task", "classification") == "language_model":
        return {"vocab_size": data.num_classes, "context": data.context}
    return {"num_classes": data.num_classes}


def default_factory(dataset: str) -> str:
    if dataset not in _DEFAULTS:
        raise ModelError(f"no built-in model for dataset {dataset!r}; pass --model FILE.py:FACTORY")
    return _DEFAULTS[dataset]


def check_builtin_kwargs(spec: str, kwargs: dict[str, Any]) -> dict[str, int]:
    """``kwargs`` of the built-in factory ``spec``, each a JSON integer in its range; anything else is
    refused."""
    allowed = BUILTIN_FACTORIES[spec]
    for key, value in kwargs.items():
        if key not in allowed:
            raise ModelError(f"model.kwargs: {spec} takes no argument {key!r} (it takes "
                             f"{', '.join(allowed)}); the manifest is corrupt, re-run `sgsc compress`")
        lo, hi = allowed[key]
        if type(value) is not int or not lo <= value <= hi:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ModelError(f"model.kwargs[{key!r}] of {spec} must be an integer in [{lo}, {hi}], got "
                             f"{shown}; the manifest is corrupt, re-run `sgsc compress`")
    return dict(kwargs)


def resolve_factory(spec: str,
                    expected_sha256: str | None = None) -> tuple[Callable[..., nn.Module], str | None]:
    """``package.module:function`` or ``path/to/file.py:function`` → (callable, sha256 of the file or None).

    Only for a spec the user named (the command line's ``--model``, the API's ``model=``) or a built-in: it
    imports and runs the file. With ``expected_sha256`` the file runs only if its bytes have that SHA-256 (the
    bytes hashed are the bytes executed).
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ModelError(f"model spec {spec!r} must look like path/to/file.py:factory")
    digest = None
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelError(f"model file {path} does not exist")
            source = path.read_bytes()
            digest = hashlib.sha256(source).hexdigest()
            if expected_sha256 is not None and digest != expected_sha256:
                raise ModelError(f"model file {path} has SHA-256 {digest[:12]}…, not the "
                                 f"{expected_sha256[:12]}… recorded at compression; name the file the "
                                 "artifact was made with")
            name = f"_sgsc_user_model_{digest}"
            if name in sys.modules:
                module = sys.modules[name]
            else:
                spec_ = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec_)  # type: ignore[arg-type]
                sys.modules[name] = module  # before running it, as importlib does (dataclasses look it up)
                try:
                    code = compile(source, str(path), "exec")
                    exec(code, module.__dict__)  # noqa: S102 - the user named it
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(_BUILTIN_MODULES.get(target, target))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load model file {target}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelError(f"{target} has no callable {attr!r}; name a function that returns an nn.Module")
    return fn, digest


def build_model(spec: str, kwargs: dict[str, Any] | None = None,
                expected_sha256: str | None = None) -> tuple[nn.Module, str | None]:
    """The module ``spec(**kwargs)`` and the SHA-256 of its file; ``spec`` is one the user named, or a
    built-in."""
    fn, digest = resolve_factory(spec, expected_sha256)
    try:
        model = fn(**(kwargs or {}))
    except Exception as exc:
        raise ModelError(f"model factory {spec} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model factory {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model, digest


def _why(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def load_untrusted(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` of a file nobody vouches for: no object is unpickled, torch's
    warnings stay off the user's screen, and any failure is one ``ValueError`` line (never torch's advice to
    retry with ``weights_only=False``, which would run the file's code)."""
    import pickle
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ValueError("it holds Python objects that weights_only=True refuses to unpickle (a pickle, "
                             "not tensors); nothing in it was run") from None
        except Exception as exc:  # noqa: BLE001 - truncated, empty, not a torch file
            raise ValueError(_why(exc)) from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict saved with ``torch.save``; never unpickles arbitrary objects (weights_only=True).

    The file must hold a dict of tensors (or ``{"state_dict": {...}}``) whose names and shapes are the
    model's; an empty, truncated or foreign file, or a NaN/inf weight, is a one-line ``ModelError``.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {p} does not exist")

    if p.stat().st_size == 0:
        raise ModelError(f"weights file {p} is empty (0 bytes); save the model's state_dict with torch.save")
    try:
        state = load_untrusted(p)
    except ValueError as exc:
        raise ModelError(f"cannot load weights {p}: {exc}; it must be a state_dict saved with "
                         "torch.save") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v)
                                              for k, v in state.items()):
        raise ModelError(f"weights file {p} holds a {type(state).__name__}, not a state dict (parameter name "
                         "→ tensor); save model.state_dict() with torch.save")
    bad = next((k for k, v in state.items()
                if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ModelError(f"weights file {p}: {bad} holds NaN or infinite values")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelError(f"weights file {p} does not match the model: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}{' …' if len(missing) > 3 or len(unexpected) > 3 else ''}")
    shape = next((k for k, v in state.items() if v.shape != own[k].shape), None)
    if shape is not None:
        raise ModelError(f"weights file {p}: {shape} has shape {tuple(state[shape].shape)}, the model's is "
                         f"{tuple(own[shape].shape)}")
    try:
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - anything else load_state_dict refuses
        raise ModelError(f"cannot load weights {p} into the model: {_why(exc)}") from None
