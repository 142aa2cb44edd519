"""``compress``: float reference → preservation set → BN folding → quantised training → pruning → artifact."""

from __future__ import annotations

import contextlib
import copy
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sgsc_export import __version__
from sgsc_export._outputs import check_out_dir
from sgsc_export.artifact.compressed import CompressedModel
from sgsc_export.artifact.format import FORMAT, FORMAT_VERSION
from sgsc_export.artifact.rebuild import load_state_resizing_
from sgsc_export.config import CompressConfig
from sgsc_export.datasets.images import Split
from sgsc_export.errors import ArtifactError, ConfigError, ModelError, SGSCError
from sgsc_export.method.coverage import float_weights, float_weights_line
from sgsc_export.method.graph import find_links, fold_batchnorm_, trace
from sgsc_export.method.heads import remove_dead_heads_
from sgsc_export.method.nn import layer_kind, prepare_, quantized_layers
from sgsc_export.method.objective import stored_size_bits
from sgsc_export.method.pruning import refresh_in_alive_, remove_dead_channels_
from sgsc_export.tasks import get_task
from sgsc_export.train.checkpoints import load_checkpoint, save_checkpoint
from sgsc_export.train.checks import check_checkpoint_fits, check_inputs, check_state_fits, first_line
from sgsc_export.train.freeze import freeze
from sgsc_export.train.loop import TrainState, accuracy, compress_loop, make_optimizer, predict, train_float
from sgsc_export.train.preservation_set import preservation_entry, preservation_samples, select_preservation
from sgsc_export.train.target import Target, hold_out

__all__ = ["compress", "reinitialise_", "train_reference"]


def _seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def _checkpoint_errors(path: Path | None) -> Iterator[None]:
    """A checkpoint that passed ``load_checkpoint``'s structure check but does not fit this model: one
    line."""
    try:
        yield
    except SGSCError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"--resume: the checkpoint {path} does not fit this model ({first_line(exc)}); "
                            "delete it and run without --resume") from None


@contextlib.contextmanager
def _write_errors(out: Path | None) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ArtifactError(f"cannot write the artifact to {out}: {first_line(exc)}") from None


def _masked_reason(model: nn.Module, name: str, layer: nn.Module, links: dict[str, Any],
                   blocked: dict[str, str]) -> str:
    """Why ``layer``'s zero-bit channels stay in the model as masked channels (one line)."""
    if name in blocked:
        return blocked[name]
    kind = layer_kind(layer)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else None
    if kind in ("GRU", "LSTM"):
        return "rows of a recurrent layer (the recurrence reads every gate row)"
    if kind == "MultiheadAttention" or isinstance(parent, nn.MultiheadAttention):
        return "rows of an attention layer (removed only as a whole head: its q, k and v rows)"
    if kind == "Embedding":
        return "rows of an embedding (every token keeps its vector)"
    partners = next((link.producers for link in links.values() if name in link.producers[1:]
                     or name == link.producer and link.partners), None)
    if partners is not None:
        others = ", ".join(p for p in partners if p != name)
        return (f"summed at a residual add with {others}: a channel leaves only where all of them have it at "
                "zero bits")
    if name in links:
        return "removal was refused: it would have changed the output"
    return "no producer → consumer chain was found for it"


def _prepare(model: nn.Module, config: CompressConfig, example: torch.Tensor):
    model.eval()
    gm = trace(model)
    folded = fold_batchnorm_(model, gm, example)
    left_float = prepare_(model, config)
    if not quantized_layers(model):
        raise ModelError("the model has no Conv1d/Conv2d/Linear layer to compress (or all were excluded)")
    blocked: dict[str, str] = {}
    links = find_links(model, blocked=blocked)
    n_start = sum(layer.weight.numel() for layer in quantized_layers(model).values())
    return folded, left_float, links, blocked, n_start, gm is not None


def reinitialise_(model: nn.Module) -> list[str]:
    """Re-draw every parameter that a module knows how to initialise, from the global RNG, in module order.

    torch's layers spell it two ways: ``reset_parameters`` (Conv, Linear, norms) and ``_reset_parameters``
    (``nn.MultiheadAttention``, whose packed ``in_proj_weight`` the public name alone would miss, so that a
    vision transformer kept the weights drawn when it was built, from whatever the RNG held then). Returns the
    parameters no such method owns (e.g. a positional embedding a user's module holds itself): they keep the
    values the model was built with.
    """
    covered: set[int] = set()
    for m in model.modules():
        reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in m.parameters(recurse=False))
    return [n for n, p in model.named_parameters() if id(p) not in covered]


def train_reference(model: nn.Module, data: Split | Any, config: CompressConfig,
                    progress: bool = False) -> nn.Module:
    """The float reference as ``compress`` trains it: re-initialised from ``config.seed`` (so that the seed
    alone fixes the run, whatever the caller's random state), then trained on the training split. In place."""
    _seed(config.seed)
    reinitialise_(model)
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
    ``pretrained`` the float reference is used as given; otherwise it is re-initialised from ``config.seed``
    and trained first on the training split.
    """
    config = config or CompressConfig()
    if not isinstance(config, CompressConfig):
        raise ConfigError(f"config must be a CompressConfig, got {type(config).__name__}")
    task = get_task(getattr(data, "task", "classification"))
    config = config.for_task(task.name)  # λ and max_drop where left at None: the manifest records the values
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_out_dir(out)
    check_inputs(model, data, config)
    data, validation = hold_out(data, config)  # held out of everything below (train.target)
    config = config.schedule(len(data.x_train))  # concrete step counts: the manifest records these
    ckpt_path = out / "checkpoints" / "last.pt" if out is not None else None
    ckpt = load_checkpoint(ckpt_path) if (resume and ckpt_path is not None and ckpt_path.is_file()) else None
    if ckpt is not None and ckpt.get("config") != config.to_json():
        raise ConfigError(f"--resume: the checkpoint in {out} was made with another configuration; "
                          "resume with the same options, or start afresh without --resume")
    if ckpt is not None:
        check_checkpoint_fits(ckpt, ckpt_path, data, config, task)
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
        pres = select_preservation(model, data, config, task)
    x_pres, y_pres = preservation_samples(data, pres)
    float_test = predict(model, data.x_test)
    float_pres = predict(model, x_pres)
    target = None
    if validation is not None:
        float_val = predict(model, validation["x"])
        target = Target.against(float_val, config.max_drop, task, validation)
        if task.name == "classification" and len(y_pres):
            target.float_preservation = task.accuracy(float_pres, y_pres)
        if pretrained and validation["source"] == "held out" and not resume:
            print(f"warning: the accuracy target is measured on {len(validation['y'])} samples held out of "
                  "x_train, which the given float weights were trained on, so their drop is overstated; "
                  "add x_val/y_val (samples the weights never saw) to the npz", file=sys.stderr)

    teacher = None
    if config.distill > 0:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    # 3. fold, quantise, train
    folded, left_float, links, blocked, n_start, traced = _prepare(
        model, config, torch.as_tensor(np.ascontiguousarray(data.x_train[:2])))
    floats = float_weights(model)  # not quantised: stored at 32 bits, counted in the all-weights ratio
    n_float = sum(e["count"] for e in floats)
    warning = float_weights_line(floats)
    if warning is not None:
        print(warning, file=sys.stderr)
    start_channels = {n: int(layer.weight.shape[0]) for n, layer in quantized_layers(model).items()}
    optimizer = make_optimizer(model, config)
    state = TrainState()
    if ckpt is not None:
        with _checkpoint_errors(ckpt_path):
            check_state_fits(model, ckpt["model_state"], ckpt_path)
            for snap in ckpt["train_state"]["kept"].values():
                check_state_fits(model, snap["state"], ckpt_path)
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

    state, optimizer = compress_loop(model, links, n_start, data.x_train, data.y_train, x_pres, y_pres,
                                     config, optimizer=optimizer, state=state, generator=g,
                                     checkpoint=checkpoint, progress=progress, teacher=teacher, task=task,
                                     target=target)
    # the last checkpoint holds the trained model *before* the physical removal below: resuming a finished run
    # then redoes the removal exactly as the uninterrupted run did (same channels_removed, same heads), and
    # the artifact comes out byte for byte the same
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
        raise ModelError("removing zero-bit channels changed the model's output; this is a bug, please "
                         "report it")
    for attn_name, n in heads_removed.items():
        hd = model.get_submodule(attn_name).head_dim
        for proj in ("q", "k", "v"):
            removed[f"{attn_name}.{proj}"] = removed.get(f"{attn_name}.{proj}", 0) + n * hd
    bits_total = stored_size_bits(model)
    float_bits = 32 * sum(e["count"] for e in float_weights(model))  # a float consumer may have lost inputs
    deploy, quant = freeze(model)
    comp_test = predict(deploy, data.x_test)
    comp_pres = predict(deploy, x_pres)
    held: dict[str, np.ndarray] = {}
    target_record = None
    pres_out = dict(pres)  # the artifact's preservation indices count in the caller's training split
    if validation is not None and len(pres["indices"]) and pres["indices"][0] >= 0:
        pres_out["indices"] = validation["keep"][np.asarray(pres["indices"])]
    if target is not None:
        comp_val = predict(deploy, validation["x"])
        trajectory = [[r["step"], r["gamma"]] for r in state.history if not r["finetune"]]
        target_record = {**target.record(target.value(comp_val), trajectory), "choice": state.choice}
        held = {"x_validation": validation["x"], "y_validation": validation["y"],
                "logits_validation": comp_val, "logits_float_validation": float_val}

    layers = []
    for name, layer in quantized_layers(model).items():
        bits = quant[f"{name}.bits"].to(torch.int64)
        layers.append({
            "name": name, "kind": layer_kind(layer),
            "weight_shape": list(layer.weight.shape),
            "bits": bits.tolist(), "exponents": quant[f"{name}.exponent"].tolist(),
            "channels_before": start_channels[name], "channels_kept": int(layer.weight.shape[0]),
            "channels_removed": removed.get(name, 0) + state.removed.get(name, 0),
            "channels_masked": int((bits == 0).sum()),
            "masked_reason": (_masked_reason(model, name, layer, links, blocked) if int((bits == 0).sum())
                              else None),
            "stored_bits": int((bits.double() * layer.weights_per_channel().double()).sum()),
        })

    def scores(test: np.ndarray, pres_logits: np.ndarray) -> dict[str, float]:
        if task.name == "classification":
            return {"test_accuracy": accuracy(test, data.y_test),
                    "preservation_accuracy": accuracy(pres_logits, y_pres)}
        return {**task.metrics(test, data.y_test, "test"),
                **task.metrics(pres_logits, y_pres, "preservation")}

    metrics = {"float": scores(float_test, float_pres), "compressed": scores(comp_test, comp_pres)}
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
                    "num_classes": data.num_classes,
                    "n_validation": 0 if validation is None else int(len(validation["y"])),
                    "validation_seed": config.seed,
                    "validation_source": None if validation is None else validation["source"]},
        "target": target_record,
        "folded_batchnorm": [list(p) for p in folded],
        "float_layers": left_float,
        "float_weights": floats,
        "traced": traced,
        "links": {k: {"consumer": v.consumer, "through": v.through, "per_channel": v.per_channel,
                      **({"upstream": v.upstream} if v.upstream else {}),
                      **({"partners": v.partners} if v.partners else {}),
                      **({"other_consumers": [list(c) for c in v.other_consumers]} if v.other_consumers
                         else {})}
                  for k, v in links.items()},
        "layers": layers,
        "totals": {"weights_start": n_start, "fp32_bits": 32 * n_start, "quantized_bits": bits_total,
                   "ratio": bits_total / (32 * n_start), "float_weights": n_float, "float_bits": float_bits,
                   "weights_all": n_start + n_float, "fp32_bits_all": 32 * (n_start + n_float),
                   "ratio_all_weights": (bits_total + float_bits) / (32 * (n_start + n_float))},
        "metrics": metrics,
        "preservation": preservation_entry(pres_out, x_pres, y_pres, task),
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
        preservation={k: np.asarray(v) for k, v in pres_out.items()},
        eval={"x_test": data.x_test, "y_test": data.y_test,
              "x_preservation": x_pres, "y_preservation": y_pres,
              "logits_test": comp_test, "logits_preservation": comp_pres,
              "logits_float_test": float_test, "logits_float_preservation": float_pres, **held},
        # no wall-clock time here: history.json is part of the artifact, which identical runs reproduce
        # byte for byte
        history={"records": state.history, "restores": state.restores,
                 "removed_during_training": state.removed},
        _module=deploy,
    )
    if out is not None:
        with _write_errors(out):
            artifact.save(out)
    return artifact
