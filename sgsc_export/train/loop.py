"""The loops: float reference training, and compression with restore, checkpoints and an optional fine-tune.

Compression trains weights at ``lr`` and (b, e) in their own Adam group at ``lr_bits``/``eps_bits`` with no
weight decay. Every ``restore_every`` steps the preservation accuracy is measured on the whole preservation
set; when it falls more than τ below its best, a fraction of the zero-bit channels of the layers that lost
channels since the best are revived (inside ``torch.no_grad()``, on the parameter's data — never into a leaf
that autograd tracks). A checkpoint of everything needed to continue — model, optimiser, step, generator,
history — is written atomically every ``checkpoint_every`` steps; ``resume`` continues it bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sgsc_export.artifact.rebuild import load_state_resizing_
from sgsc_export.config import CompressConfig
from sgsc_export.errors import ModelError
from sgsc_export.method.graph import Link
from sgsc_export.method.nn import quantized_layers
from sgsc_export.method.objective import sgsc_loss, size_term, stored_size_bits
from sgsc_export.method.pruning import Plan, refresh_in_alive_, remove_dead_channels_, revive_, slice_like
from sgsc_export.tasks import CLASSIFICATION, Task
from sgsc_export.train.checks import first_line
from sgsc_export.train.target import Target, next_scale, smoothed, total_steps

__all__ = ["NEAR", "NORM_SAMPLES", "TRIAL_GAIN", "TrainState", "accuracy", "compress_loop",
           "norm_calibration_indices", "predict", "recalibrate_norms_", "train_float"]


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Logits of ``model`` in eval mode, float32 numpy.

    The input is copied with canonical strides first: numpy may give a size-1 channel axis a stride that
    makes torch see a channels-last tensor and pick another convolution kernel, which changes the last bits
    of the result. With the copy, the same values always give the same logits.
    """
    was = model.training
    model.eval()
    xt = torch.as_tensor(x).clone(memory_format=torch.contiguous_format)
    out = [model(xt[s : s + batch_size]) for s in range(0, len(xt), batch_size)]
    model.train(was)
    return torch.cat(out).numpy().astype(np.float32)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean()) if len(y) else float("nan")


def _progress(total: int, desc: str, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, initial=initial, leave=False, dynamic_ncols=True)


def _forward(model: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    """``model(x)`` in a training loop; the user's model failing there is one line naming the batch, not a
    traceback (``check_inputs`` ran it once in eval mode already, so this is a training-only failure)."""
    try:
        return model(x)
    except Exception as exc:  # noqa: BLE001 - the user's forward
        hint = ""
        if len(x) == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            hint = ("; a BatchNorm layer cannot train on a batch of one sample: change the batch size, the "
                    "number of training samples or --preservation-size (at least 2)")
        raise ModelError(f"the model failed in {what} on a batch of shape {tuple(x.shape)}: "
                         f"{first_line(exc, 200)}{hint}") from None


def train_float(model: nn.Module, x: np.ndarray, y: np.ndarray, config: CompressConfig,
                progress: bool = False, task: Task = CLASSIFICATION) -> None:
    """Train the float reference model in place: Adam, ``float_epochs`` epochs, cosine learning rate."""
    g = torch.Generator().manual_seed(config.seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    steps_per_epoch = max(1, int(np.ceil(len(xt) / config.batch_size)))
    total = config.float_epochs * steps_per_epoch
    if total == 0:
        return
    opt = torch.optim.Adam(model.parameters(), lr=config.float_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    model.train()
    with _progress(total, "float", progress) as bar:
        for _ in range(config.float_epochs):
            perm = torch.randperm(len(xt), generator=g)
            for s in range(0, len(xt), config.batch_size):
                idx = perm[s : s + config.batch_size]
                xb, yb = task.trim(xt[idx], yt[idx])
                loss = task.loss(_forward(model, xb, "float training"), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


@dataclass
class TrainState:
    """What the compression loop carries between steps and across a checkpoint."""

    step: int = 0
    best_preservation: float = -1.0
    best_alive: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    restores: list[dict[str, Any]] = field(default_factory=list)
    dead_prev: dict[str, list[bool]] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    gamma_log_scale: float = 0.0  # u = log(γ / gamma), the max_drop controller's state (train.target)
    # the compression phase's candidates (``_keep``): role → {"step", "bits", "drop", "state", "removed",
    # "dead_prev"}; in the checkpoint, so that a resumed run keeps what the uninterrupted one would
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    choice: dict[str, Any] = field(default_factory=dict)  # what was kept and why (the manifest's target)


def _param_groups(model: nn.Module, config: CompressConfig) -> list[dict[str, Any]]:
    layers = quantized_layers(model).values()
    b_params = [layer.b for layer in layers]
    e_params = [layer.e for layer in layers]
    be_ids = {id(p) for p in b_params + e_params}
    if not config.learn_bits:  # fixed-bit QAT: b is a constant, only e learns
        for p in b_params:
            p.requires_grad_(False)
        b_params = []
    weights = [p for p in model.parameters() if id(p) not in be_ids]
    groups = [{"params": weights, "lr": config.lr, "weight_decay": config.weight_decay}]
    no_decay = {"eps": config.eps_bits, "weight_decay": 0.0}
    if config.lr_exponent is None:
        groups.append({"params": b_params + e_params, "lr": config.lr_bits, **no_decay})
    else:
        groups.append({"params": b_params, "lr": config.lr_bits, **no_decay})
        groups.append({"params": e_params, "lr": config.lr_exponent, **no_decay})
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, config: CompressConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(_param_groups(model, config))


@torch.no_grad()
def _reset_moments(optimizer: torch.optim.Optimizer, layers: dict[str, nn.Module],
                   revived: dict[str, torch.Tensor]) -> None:
    """Forget Adam's moments of revived bit-depths, so the momentum that killed them does not at once
    again."""
    for name, idx in revived.items():
        st = optimizer.state.get(layers[name].b)
        for key in ("exp_avg", "exp_avg_sq"):
            if st and key in st:
                st[key].view(-1)[idx] = 0.0


def _cosine_lr(config: CompressConfig, step: int) -> float:
    """Weights' learning rate at ``step``: a cosine from ``lr`` to ``lr · lr_min_factor`` per phase
    (stateless)."""
    if step < config.steps:
        start, length = 0, config.steps
    else:  # a fine-tune phase: the first, or the retry after a trial (``_choose``), each its own cosine
        length = max(1, config.finetune_steps)
        start = config.steps + (step - config.steps) // length * length
    t = (step - start) / max(1, length)
    lo = config.lr * config.lr_min_factor
    return float(lo + (config.lr - lo) * 0.5 * (1 + np.cos(np.pi * t)))


# training samples whose batch statistics re-estimate BatchNorm's running statistics before each check
NORM_SAMPLES = 1024


def norm_calibration_indices(n: int) -> np.ndarray:
    """The training samples ``recalibrate_norms_`` reads: ``NORM_SAMPLES`` evenly spaced over the split (a
    split sorted by class still gives every class), the same at every check and in a resumed run."""
    return np.arange(0, n, max(1, n // NORM_SAMPLES))[:NORM_SAMPLES]


@torch.no_grad()
def recalibrate_norms_(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                       task: Task) -> bool:
    """Re-estimate the running statistics of every BatchNorm left in float (one that no convolution folds:
    after a concatenation, before its convolution in a pre-activation block) on ``x``, in place; False where
    the model has none.

    A check measures the model in eval mode, on running statistics that an exponential average (momentum
    0.1) collected while the quantised weights moved under them: on the zoo's DenseNet (BatchNorm after each
    concatenation) the checks of one run read 60, 44, 14 and 44 pp of validation drop for a model whose
    batch statistics were fine, the γ controller fell to 1/40 of its start, and the run ended at 4 bits a
    weight with 4.5 pp of room left. The statistics are recomputed as the plain average over ``x``'s batches
    (momentum ``None``), as quantisation-aware training does before it evaluates; the model's mode and each
    layer's momentum are restored.
    """
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or len(x) == 0:
        return False
    was = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for s in range(0, len(x), batch_size):
        xb, _ = task.trim(x[s : s + batch_size], y[s : s + batch_size])
        if len(xb) > 1:  # a batch of one has no variance
            model(xb)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was)
    return True


def _alive_counts(model: nn.Module) -> dict[str, int]:
    return {n: int(layer.channel_alive().sum()) for n, layer in quantized_layers(model).items()}


def _prune_during_training(model: nn.Module, links: dict[str, Link], optimizer: torch.optim.Optimizer,
                           config: CompressConfig, state: TrainState) -> torch.optim.Optimizer:
    """Remove channels dead at this check and the previous one; carry the optimiser state over, sliced."""
    layers = quantized_layers(model)
    only = {}
    for name, layer in layers.items():
        dead = ~layer.channel_alive()
        prev = state.dead_prev.get(name)
        if prev is not None and len(prev) == len(dead):
            only[name] = dead & torch.tensor(prev, dtype=torch.bool)
    old_params = dict(model.named_parameters())
    plan: Plan = {}
    removed = remove_dead_channels_(model, links, only, plan)
    if removed:
        new_opt = make_optimizer(model, config)
        for g_new, g_old in zip(new_opt.param_groups, optimizer.param_groups):
            g_new["lr"] = g_old["lr"]
        for name, p in model.named_parameters():
            old = optimizer.state.get(old_params[name])
            if old:
                new_opt.state[p] = {k: (slice_like(v, plan[name]) if name in plan and torch.is_tensor(v)
                                        and v.shape == old_params[name].shape else v) for k, v in old.items()}
        optimizer = new_opt
        refresh_in_alive_(model, links)
        for name, n in removed.items():
            state.removed[name] = state.removed.get(name, 0) + n
    state.dead_prev = {name: (~layer.channel_alive()).tolist()
                       for name, layer in quantized_layers(model).items()}
    return optimizer


def _snapshot(model: nn.Module, state: TrainState, bits: float, drop: float, preservation: float,
              met: bool) -> dict[str, Any]:
    """A check's model and what the choice reads of it; ``met``: the check alone (not the mean of the last
    checks) meets the target (``Target.candidate``), which a fine-tune fallback to it requires."""
    return {"step": state.step, "bits": float(bits), "drop": float(drop), "preservation": float(preservation),
            "met": bool(met),
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "removed": dict(state.removed), "dead_prev": {k: list(v) for k, v in state.dead_prev.items()}}


def _keep(model: nn.Module, state: TrainState, bits: float, drop: float, met: bool,
          preservation: float, met_alone: bool, near: bool = False) -> None:
    """Remember this compression-phase check's model where it is a better candidate than the one held for its
    role: ``smallest_met`` (the fewest stored bits among the checks that met the target, ``met``:
    ``Target.candidate``), ``smallest_near`` (the fewest among those within ``NEAR`` × the target, ``near``:
    the trial ``_choose`` may fine-tune first) and ``most_accurate`` (the lowest drop; ties: fewer bits)."""
    kept = state.kept
    best = kept.get("most_accurate")
    roles = []
    if met and ("smallest_met" not in kept or bits < kept["smallest_met"]["bits"]):
        roles.append("smallest_met")
    if near and ("smallest_near" not in kept or bits < kept["smallest_near"]["bits"]):
        roles.append("smallest_near")
    if best is None or drop < best["drop"] or (drop == best["drop"] and bits < best["bits"]):
        roles.append("most_accurate")
    if roles:  # one copy of the model, shared by the roles it wins (it is never changed in place)
        snap = _snapshot(model, state, bits, drop, preservation, met_alone)
        kept.update(dict.fromkeys(roles, snap))


def _load_snapshot(model: nn.Module, links: dict[str, Link], state: TrainState, snap: dict[str, Any],
                   config: CompressConfig) -> torch.optim.Optimizer:
    """Put a kept candidate back into ``model`` (its channels may have been removed since); a fresh optimiser
    for the parameters it made."""
    load_state_resizing_(model, snap["state"])
    state.removed = dict(snap["removed"])
    state.dead_prev = {k: list(v) for k, v in snap["dead_prev"].items()}
    refresh_in_alive_(model, links)
    return make_optimizer(model, config)


def _describe(role: str, snap: dict[str, Any]) -> dict[str, Any]:
    return {"compression": role, "compression_step": snap["step"], "bits": snap["bits"],
            "validation_drop": snap["drop"]}


def _choose(model: nn.Module, links: dict[str, Link], state: TrainState, optimizer: torch.optim.Optimizer,
            config: CompressConfig) -> torch.optim.Optimizer:
    """End of the compression phase: continue with the smallest model that met the target, else the most
    accurate one. The fine-tune phase then trains it to its end (its learning rate annealed): the model kept
    is the fine-tuned one, not re-chosen on the validation split (a choice among checks on a few hundred
    samples would pick the luckiest one, and often the one not fine-tuned at all) unless it ends past the
    target (``_fall_back``, then ``_end_first_fine_tune``).

    With a fine-tune phase, two candidates: the one fine-tuned first, and the one held back for a second
    phase where the first ends past the target (``state.kept["retry"]``, its role in
    ``state.choice["pending"]``). The trial (``smallest_near``: the fewest bits within ``NEAR`` × the target,
    where it stores at most ``TRIAL_GAIN`` of the smallest met check's) goes first, the smallest met check
    after it; without a trial the smallest met check goes first, the most accurate check after it (where it is
    another check, with a lower drop)."""
    kept = state.kept
    role = "smallest_met" if "smallest_met" in kept else "most_accurate"
    snap = kept.get(role)
    near, best = kept.get("smallest_near"), kept.get("most_accurate")
    state.kept = {}
    if snap is None:
        return optimizer
    second: tuple[str, dict[str, Any]] | None = None
    if config.finetune_steps and near is not None and near["bits"] <= TRIAL_GAIN * snap["bits"]:
        second, role, snap = (role, snap), "smallest_near", near
    elif (config.finetune_steps and role == "smallest_met" and best is not None
          and best["step"] != snap["step"] and best["drop"] < snap["drop"]):
        second = ("most_accurate", best)
    state.choice = _describe(role, snap)
    if second is not None:
        state.choice["pending"] = second[0]
        state.kept["retry"] = second[1]
    if role == "smallest_met" and snap["met"]:  # the fine-tune phase's first model that meets the target
        state.kept["finetune_met"] = snap  # (``_fall_back``), where the check alone met it
    if snap["step"] != state.step:
        optimizer = _load_snapshot(model, links, state, snap, config)
    return optimizer


def _fall_back(model: nn.Module, links: dict[str, Link], state: TrainState, optimizer: torch.optim.Optimizer,
               config: CompressConfig) -> tuple[torch.optim.Optimizer, bool]:
    """End of the fine-tune phase, its last model past the target: keep the latest fine-tune check that met it
    (the same size: bits are frozen), if one did and it keeps the preservation set at least as well as the
    last model. A fallback never trades the hard samples the gate checks for the validation split: the zoo's
    GRU on digits fell back to a check 4.4 pp down on them (the bool: whether it fell back). The fine-tuned
    model is kept whenever it meets
    the target; only where it does not is the run's result a check it would otherwise have trained past (on
    digits' 143 validation samples, one sample is 0.7 pp: the README's default run lost two in its last
    steps)."""
    snap = state.kept.pop("finetune_met", None)
    if snap is None or snap["preservation"] < state.history[-1]["preservation_accuracy"]:
        return optimizer, False
    state.choice = {**state.choice, "finetune_fallback_step": snap["step"],
                    "finetune_fallback_drop": snap["drop"]}
    return _load_snapshot(model, links, state, snap, config), True


def _end_first_fine_tune(model: nn.Module, links: dict[str, Link], state: TrainState,
                         optimizer: torch.optim.Optimizer, config: CompressConfig,
                         met: bool) -> torch.optim.Optimizer:
    """End of the first fine-tune phase, with a candidate held back (``_choose``): keep what it fine-tuned
    where its last model, or a fine-tune check of it (``_fall_back``), meets the target; else put the
    held-back candidate in and fine-tune it for a second phase (``state.choice["retry"]``: the run takes
    ``finetune_steps`` more; the first attempt is under ``choice["tried"]``)."""
    last = state.history[-1]
    finetuned = {"finetuned_drop": last["validation_drop"],
                 "finetuned_preservation_accuracy": last["preservation_accuracy"]}
    if not met:
        optimizer, met = _fall_back(model, links, state, optimizer, config)
    role, second = state.choice.pop("pending"), state.kept.pop("retry")
    if met:
        state.kept = {}
        return optimizer
    tried = {k: state.choice[k] for k in ("compression", "compression_step", "bits", "validation_drop")}
    state.choice = {**_describe(role, second), "tried": [{**tried, **finetuned}], "retry": True}
    state.kept = {"finetune_met": second} if role == "smallest_met" and second["met"] else {}
    return _load_snapshot(model, links, state, second, config)


NEAR = 2.0  # a compression check within NEAR × max_drop may be the trial that ``_choose`` fine-tunes first,
TRIAL_GAIN = 0.95  # where it stores at most this fraction of the safe candidate's bits

# the largest teacher-logit table kept in memory; above it the teacher runs on every batch instead
TEACHER_TABLE_BYTES = 256 * 2**20


def teacher_table(teacher: nn.Module, x: torch.Tensor, config: CompressConfig, task: Task,
                  steps: int) -> torch.Tensor | None:
    """The frozen teacher's logits for every training sample, computed once, in chunks of the training batch
    size.

    Indexing the table gives what ``teacher(x[idx])`` gives (eval mode: a sample's logits do not depend on its
    batch), so the distillation term costs one pass over the data instead of one teacher forward per step
    (``benchmarks/teacher_table.py`` measures the saving).
    ``None`` where it would not pay (the run sees no more samples than the table would hold), would not fit
    (``TEACHER_TABLE_BYTES``), or the task reshapes batches (``Task.per_sample_logits``).
    """
    bs = config.batch_size
    if not task.per_sample_logits or len(x) == 0 or len(x) >= steps * bs:
        return None
    with torch.no_grad():
        first = teacher(x[:bs])
        if len(x) * first[0].numel() * first.element_size() > TEACHER_TABLE_BYTES:
            return None
        return torch.cat([first] + [teacher(x[i:i + bs]) for i in range(bs, len(x), bs)])


def compress_loop(
    model: nn.Module,
    links: dict[str, Link],
    n_start: int,
    x: np.ndarray,
    y: np.ndarray,
    x_pres: np.ndarray,
    y_pres: np.ndarray,
    config: CompressConfig,
    *,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    generator: torch.Generator,
    checkpoint: Any = None,
    progress: bool = False,
    teacher: nn.Module | None = None,
    task: Task = CLASSIFICATION,
    target: Target | None = None,
) -> tuple[TrainState, torch.optim.Optimizer]:
    """Run compression steps ``state.step .. steps + finetune_steps`` on a prepared model, in place.

    ``checkpoint(state, optimizer)`` is called every ``checkpoint_every`` steps (the caller decides what to
    save). Pruning during training replaces the optimiser; the one in use at the end is ``state``'s caller's
    to fetch through the return value.
    ``teacher`` is the float reference (eval mode) for the optional distillation term; ``task`` scores the
    predictions (loss, preservation accuracy); ``target`` (``sgsc_export.train.target``), when given, steers γ
    from the validation drop at every check.
    """
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    xp, yp = torch.as_tensor(x_pres), torch.as_tensor(y_pres)
    fp32_bits = 32 * n_start
    total = total_steps(config, state)
    layers = quantized_layers(model)
    distill = teacher is not None and config.distill > 0
    table = teacher_table(teacher, xt, config, task, total - state.step) if distill else None
    cal = torch.as_tensor(norm_calibration_indices(len(xt)))
    x_cal, y_cal = xt[cal], yt[cal]
    model.train()
    refresh_in_alive_(model, links)
    with _progress(total, "compress", progress, initial=state.step) as bar:
        while state.step < total:
            finetune = state.step >= config.steps
            optimizer.param_groups[0]["lr"] = _cosine_lr(config, state.step)
            for layer in layers.values():
                layer.b.requires_grad_(not finetune)
            idx = torch.randint(len(xt), (config.batch_size,), generator=generator)
            n_pres = min(config.preservation_batch_size, len(xp))
            pidx = torch.randint(len(xp), (n_pres,), generator=generator)
            xb, yb = task.trim(xt[idx], yt[idx])
            xpb, ypb = task.trim(xp[pidx], yp[pidx])
            pres_logits = None
            if config.lam > 0 and xb.shape[1:] == xpb.shape[1:]:
                # one forward for both batches: the quantised weights are computed once per step, not twice
                both = _forward(model, torch.cat([xb, xpb]), "compression")
                logits, pres_logits = both[: len(xb)], both[len(xb):]
            else:
                logits = _forward(model, xb, "compression")
                if config.lam > 0:
                    pres_logits = _forward(model, xpb, "compression (preservation batch)")
            teacher_logits = None
            if table is not None:
                teacher_logits = table[idx]
            elif distill:
                with torch.no_grad():
                    teacher_logits = teacher(xb)
            q = size_term(model, n_start)
            warm = min(1.0, (state.step + 1) / max(1.0, config.gamma_warmup * config.steps))
            gamma = 0.0 if finetune else config.gamma * warm * math.exp(state.gamma_log_scale)
            parts = sgsc_loss(logits, yb, q, gamma, config.lam, pres_logits, ypb,
                              teacher_logits, config.distill, config.distill_temperature, task)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            optimizer.step()
            with torch.no_grad():
                for layer in layers.values():
                    layer.b.clamp_(-1.0, config.max_bits)
            refresh_in_alive_(model, links)
            state.step += 1
            bar.update(1)

            if state.step % config.restore_every == 0 or state.step in (config.steps, total):
                recalibrate_norms_(model, x_cal, y_cal, config.batch_size, task)
                pres_acc = task.accuracy(predict(model, xp), y_pres)
                bits = stored_size_bits(model)
                record = {
                    "step": state.step, "loss": parts.total.item(), "task_loss": parts.task, "q": parts.q,
                    "preservation_loss": parts.preservation,
                    "train_accuracy": task.batch_accuracy(logits, yb),
                    "preservation_accuracy": pres_acc, "quantized_bits": bits,
                    "avg_bits": bits / n_start, "ratio": bits / fp32_bits, "alive": _alive_counts(model),
                    "finetune": finetune, "gamma": gamma,
                }
                if target is not None:
                    drop = target.drop(target.value(predict(model, target.x)))
                    record["validation_drop"] = drop
                    if not finetune:  # the controller and the choice read the mean of the last checks
                        mean_drop = smoothed(state.history, "validation_drop", drop, finetune)
                        mean_pres = smoothed(state.history, "preservation_accuracy", pres_acc, finetune)
                        record["smoothed_drop"] = mean_drop
                        _keep(model, state, bits, mean_drop, target.candidate(mean_drop, mean_pres), pres_acc,
                              target.candidate(drop, pres_acc), target.candidate(mean_drop, mean_pres, NEAR))
                        state.gamma_log_scale = next_scale(state.gamma_log_scale, mean_drop, target.max_drop,
                                                           config.dual_lr)
                    elif target.candidate(drop, pres_acc) and state.step < total:
                        state.kept["finetune_met"] = _snapshot(model, state, bits, drop, pres_acc, True)
                state.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", pres=f"{pres_acc:.3f}",
                                bits=f"{record['avg_bits']:.2f}", ratio=f"{record['ratio']:.4f}")
                if pres_acc >= state.best_preservation:
                    state.best_preservation = pres_acc
                    state.best_alive = record["alive"]
                elif (not finetune and config.restore_fraction > 0 and state.step < config.steps
                      and pres_acc < state.best_preservation - config.restore_tolerance):
                    # (not at the compression phase's last check: a revived channel would have no step left
                    # to learn its bits, and the check's model is the one the run may continue from)
                    lost = [n for n, k in record["alive"].items() if k < state.best_alive.get(n, k)]
                    revived = revive_(model, lost, config.restore_fraction, config.restore_bits, generator)
                    if revived:
                        _reset_moments(optimizer, layers, revived)
                        refresh_in_alive_(model, links)
                        state.restores.append({"step": state.step, "preservation_accuracy": pres_acc,
                                               "best": state.best_preservation,
                                               "revived": {n: len(i) for n, i in revived.items()}})
            if not finetune and state.step % config.prune_every == 0:
                optimizer = _prune_during_training(model, links, optimizer, config, state)
                layers = quantized_layers(model)
            if target is not None and state.step == config.steps:
                optimizer = _choose(model, links, state, optimizer, config)
                layers = quantized_layers(model)
            if target is not None and state.step == total and config.finetune_steps:
                last = state.history[-1]  # the check at the phase's last step
                met = target.candidate(last["validation_drop"], last["preservation_accuracy"])
                if "pending" in state.choice:
                    optimizer = _end_first_fine_tune(model, links, state, optimizer, config, met)
                    total = total_steps(config, state)
                    bar.total = total
                elif not met:
                    optimizer, _ = _fall_back(model, links, state, optimizer, config)
                layers = quantized_layers(model)
            due = state.step % config.checkpoint_every == 0 and state.step < total
            if checkpoint is not None and due:
                checkpoint(state, optimizer)
    for layer in layers.values():
        layer.b.requires_grad_(True)
    model.eval()
    return state, optimizer
