"""``compress``: float reference → preservation set → BN folding → quantised training → pruning → artifact."""

from __future__ import annotations

import contextlib
import copy
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sgsc_export import __version__
from sgsc_export._io import check_out_dir
from sgsc_export.artifact.compressed import FORMAT, FORMAT_VERSION, CompressedModel, freeze
from sgsc_export.config import CompressConfig
from sgsc_export.datasets.images import Split
from sgsc_export.errors import ArtifactError, ConfigError, DataError, ModelError, SGSCError
from sgsc_export.method.graph import find_links, fold_batchnorm_, trace
from sgsc_export.method.heads import remove_dead_heads_
from sgsc_export.method.nn import QUANTISABLE, is_quantized, prepare_, quantized_layers
from sgsc_export.method.objective import stored_size_bits
from sgsc_export.method.pruning import load_state_resizing_, refresh_in_alive_, remove_dead_channels_
from sgsc_export.preservation.images import CRITERIA, PreservationSetSelector, preservation_sha256
from sgsc_export.tasks import Task, get_task
from sgsc_export.train.loop import (
    TrainState,
    accuracy,
    compress_loop,
    load_checkpoint,
    make_optimizer,
    predict,
    save_checkpoint,
    train_float,
)

__all__ = ["check_inputs", "check_out_dir", "compress", "train_reference"]


def _seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _layer_names(model: nn.Module) -> list[str]:
    """Names of the layers ``prepare_`` quantises (the names ``exclude`` may hold)."""
    return [n for n, m in model.named_modules() if n and (type(m) in QUANTISABLE or is_quantized(m))]


def check_inputs(model: nn.Module, data: Split | Any, config: CompressConfig) -> None:
    """Refuse, with one line, what would fail later (or silently mislead): before any float training.

    * a layer to compress exists, and every ``config.exclude`` name is one of the model's layers;
    * the model runs on a probe batch of ``x_train`` and returns one tensor of finite float logits,
      ``[batch, classes]`` (a language model: ``[batch, positions, vocab]``) with an output for every label;
    * the preservation set fits in the training split.

    The data's own checks (shapes, dtypes, NaN/inf, label range) are in :class:`~sgsc_export.datasets.images.Split`.
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
        raise ConfigError(f"--exclude {unknown[0]!r} is not a layer of the model; its Conv/Linear/Embedding layers "
                          f"are: {shown}")
    if not set(names) - set(config.exclude):
        raise ModelError("the model has no Conv1d/Conv2d/Linear layer to compress (or all were excluded)")

    n = min(len(data.x_train), 8)
    probe = torch.as_tensor(np.ascontiguousarray(data.x_train[:n]))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:  # noqa: BLE001 - the user's forward, on the user's data: any failure is a mismatch
        raise ModelError(f"the model cannot run on the data: a batch of x_train of shape {tuple(probe.shape)} "
                         f"({probe.dtype}) fails with {_first_line(exc)}; give x in the model's input layout, "
                         "[samples, *input_shape]") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the model's forward returns a {type(out).__name__}, not a tensor; it must return one "
                         "tensor of logits (return only the logits, e.g. out[0] or out['logits'])")
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
                            f"{out.shape[-1]} logits per position; build it with vocab_size >= {data.num_classes}")
        raise DataError(f"the labels go up to {data.num_classes - 1} but the model has {out.shape[-1]} outputs; "
                        "labels must be class indices below the model's output count")
    if not bool(torch.isfinite(out).all()):
        raise ModelError("the model returns NaN or infinite logits on the first training samples; check its weights")
    if config.preservation_size is not None and getattr(data, "x_preservation", None) is None \
            and config.preservation_size > len(data.x_train):
        raise ConfigError(f"preservation_size={config.preservation_size} is larger than the training split "
                          f"({len(data.x_train)} samples); allowed [1, {len(data.x_train)}]")


@contextlib.contextmanager
def _checkpoint_errors(path: Path | None) -> Iterator[None]:
    """A checkpoint that passed ``load_checkpoint``'s structure check but does not fit this model: one line."""
    try:
        yield
    except SGSCError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"--resume: the checkpoint {path} does not fit this model ({_first_line(exc)}); "
                            "delete it and run without --resume") from None


@contextlib.contextmanager
def _write_errors(out: Path | None) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ArtifactError(f"cannot write the artifact to {out}: {_first_line(exc)}") from None


def _check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], path: Path | None) -> None:
    """The checkpoint's model state names this model's tensors, each no larger than the model's own (channels
    removed during training only shrink a tensor)."""
    own = model.state_dict()
    if set(state) != set(own):
        odd = sorted(set(state) ^ set(own))[:3]
        raise ArtifactError(f"--resume: the checkpoint {path} holds other tensors than the model (e.g. {odd}); "
                            "delete it and run without --resume")
    for key, value in state.items():
        mine = own[key]
        if value.dim() != mine.dim() or any(a > b for a, b in zip(value.shape, mine.shape)) \
                or value.dtype != mine.dtype:
            raise ArtifactError(f"--resume: the checkpoint {path} has {key} of shape {tuple(value.shape)} "
                                f"({value.dtype}); the model's is {tuple(mine.shape)} ({mine.dtype}); delete it and "
                                "run without --resume")


def _check_checkpoint_fits(ckpt: dict[str, Any], path: Path | None, data: Any, config: CompressConfig,
                           task: Task) -> None:
    """The checkpoint's step and preservation set are possible for this run and data (indices, labels, criteria)."""
    step = ckpt["train_state"].get("step")
    total = config.steps + config.finetune_steps
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
    if bad is None and (int(criteria.min()) < 0 or int(criteria.max()) >= len(_criteria(task))):
        bad = "unknown preservation criteria"
    if bad is not None:
        raise ArtifactError(f"--resume: the checkpoint {path} does not fit this run ({bad}); delete it and run "
                            "without --resume")


def _prepare(model: nn.Module, config: CompressConfig):
    model.eval()
    gm = trace(model)
    folded = fold_batchnorm_(model, gm)
    left_float = prepare_(model, config)
    if not quantized_layers(model):
        raise ModelError("the model has no Conv1d/Conv2d/Linear layer to compress (or all were excluded)")
    links = find_links(model)
    n_start = sum(layer.weight.numel() for layer in quantized_layers(model).values())
    return folded, left_float, links, n_start, gm is not None


def _criteria(task: Task) -> tuple[str, ...]:
    if task.name == "language_model":
        from sgsc_export.preservation.text import CRITERIA as TEXT_CRITERIA

        return (*TEXT_CRITERIA, "file")
    return CRITERIA


def _select_preservation(model: nn.Module, data: Any, config: CompressConfig, task: Task) -> dict[str, np.ndarray]:
    """The preservation set as indices into the training split (or -1: a fixed set from a file), its labels,
    per-sample scores and criterion of each member."""
    if task.name == "language_model":
        from sgsc_export.preservation.text import TextPreservationSelector

        if data.x_preservation is not None:
            n = len(data.x_preservation)
            return {"indices": np.full(n, -1, np.int64), "labels": data.y_preservation,
                    "scores": np.zeros((n, 3), np.float32), "criteria": np.full(n, 3, np.int8)}
        sel = TextPreservationSelector(config.preservation_size, config.preservation_budget,
                                       random_state=config.seed).fit(model, (data.x_train, data.y_train))
    else:
        sel = PreservationSetSelector(config.preservation_size, config.preservation_budget,
                                      random_state=config.seed).fit(model, (data.x_train, data.y_train))
    return {"indices": sel.selected_indices_, "labels": sel.labels(data.y_train),
            "scores": sel.scores_, "criteria": sel.criteria_}


def _preservation_samples(data: Any, pres: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if getattr(data, "x_preservation", None) is not None and len(pres["indices"]) and pres["indices"][0] < 0:
        return data.x_preservation, data.y_preservation
    return data.x_train[pres["indices"]], data.y_train[pres["indices"]]


def train_reference(model: nn.Module, data: Split | Any, config: CompressConfig, progress: bool = False) -> nn.Module:
    """The float reference as ``compress`` trains it: re-initialised from ``config.seed`` (so that the seed alone
    fixes the run, whatever the caller's random state), then trained on the training split. In place."""
    _seed(config.seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    train_float(model, data.x_train, data.y_train, config, progress,
                task=get_task(getattr(data, "task", "classification")))
    return model


def compress(
    model: nn.Module,
    data: Split | Any,
    config: CompressConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    model_spec: dict[str, Any] | None = None,
    pretrained: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> CompressedModel:
    """Compress ``model`` on ``data`` and return the artifact (also written to ``out_dir`` when given).

    ``model_spec`` (``{"factory": "module:fn" | "file.py:fn", "kwargs": {...}, "source_sha256": ...}``) is
    how the converters rebuild the architecture; without it the artifact cannot be exported. With
    ``pretrained`` the float reference is used as given; otherwise it is re-initialised from ``config.seed`` and
    trained first on the training split.
    """
    config = config or CompressConfig()
    if not isinstance(config, CompressConfig):
        raise ConfigError(f"config must be a CompressConfig, got {type(config).__name__}")
    task = get_task(getattr(data, "task", "classification"))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_out_dir(out)
    check_inputs(model, data, config)
    ckpt_path = out / "checkpoints" / "last.pt" if out is not None else None
    ckpt = load_checkpoint(ckpt_path) if (resume and ckpt_path is not None and ckpt_path.is_file()) else None
    if ckpt is not None and ckpt.get("config") != config.to_json():
        raise ConfigError(f"--resume: the checkpoint in {out} was made with another configuration; "
                          "resume with the same options, or start afresh without --resume")
    if ckpt is not None:
        _check_checkpoint_fits(ckpt, ckpt_path, data, config, task)
    g = _seed(config.seed)

    # 1. the float reference
    if ckpt is not None:
        with _checkpoint_errors(ckpt_path):
            model.load_state_dict(ckpt["float_state"])
    elif not pretrained:
        train_reference(model, data, config, progress)
    model.eval()
    float_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # 2. the preservation set, from the training split only
    if ckpt is not None:
        pres = {k: ckpt["preservation"][k].numpy() for k in ("indices", "labels", "scores", "criteria")}
    else:
        pres = _select_preservation(model, data, config, task)
    x_pres, y_pres = _preservation_samples(data, pres)
    float_test = predict(model, data.x_test)
    float_pres = predict(model, x_pres)

    teacher = None
    if config.distill > 0:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    # 3. fold, quantise, train
    folded, left_float, links, n_start, traced = _prepare(model, config)
    start_channels = {n: int(layer.weight.shape[0]) for n, layer in quantized_layers(model).items()}
    optimizer = make_optimizer(model, config)
    state = TrainState()
    if ckpt is not None:
        with _checkpoint_errors(ckpt_path):
            _check_state_fits(model, ckpt["model_state"], ckpt_path)
            load_state_resizing_(model, ckpt["model_state"])  # channels may have been removed during training
            optimizer = make_optimizer(model, config)
            optimizer.load_state_dict(ckpt["optimizer"])
            g.set_state(ckpt["generator"])
            state = TrainState(**ckpt["train_state"])
            with torch.no_grad():
                model.eval()
                model(torch.as_tensor(np.ascontiguousarray(data.x_train[:2])))

    def checkpoint(st: TrainState, opt: torch.optim.Optimizer) -> None:
        if ckpt_path is None:
            return
        with _write_errors(out):
            save_checkpoint(ckpt_path, {
                "float_state": float_state, "model_state": model.state_dict(), "optimizer": opt.state_dict(),
                "generator": g.get_state(), "train_state": st.__dict__, "config": config.to_json(),
                "preservation": {k: torch.as_tensor(v) for k, v in pres.items()},
            })

    state, optimizer = compress_loop(model, links, n_start, data.x_train, data.y_train, x_pres, y_pres, config,
                  optimizer=optimizer, state=state, generator=g, checkpoint=checkpoint, progress=progress,
                  teacher=teacher, task=task)
    # the last checkpoint holds the trained model *before* the physical removal below: resuming a finished run
    # then redoes the removal exactly as the uninterrupted run did (same channels_removed, same heads), and the
    # artifact comes out byte for byte the same
    checkpoint(state, optimizer)

    # 4. prune for real; removal must not change the output
    probe = torch.as_tensor(data.x_test[:256])
    with torch.no_grad():
        y_before = model(probe)
        removed = remove_dead_channels_(model, links)
        heads_removed = remove_dead_heads_(model)
        refresh_in_alive_(model, links)
        y_after = model(probe)
    if not torch.allclose(y_before, y_after, rtol=1e-5, atol=1e-5 * float(y_before.abs().max()) + 1e-6):
        raise ModelError("removing zero-bit channels changed the model's output; this is a bug, please report it")
    for attn_name, n in heads_removed.items():
        hd = model.get_submodule(attn_name).head_dim
        for proj in ("q", "k", "v"):
            removed[f"{attn_name}.{proj}"] = removed.get(f"{attn_name}.{proj}", 0) + n * hd
    bits_total = stored_size_bits(model)
    deploy, quant = freeze(model)
    comp_test = predict(deploy, data.x_test)
    comp_pres = predict(deploy, x_pres)

    layers = []
    for name, layer in quantized_layers(model).items():
        bits = quant[f"{name}.bits"].to(torch.int64)
        layers.append({
            "name": name, "kind": next(c for c in type(layer).__mro__ if c.__module__.startswith("torch.nn")).__name__,
            "weight_shape": list(layer.weight.shape),
            "bits": bits.tolist(), "exponents": quant[f"{name}.exponent"].tolist(),
            "channels_before": start_channels[name], "channels_kept": int(layer.weight.shape[0]),
            "channels_removed": removed.get(name, 0) + state.removed.get(name, 0), "channels_masked": int((bits == 0).sum()),
            "stored_bits": int((bits.double() * layer.weights_per_channel().double()).sum()),
        })
    if task.name == "classification":
        metrics = {
            "float": {"test_accuracy": accuracy(float_test, data.y_test), "preservation_accuracy": accuracy(float_pres, y_pres)},
            "compressed": {"test_accuracy": accuracy(comp_test, data.y_test), "preservation_accuracy": accuracy(comp_pres, y_pres)},
        }
    else:
        metrics = {
            "float": {**task.metrics(float_test, data.y_test, "test"), **task.metrics(float_pres, y_pres, "preservation")},
            "compressed": {**task.metrics(comp_test, data.y_test, "test"),
                           **task.metrics(comp_pres, y_pres, "preservation")},
        }
    spec = dict(model_spec or {})
    spec.setdefault("kwargs", {})
    spec.setdefault("source_sha256", None)
    spec.update({"input_shape": [1, *data.input_shape], "task": task.name, "num_classes": data.num_classes})
    if task.name != "classification":
        spec["input_dtype"] = "int64"
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": spec,
        "dataset": {"name": data.name, "n_train": len(data.x_train), "n_test": len(data.x_test),
                    "num_classes": data.num_classes},
        "folded_batchnorm": [list(p) for p in folded],
        "float_layers": left_float,
        "traced": traced,
        "links": {k: {"consumer": v.consumer, "through": v.through, "per_channel": v.per_channel} for k, v in links.items()},
        "layers": layers,
        "totals": {"weights_start": n_start, "fp32_bits": 32 * n_start, "quantized_bits": bits_total,
                   "ratio": bits_total / (32 * n_start)},
        "metrics": metrics,
        "preservation": {"size": len(pres["indices"]), "indices": pres["indices"].tolist(),
                         "sha256": preservation_sha256(x_pres, y_pres),
                         "criteria_counts": np.bincount(pres["criteria"], minlength=len(_criteria(task))).tolist(),
                         "criteria": list(_criteria(task))},
        "restores": state.restores,
        **({"language_model": {"vocab": data.vocab, "context": data.context, "heads_removed": heads_removed,
                               "preservation_source": data.preservation_source or "selected"}}
           if task.name == "language_model" else {}),
        "config": config.to_dict(), "seed": config.seed,
        "versions": {"sgsc_export": __version__, "torch": torch.__version__.split("+")[0],
                     "numpy": np.__version__, "python": platform.python_version()},
    }
    artifact = CompressedModel(
        manifest=manifest,
        state={k: v.detach().contiguous() for k, v in deploy.state_dict().items()},
        quant=quant,
        preservation={k: np.asarray(v) for k, v in pres.items()},
        eval={"x_test": data.x_test, "y_test": data.y_test, "x_preservation": x_pres, "y_preservation": y_pres,
              "logits_test": comp_test, "logits_preservation": comp_pres,
              "logits_float_test": float_test, "logits_float_preservation": float_pres},
        # no wall-clock time here: history.json is part of the artifact, which identical runs reproduce byte for byte
        history={"records": state.history, "restores": state.restores, "removed_during_training": state.removed},
        _module=deploy,
    )
    if out is not None:
        with _write_errors(out):
            artifact.save(out)
    return artifact
