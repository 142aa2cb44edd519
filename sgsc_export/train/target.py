"""The accuracy target (``max_drop``): a validation split held out of training, and the γ controller.

A user says how much of the task's headline metric they accept to lose against the float model — percentage
points of accuracy for classification (0.5), nats of loss for a language model (0.02; ``TASK_DEFAULTS``)
— and the compression strength follows from it. The measurement is a **validation split**: ``validation_size``
training samples (default ``min(10 %, 1000)``) drawn with the run's seed and held out of everything else the
run trains or selects on (the float reference, the preservation set, the compression steps). The test split is
never used to decide anything.

The controller treats γ (the weight of the size term Q) as a Lagrange multiplier of the constraint
``drop ≤ max_drop`` and moves it by dual ascent, in log space so that it stays positive and its steps are
relative. At every check (``restore_every`` steps, compression phase only)::

    d̄_t     = mean(drop_{t−W+1}, …, drop_t)          (the last W = SMOOTH_CHECKS checks of the phase)
    slack_t = clip((max_drop − d̄_t) / max_drop, −1, 1)
    u_{t+1} = clip(u_t + dual_lr · slack_t, log GAMMA_MIN_SCALE, log GAMMA_MAX_SCALE)
    γ_t     = config.gamma · warm-up_t · exp(u_t)

so γ grows while the validation drop has room (the model is compressed harder) and shrinks as soon as the drop
exceeds the target (the task loss and the preservation term win back). ``u`` starts at 0 (γ = ``gamma``);
``dual_lr = 0`` keeps γ fixed.

Why the mean over W checks (``smoothed``) and not the drop of one check: a compression-phase check measures
a model still training at the full learning rate with its bit-depths moving, on a split of a few hundred to
a thousand samples. One check's drop jumps by a point or more from one check to the next (the zoo's
ResNeXt on MNIST: 1.69, 1.12, −0.19, 0.94 pp at nearly the same size), so a controller that follows it
halves γ on one unlucky check, and a choice that keeps the smallest check under the target picks the
luckiest one: an MLP on digits kept a check at 0.35 pp between two at 1.04 and 0.69, and lost 1.94 pp on
test. The mean is what both the controller and the choice read; bit-depths only fall slowly between checks,
so the W models it averages are of nearly the same size.

At the end of the compression phase the run continues from the smallest
check that met the target (fewest stored bits, its smoothed drop within ``max_drop``; for classification a
check also has to keep the preservation set within ``max_drop`` of the float model's accuracy on it, again
over the last W checks, ``Target.candidate``), else from
the most accurate one (``train.loop: _keep, _choose``); the fine-tune phase (γ = 0, bits frozen) then
recovers accuracy at that size, and its last model is kept where it meets the target; where it does not,
the latest fine-tune check that met it is (``_fall_back``: the same size; on a split of a few hundred
samples one sample is a fraction of a point).

**Two candidates.** A compression check measures a model at the full learning rate with its bits still moving;
the fine-tune phase then recovers part of a point at the same size (the zoo's conv1d net on MNIST: −0.52 pp at
its chosen check, −0.9 to −1.9 pp after). So where a smaller check lies *near* the target (the fewest stored
bits among the checks within ``NEAR`` = 2 × ``max_drop``, preservation likewise: ``smallest_near``) and stores
at most ``TRIAL_GAIN`` = 0.95 of the chosen check's bits, it is fine-tuned first, the trial, with the chosen
check held back; otherwise the chosen check goes first with the most accurate check held back (where it is
another check, with a lower drop). Where the first fine-tuned model, or a fine-tune check of it, meets the
target, it is kept; else the held-back candidate is fine-tuned for a second phase of ``finetune_steps``
(``choice.retry``, the first attempt under ``choice.tried``; ``train.loop: _choose, _end_first_fine_tune``).
Every candidate is judged on the validation split after its fine-tune, like the single one before.

At the end the kept model's drop is measured once more on the
validation split and recorded with the target, the split (size, seed, source) and the γ trajectory in the
manifest; ``met`` is false when it exceeds
the target, and ``sgsc compress`` then says so in one line and exits 1 (the artifact is written and usable).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgsc_export.errors import ConfigError
from sgsc_export.tasks import Task

__all__ = ["GAMMA_MAX_SCALE", "GAMMA_MIN_SCALE", "SMOOTH_CHECKS", "Target", "hold_out",
           "next_scale", "smoothed", "total_steps", "validation_count"]

UNITS = {"classification": "pp", "language_model": "nats"}
GAMMA_MIN_SCALE, GAMMA_MAX_SCALE = 1e-3, 100.0
SMOOTH_CHECKS = 3  # W: the checks the controller and the choice average (see the module docstring)
_SPLIT_SALT = 0x5EED_7A12  # the validation draw's stream, apart from the run's other random streams


def validation_count(config: Any, n_train: int) -> int:
    """Samples the validation split takes: ``validation_size``, else ``min(10 %, 1000)``. A
    ``validation_size`` that would leave fewer than two training samples is a ``ConfigError``."""
    if config.validation_size is None:
        return min(n_train // 10, 1000)
    if config.validation_size > n_train - 2:
        raise ConfigError(f"validation_size={config.validation_size} leaves fewer than 2 of the training "
                          f"split's {n_train} samples to train on; give at most {max(0, n_train - 2)}, or 0 "
                          "for no validation split")
    return int(config.validation_size)


def hold_out(data: Any, config: Any) -> tuple[Any, dict[str, Any] | None]:
    """``data`` without its validation split, and the split (``x``, ``y``, ``indices`` into the original
    training split, ``keep``: the original indices of the samples left to train on, ``seed``, ``source``), or
    ``None`` when the split is empty. ``data`` itself is not changed.

    The user's own split (an npz's ``x_val``/``y_val``: samples the float weights never saw) is used as given
    and nothing is held out (``source`` "x_val"); ``validation_size = 0`` still turns the target off. Else
    ``validation_count`` samples are drawn from the training split (``source`` "held out").
    """
    if getattr(data, "x_val", None) is not None:
        if config.validation_size == 0:
            return data, None
        return data, {"x": data.x_val, "y": data.y_val, "indices": None,
                      "keep": np.arange(len(data.x_train)), "seed": config.seed, "source": "x_val"}
    n = validation_count(config, len(data.x_train))
    if n == 0:
        return data, None
    perm = np.random.default_rng([config.seed, _SPLIT_SALT]).permutation(len(data.x_train))
    val, keep = np.sort(perm[:n]), np.sort(perm[n:])
    split = {"x": data.x_train[val], "y": data.y_train[val], "indices": val, "keep": keep,
             "seed": config.seed, "source": "held out"}
    rest = copy.copy(data)
    rest.x_train, rest.y_train = data.x_train[keep], data.y_train[keep]
    return rest, split


@dataclass
class Target:
    """``max_drop`` of ``task``'s headline metric against the float model's ``float_value`` on the split."""

    max_drop: float
    task: Task
    x: np.ndarray
    y: np.ndarray
    float_value: float
    seed: int
    source: str = "held out"
    float_preservation: float | None = None  # the float model's preservation accuracy (classification)

    def candidate(self, drop: float, preservation_accuracy: float, scale: float = 1.0) -> bool:
        """A check the run may keep: it meets the target on the validation split and, for classification,
        keeps the preservation set within the same ``max_drop`` of the float model's accuracy on it (the gate
        checks that set too; on digits' 143 validation samples the smallest check at 0 pp had lost 1.55 pp on
        it and 1.11 pp on test). ``scale``: within ``scale × max_drop`` instead (the trial, ``NEAR``)."""
        if self.float_preservation is None:  # set for classification only (``compress``)
            return self.within(drop, scale)
        return self.within(drop, scale) and self.within(
            (self.float_preservation - preservation_accuracy) * 100.0, scale)

    def within(self, drop: float, scale: float = 1.0) -> bool:
        return bool(drop <= scale * self.max_drop + 1e-9)

    @property
    def metric(self) -> str:
        return "accuracy" if self.task.name == "classification" else "loss"

    @classmethod
    def against(cls, float_logits: np.ndarray, max_drop: float, task: Task, split: dict[str, Any]) -> Target:
        """The target for ``split`` (``hold_out``'s), measured against the float model's logits on it."""
        target = cls(max_drop, task, split["x"], split["y"], float("nan"), split["seed"], split["source"])
        target.float_value = target.value(float_logits)
        return target

    def value(self, logits: np.ndarray) -> float:
        if self.task.name == "classification":
            return self.task.accuracy(logits, self.y)
        return self.task.mean_loss(logits, self.y)

    def drop(self, value: float) -> float:
        """The loss against the float model in the target's unit (pp of accuracy or nats)."""
        if self.task.name == "classification":
            return (self.float_value - value) * 100.0
        return value - self.float_value

    def record(self, kept_value: float, trajectory: list[list[float]]) -> dict[str, Any]:
        drop = self.drop(kept_value)
        return {"max_drop": self.max_drop, "unit": UNITS[self.task.name], "metric": self.metric,
                "validation": {"n": int(len(self.y)), "seed": self.seed, "source": self.source},
                "float": self.float_value, "kept": kept_value, "drop": drop,
                "met": self.within(drop), "gamma_trajectory": trajectory}


def next_scale(u: float, drop: float, max_drop: float, dual_lr: float) -> float:
    """One dual-ascent step of ``u = log(γ / gamma)`` (see the module docstring)."""
    slack = (max_drop - drop) / max(max_drop, 1e-12)
    slack = min(1.0, max(-1.0, slack))
    return min(math.log(GAMMA_MAX_SCALE), max(math.log(GAMMA_MIN_SCALE), u + dual_lr * slack))


def smoothed(history: list[dict[str, Any]], key: str, value: float, finetune: bool) -> float:
    """The mean of ``value`` (this check's) and ``key`` of the last ``SMOOTH_CHECKS − 1`` checks of the same
    phase in ``history`` (fewer at the phase's start)."""
    same = [r[key] for r in history if r.get("finetune") == finetune and key in r]
    window = [*same[max(0, len(same) - SMOOTH_CHECKS + 1):], value]
    return float(sum(window) / len(window))


def total_steps(config: Any, state: Any = None) -> int:
    """The run's steps: compression, fine-tune, and a second fine-tune where the first candidate missed the
    target (``train.loop: _end_first_fine_tune``, ``state.choice["retry"]``); with no ``state``, the most a
    run can take."""
    retry = state is None or bool(state.choice.get("retry"))
    return config.steps + config.finetune_steps * (2 if retry else 1)
