"""What ``compress`` refuses before it works, each with one line: the user's model and data (``check_inputs``,
before any float training), and a checkpoint to resume from (``check_checkpoint_fits``, ``check_state_fits``).

The data's own checks (shapes, dtypes, NaN/inf, label range) are in
:class:`~sgsc_export.datasets.images.Split`; the checkpoint's structure is checked where it is read
(``sgsc_export.train.loop.load_checkpoint``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sgsc_export.config import CompressConfig
from sgsc_export.errors import ArtifactError, ConfigError, DataError, ModelError
from sgsc_export.method.nn import is_quantized, twin_class
from sgsc_export.tasks import Task, get_task
from sgsc_export.train.preservation_set import criteria_names
from sgsc_export.train.target import total_steps

__all__ = ["check_checkpoint_fits", "check_inputs", "check_state_fits", "first_line"]


def first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters of it), for a one-line error."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit]}" if text else type(exc).__name__


def _layer_names(model: nn.Module) -> list[str]:
    """Names of the layers ``prepare_`` quantises (the names ``exclude`` may hold)."""
    return [n for n, m in model.named_modules() if n and (twin_class(m) is not None or is_quantized(m))]


def check_inputs(model: nn.Module, data: Any, config: CompressConfig) -> None:
    """Refuse, with one line, what would fail later (or silently mislead): before any float training.

    * a layer to compress exists, and every ``config.exclude`` name is one of the model's layers;
    * the model runs on a probe batch of ``x_train`` and returns one tensor of finite float logits,
      ``[batch, classes]`` (a language model: ``[batch, positions, vocab]``) with an output for every label;
    * the preservation set fits in the training split.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    task = get_task(getattr(data, "task", "classification"))
    names = _layer_names(model)
    if not names:
        raise ModelError("the model has no Conv1d/Conv2d/Linear layer to compress (or all were excluded)")
    unknown = [n for n in config.exclude if n not in names]
    if unknown:
        shown = ", ".join(names[:30]) + (f", … ({len(names)} in all)" if len(names) > 30 else "")
        raise ConfigError(f"--exclude {unknown[0]!r} is not a layer of the model; its Conv/Linear/Embedding "
                          f"layers are: {shown}")
    if not set(names) - set(config.exclude):
        raise ModelError("the model has no Conv1d/Conv2d/Linear layer to compress (or all were excluded)")

    n = min(len(data.x_train), 8)
    probe = torch.as_tensor(np.ascontiguousarray(data.x_train[:n]))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:  # noqa: BLE001 - the user's forward on the user's data: a mismatch
        raise ModelError("the model cannot run on the data: a batch of x_train of shape "
                         f"{tuple(probe.shape)} ({probe.dtype}) fails with {first_line(exc)}; give x in the "
                         "model's input layout, [samples, *input_shape]") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the model's forward returns a {type(out).__name__}, not a tensor; it must return "
                         "one tensor of logits (return only the logits, e.g. out[0] or out['logits'])")
    if not out.is_floating_point():
        raise ModelError(f"the model's forward returns a {out.dtype} tensor; it must return float logits")
    lm = task.name == "language_model"
    want = f"[{n}, {probe.shape[1]}, vocab]" if lm else f"[{n}, classes]"
    if out.dim() != (3 if lm else 2) or out.shape[0] != n or (lm and out.shape[1] != probe.shape[1]):
        raise ModelError(f"the model returns shape {tuple(out.shape)} for a batch of x_train of shape "
                         f"{tuple(probe.shape)}; a {task.name.replace('_', ' ')} must return logits {want}")
    if out.shape[-1] < data.num_classes:
        if lm:
            raise DataError(f"the vocabulary has {data.num_classes} symbols but the model returns "
                            f"{out.shape[-1]} logits per position; build it with vocab_size >= "
                            f"{data.num_classes}")
        raise DataError(f"the labels go up to {data.num_classes - 1} but the model has {out.shape[-1]} "
                        "outputs; labels must be class indices below the model's output count")
    if not bool(torch.isfinite(out).all()):
        raise ModelError("the model returns NaN or infinite logits on the first training samples; check its "
                         "weights")
    if config.preservation_size is not None and getattr(data, "x_preservation", None) is None \
            and config.preservation_size > len(data.x_train):
        raise ConfigError(f"preservation_size={config.preservation_size} is larger than the training split "
                          f"({len(data.x_train)} samples); allowed [1, {len(data.x_train)}]")


def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], path: Path | None) -> None:
    """The checkpoint's model state names this model's tensors, each no larger than the model's own (channels
    removed during training only shrink a tensor)."""
    own = model.state_dict()
    if set(state) != set(own):
        odd = sorted(set(state) ^ set(own))[:3]
        raise ArtifactError(f"--resume: the checkpoint {path} holds other tensors than the model (e.g. "
                            f"{odd}); delete it and run without --resume")
    for key, value in state.items():
        mine = own[key]
        if value.dim() != mine.dim() or any(a > b for a, b in zip(value.shape, mine.shape)) \
                or value.dtype != mine.dtype:
            raise ArtifactError(f"--resume: the checkpoint {path} has {key} of shape {tuple(value.shape)} "
                                f"({value.dtype}); the model's is {tuple(mine.shape)} ({mine.dtype}); delete "
                                "it and run without --resume")


def check_checkpoint_fits(ckpt: dict[str, Any], path: Path | None, data: Any, config: CompressConfig,
                           task: Task) -> None:
    """The checkpoint's step and preservation set are possible for this run and data (indices, labels,
    criteria)."""
    step = ckpt["train_state"].get("step")
    total = total_steps(config)  # the most a run takes (a trial's retry included)
    pres = ckpt["preservation"]
    idx, labels, criteria = (pres[k].numpy() for k in ("indices", "labels", "criteria"))
    fixed = getattr(data, "x_preservation", None)
    n = len(data.x_train)
    bad = None
    if not 0 <= step <= total:
        bad = f"step {step} is outside [0, {total}]"
    elif not len(idx) == len(labels) == len(criteria) or len(idx) == 0:
        bad = "the preservation arrays differ in length"
    elif fixed is not None and idx[0] < 0:
        if len(idx) != len(fixed) or not (idx == -1).all():
            bad = "the fixed preservation set does not match --preservation-file"
    elif int(idx.min()) < 0 or int(idx.max()) >= n:
        bad = f"preservation indices outside the training split's {n} samples"
    elif not np.array_equal(labels, data.y_train[idx]):
        bad = "the preservation labels differ from the training split's"
    if bad is None and (int(criteria.min()) < 0 or int(criteria.max()) >= len(criteria_names(task))):
        bad = "unknown preservation criteria"
    if bad is not None:
        raise ArtifactError(f"--resume: the checkpoint {path} does not fit this run ({bad}); delete it and "
                            "run without --resume")
