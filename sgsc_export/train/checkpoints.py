"""Checkpoints of a compression run: written atomically, read back without unpickling, checked for shape.

A checkpoint holds everything ``--resume`` needs to continue bit for bit (float state, model, optimiser,
generator, train state, config, preservation set). It is read with ``weights_only=True`` and its structure is
checked before any of it is used; a file that is not one is an ``ArtifactError``, one line.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from sgsc_export._io import write_atomic
from sgsc_export.errors import ArtifactError
from sgsc_export.train.loop import TrainState

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic ``torch.save``: never a half-written checkpoint, Ctrl-C included."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_atomic(path, buf.getvalue())


def _is_tensor_dict(d: Any) -> bool:
    return isinstance(d, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in d.items())


def _checkpoint_problem(ckpt: Any) -> str | None:
    """What is wrong with the structure of a loaded checkpoint (None: it has the shape ``compress``
    writes)."""
    if not isinstance(ckpt, dict):
        return f"it holds a {type(ckpt).__name__}, not a dict"
    expected = {"float_state", "model_state", "optimizer", "generator", "train_state", "config",
                "preservation"}
    if set(ckpt) != expected:
        return f"its keys are {sorted(map(str, ckpt))[:8]}, expected {sorted(expected)}"
    if not (_is_tensor_dict(ckpt["float_state"]) and _is_tensor_dict(ckpt["model_state"])):
        return "float_state/model_state are not state dicts"
    opt = ckpt["optimizer"]
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict)
            and isinstance(opt.get("param_groups"), list)):
        return "optimizer is not an optimizer state dict"
    gen = ckpt["generator"]
    if not (torch.is_tensor(gen) and gen.dtype == torch.uint8 and gen.dim() == 1):
        return "generator is not a generator state"
    if not isinstance(ckpt["config"], str):
        return "config is not JSON text"
    pres = ckpt["preservation"]
    if not (_is_tensor_dict(pres) and set(pres) == {"indices", "labels", "scores", "criteria"}
            and all(pres[k].dim() == 1 for k in ("indices", "criteria"))
            and not any(pres[k].is_floating_point() for k in ("indices", "labels", "criteria"))
            and pres["scores"].is_floating_point()):
        return "preservation is not the preservation set's indices, labels, scores and criteria"
    st = ckpt["train_state"]
    fields = {f.name for f in dataclasses.fields(TrainState)}
    if not isinstance(st, dict) or set(st) != fields:
        return "train_state has other fields than a TrainState"
    types = {"step": int, "best_preservation": (int, float), "best_alive": dict, "history": list,
             "restores": list, "dead_prev": dict, "removed": dict, "gamma_log_scale": (int, float),
             "kept": dict, "choice": dict}
    if any(isinstance(st[k], bool) or not isinstance(st[k], t) for k, t in types.items()):
        return "train_state has a field of the wrong type"
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in st["removed"].items()):
        return "train_state.removed is not layer name → channel count"
    snapshot_keys = {"step", "bits", "drop", "preservation", "met", "state", "removed", "dead_prev"}
    for snap in st["kept"].values():
        if not (isinstance(snap, dict) and set(snap) == snapshot_keys
                and _is_tensor_dict(snap["state"]) and isinstance(snap["removed"], dict)
                and isinstance(snap["dead_prev"], dict)):
            return "train_state.kept is not a set of kept models"
    return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint that ``save_checkpoint`` wrote, read with ``weights_only=True`` (no object is unpickled)
    and checked for the structure ``compress`` expects; anything else is an ``ArtifactError``, one line."""
    from sgsc_export.models import load_untrusted

    try:
        ckpt = load_untrusted(path)
    except ValueError as exc:
        raise ArtifactError(f"--resume: the checkpoint {path} cannot be read ({exc}); it is corrupt or not "
                            "an sgsc checkpoint: delete it and run without --resume") from None
    problem = _checkpoint_problem(ckpt)
    if problem is not None:
        raise ArtifactError(f"--resume: the checkpoint {path} is not an sgsc checkpoint ({problem}); delete "
                            "it and run without --resume")
    return ckpt
