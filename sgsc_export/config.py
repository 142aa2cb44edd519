"""Typed, validated configuration of one compression run, serialisable to JSON with a version field.

Each field carries its own description in its metadata: ``help`` (the text of its command-line option) and
``range`` (a :class:`~sgsc_export._fields.Range`). ``check_ranges`` (``sgsc_export._fields``) is the one
place a range is checked, for this config and for the configs that reuse its fields (the pipeline's, through
``reuse``; the runtime checks' ``ValidateConfig``), so a bound and its error message are written once.
Torch-free: the CLI builds its options from it at ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from sgsc_export._fields import MAX_THREADS, Range, check_range, check_ranges, from_known_keys, option, reuse
from sgsc_export.errors import ConfigError

__all__ = ["CHECKS", "CONFIG_VERSION", "MAX_BITS", "MAX_STEPS", "MAX_THREADS", "SEED_MAX", "TASK_DEFAULTS",
           "CompressConfig", "Range", "check_range", "check_ranges", "from_known_keys", "option", "reuse"]

CONFIG_VERSION = 1


SEED_MAX = 2**32 - 1  # numpy's seed range; torch's is wider, numpy's is the binding one
MAX_STEPS = 10_000_000
MAX_BITS = 8.0

# the schedule's defaults, the same for every data set and model (``CompressConfig.schedule``)
DEFAULT_EPOCHS = 3.0
DEFAULT_MIN_STEPS = 400
DEFAULT_FINETUNE_FRACTION = 0.2
CHECKS = 12  # checks (validation drop, preservation accuracy) per compression phase

# The defaults that depend on the task (``CompressConfig.for_task``), one rule per task for every model and
# data set. ``max_drop``: the target's unit differs (pp of accuracy, nats of loss). ``lam``: a language
# model's preservation term is a per-token loss on a few hundred sequences, each drawn far more often than a
# training sequence; at λ = 1 it memorises them (names: preservation loss 1.72 against the float model's
# 2.08) and the held-out loss the target is measured on rises past it at the first check (validation 2.17
# against 2.02 at λ = 0.1, benchmarks/results/bench_select.md). A classifier's preservation set is what the
# gate checks, and λ = 1 keeps it (digits, MNIST: 100 % on every seed).
TASK_DEFAULTS: dict[str, dict[str, float]] = {
    "classification": {"max_drop": 0.5, "lam": 1.0},
    "language_model": {"max_drop": 0.02, "lam": 0.1},
}


_INT_STEPS = Range(1, MAX_STEPS, integer=True)
_POSITIVE_LR = Range(0.0, 10.0, lo_open=True)
_FRACTION = Range(0.0, 1.0)
_WEIGHT = Range(0.0, 1e3)
_BATCH = Range(1, 1_000_000, integer=True)


@dataclass
class CompressConfig:
    """Everything that shapes a compression run. The defaults are one rule for every data set and model
    (the README's "Defaults"); ``sgsc_export.presets`` holds earlier per-data-set settings as starting points.

    Schedule: ``steps``, ``finetune_steps``, ``restore_every`` and ``prune_every`` left at ``None`` follow
    from the training split's size (``schedule``): ``epochs`` epochs with at least ``min_steps`` steps, a
    fine-tune phase of ``finetune_fraction`` of that, ``CHECKS`` checks per compression phase.

    Quantiser: every channel starts at ``init_bits`` (a few bits, not 32: at 32 nothing can reach zero and
    nothing is ever pruned) and is kept in ``[0, max_bits]``. ``b`` and ``e`` train with Adam at ``lr_bits``,
    ``eps_bits`` (the self-compression paper's 0.5 and 1e-3) and no weight decay (``e`` at ``lr_exponent``
    when set); weights at ``lr``, decayed along a cosine to ``lr · lr_min_factor`` over the compression
    steps, and again over the fine-tune steps.

    With ``learn_bits`` False the bit-depths stay at ``init_bits`` (uniform quantisation-aware training with a
    learned per-channel exponent: the benchmark's fixed-bit baseline); nothing reaches zero bits, nothing is
    pruned.

    Objective: task loss + ``gamma`` · Q + ``lam`` · task loss on a preservation batch; γ ramps up linearly
    over the first ``gamma_warmup`` fraction of the compression steps.

    Restore: every ``restore_every`` steps the preservation accuracy is measured; when it is more than
    ``restore_tolerance`` below its best, ``restore_fraction`` of the zero-bit channels of the layers that
    lost channels since the best are revived at ``restore_bits``.
    """

    steps: int | None = option(None, "Compression steps (default: `epochs` epochs of the training split, at "
                               "least `min_steps`).", _INT_STEPS)
    epochs: float = option(DEFAULT_EPOCHS, "Length of the compression phase in epochs of the training split "
                           "(when --steps is not given).", Range(0.0, 100_000.0))
    min_steps: int = option(DEFAULT_MIN_STEPS, "Fewest compression steps whatever the data set's size (the "
                            "bit-depths need this many optimiser updates).", _INT_STEPS)
    batch_size: int = option(64, "Training batch size.", _BATCH)
    lr: float = option(1e-4, "Learning rate of the weights (fine-tuning trained weights: a tenth of a "
                       "from-scratch Adam rate).", _POSITIVE_LR)
    lr_min_factor: float = option(0.1, "End of the cosine decay, as a fraction of lr.", _FRACTION)
    weight_decay: float = option(0.0, "Weight decay of the weights.", _FRACTION)
    init_bits: float = option(6.0, "Starting bit-depth of every channel.",
                              Range(0.0, MAX_BITS, lo_open=True, hi_field="max_bits"))
    max_bits: float = option(8.0, "Largest bit-depth of a channel.", Range(1.0, MAX_BITS))
    learn_bits: bool = option(True, "Learn the bit-depths (false: fixed-bit quantisation-aware training).")
    lr_bits: float = option(0.5, "Learning rate of the bit-depths b.", _POSITIVE_LR)
    lr_exponent: float | None = option(0.05, "Learning rate of the exponents e (None: lr_bits). A step of "
                                       "0.05 changes a channel's scale by 3.5 %, one of 0.5 by 41 %.",
                                       _POSITIVE_LR)
    eps_bits: float = option(1e-3, "Adam's epsilon for b and e.", _POSITIVE_LR)
    gamma: float = option(0.5, "γ, weight of the size term Q (its start: the --max-drop controller moves "
                          "it).", _WEIGHT)
    gamma_warmup: float = option(0.0, "Fraction of the compression steps over which γ ramps up.", _FRACTION)
    lam: float | None = option(None, "λ, weight of the preservation loss (default: 1 for classification, "
                               "0.1 for a language model; 0 = plain self-compression).", _WEIGHT)
    distill: float = option(1.0, "κ, weight of distillation from the float reference (0 = off).", _WEIGHT)
    distill_temperature: float = option(2.0, "Temperature of the distillation.",
                                        Range(0.0, 100.0, lo_open=True))
    preservation_batch_size: int = option(16, "Preservation samples per step.", _BATCH)
    restore_every: int | None = option(None, "Steps between checks: validation drop (the γ controller), "
                                       f"preservation accuracy (restore events) (default: {CHECKS} checks "
                                       "per compression phase).", _INT_STEPS)
    restore_tolerance: float = option(0.02, "Preservation accuracy lost before a restore.", _FRACTION)
    restore_fraction: float = option(0.25, "Fraction of the zero-bit channels a restore revives.", _FRACTION)
    restore_bits: float = option(2.0, "Bit-depth of a revived channel.",
                                 Range(0.0, MAX_BITS, lo_open=True, hi_field="max_bits"))
    finetune_steps: int | None = option(None, "Steps with bits frozen, after compression (default: "
                                        "finetune_fraction × the compression steps).",
                                        Range(0, MAX_STEPS, integer=True))
    finetune_fraction: float = option(DEFAULT_FINETUNE_FRACTION, "Length of the fine-tune phase as a "
                                      "fraction of the compression steps (when --finetune-steps is not "
                                      "given).",
                                      Range(0.0, 10.0))
    prune_every: int | None = option(None, "Steps between removals of zero-bit channels (default: every "
                                     "second check).", _INT_STEPS)
    float_epochs: int = option(20, "Epochs of float reference training.", Range(0, 100_000, integer=True))
    float_lr: float = option(2e-3, "Learning rate of float reference training.", _POSITIVE_LR)
    preservation_size: int | None = option(None, "Samples in the preservation set (default min(10%, 1000)).",
                                           Range(1, 10_000_000, integer=True))
    preservation_budget: tuple[float, float, float] = option(
        (1 / 3, 1 / 3, 1 / 3), "Shares of the preservation set: uncertainty, saliency, diversity.")
    max_drop: float | None = option(
        None, "Largest loss of the task's headline metric against the float model on the validation split: "
        "percentage points of accuracy (default 0.5) or nats of loss for a language model (default 0.02).",
        Range(0.0, 100.0))
    validation_size: int | None = option(
        None, "Training samples held out as the validation split the target is measured on (default "
        "min(10%, 1000); 0: no split and no target).", Range(0, 10_000_000, integer=True))
    dual_lr: float = option(0.5, "Step of the γ controller: log γ moves by dual_lr · slack at each check "
                            "(0: γ fixed).", Range(0.0, 10.0))
    checkpoint_every: int = option(500, "Steps between checkpoints (what --resume continues from).",
                                   _INT_STEPS)
    exclude: tuple[str, ...] = option((), "Layer names to keep in float.")
    seed: int = option(0, "Seed: same seed, same artifact.", Range(0, SEED_MAX, integer=True))
    version: int = field(default=CONFIG_VERSION)

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"version={self.version!r} is not supported; this toolchain reads version "
                              f"{CONFIG_VERSION}")
        self.max_bits = _MAX_BITS_RANGE.check("max_bits", self.max_bits)  # first: two bounds depend on it
        check_ranges(self)
        budget = self.preservation_budget
        if (isinstance(budget, (str, bytes)) or not hasattr(budget, "__len__") or len(budget) != 3
                or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
                           for x in budget)):
            raise ConfigError(f"preservation_budget must be three finite numbers (uncertainty, saliency, "
                              f"diversity); got {budget!r}")
        self.preservation_budget = tuple(float(x) for x in budget)  # type: ignore[assignment]
        if min(self.preservation_budget) < 0 or sum(self.preservation_budget) <= 0:
            raise ConfigError(
                "preservation_budget must be three non-negative shares (uncertainty, saliency, diversity) "
                f"with a positive sum; got {self.preservation_budget!r}"
            )
        if not isinstance(self.exclude, (list, tuple)) or not all(isinstance(n, str) for n in self.exclude):
            raise ConfigError(f"exclude={self.exclude!r} must be a list of layer names")
        self.exclude = tuple(self.exclude)
        if not isinstance(self.learn_bits, bool):
            raise ConfigError(f"learn_bits={self.learn_bits!r} must be true or false")

    def schedule(self, n_train: int) -> CompressConfig:
        """This config with every step count concrete, for a training split of ``n_train`` samples.

        One rule for every data set and model, in epochs of the training split with a floor in optimiser
        steps (the learned bit-depths move at Adam's ``lr_bits`` per step whatever the data set's size)::

            steps          = max(min_steps, ⌈epochs · n_train / batch_size⌉)
            finetune_steps = ⌈finetune_fraction · steps⌉
            restore_every  = max(1, ⌊steps / CHECKS⌋),  prune_every = 2 · restore_every

        A value given explicitly is kept.
        """
        steps = self.steps
        if steps is None:
            steps = max(self.min_steps, math.ceil(self.epochs * n_train / self.batch_size))
            steps = min(steps, MAX_STEPS)
        finetune = self.finetune_steps
        if finetune is None:
            finetune = min(math.ceil(self.finetune_fraction * steps), MAX_STEPS)
        restore = self.restore_every if self.restore_every is not None else max(1, steps // CHECKS)
        prune = self.prune_every if self.prune_every is not None else 2 * restore
        return self.replace(steps=steps, finetune_steps=finetune, restore_every=restore, prune_every=prune)

    def for_task(self, task: str) -> CompressConfig:
        """This config with the task's defaults (``TASK_DEFAULTS``) where a field is ``None``; a value given
        explicitly is kept."""
        defaults = TASK_DEFAULTS[task]
        return self.replace(**{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preservation_budget"] = list(self.preservation_budget)
        d["exclude"] = list(self.exclude)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompressConfig:
        return from_known_keys(cls, d)

    def replace(self, **changes: Any) -> CompressConfig:
        return dataclasses.replace(self, **changes)


_MAX_BITS_RANGE = {f.name: f for f in dataclasses.fields(CompressConfig)}["max_bits"].metadata["range"]
