"""Typed, validated configuration of one compression run, serialisable to JSON with a version field."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from sgsc_export.errors import ConfigError

__all__ = ["CONFIG_VERSION", "MAX_STEPS", "SEED_MAX", "CompressConfig"]

CONFIG_VERSION = 1


SEED_MAX = 2**32 - 1  # numpy's seed range; torch's is wider, numpy's is the binding one
MAX_STEPS = 10_000_000


def _check(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> Any:
    """``value`` in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), a real number (an integer with ``integer``);
    returned as a plain ``int``/``float`` (numpy scalars included), so the config stays JSON-serialisable."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{name}={value!r} must be {'an integer' if integer else 'a number'}")
    value = int(value) if integer else float(value)
    ok = (value > lo if lo_open else value >= lo) and value <= hi  # NaN fails both, inf fails the upper bound
    if not ok:
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{name}={value!r} is out of range; allowed {bracket}{lo}, {hi}]")
    return value


@dataclass
class CompressConfig:
    """Everything that shapes a compression run. Defaults are the ones the README's benchmark measures.

    Quantiser: every channel starts at ``init_bits`` (a few bits, not 32: at 32 nothing can reach zero and
    nothing is ever pruned) and is kept in ``[0, max_bits]``. ``b`` and ``e`` train with Adam at ``lr_bits``,
    ``eps_bits`` (the self-compression paper's 0.5 and 1e-3) and no weight decay (``e`` at ``lr_exponent`` when
    set); weights at ``lr``, decayed
    along a cosine to ``lr · lr_min_factor`` over the compression steps, and again over the fine-tune steps.

    With ``learn_bits`` False the bit-depths stay at ``init_bits`` (uniform quantisation-aware training with a
    learned per-channel exponent: the benchmark's fixed-bit baseline); nothing reaches zero bits, nothing is pruned.

    Objective: task loss + ``gamma`` · Q + ``lam`` · task loss on a preservation batch; γ ramps up linearly over
    the first ``gamma_warmup`` fraction of the compression steps.

    Restore: every ``restore_every`` steps the preservation accuracy is measured; when it is more than
    ``restore_tolerance`` below its best, ``restore_fraction`` of the zero-bit channels of the layers that lost
    channels since the best are revived at ``restore_bits``.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    lr_min_factor: float = 0.1
    weight_decay: float = 0.0
    init_bits: float = 4.0
    max_bits: float = 8.0
    learn_bits: bool = True
    lr_bits: float = 0.5
    lr_exponent: float | None = None
    eps_bits: float = 1e-3
    gamma: float = 0.05
    gamma_warmup: float = 0.0
    lam: float = 1.0
    distill: float = 0.0
    distill_temperature: float = 2.0
    preservation_batch_size: int = 128
    restore_every: int = 100
    restore_tolerance: float = 0.02
    restore_fraction: float = 0.25
    restore_bits: float = 2.0
    finetune_steps: int = 0
    prune_every: int = 200
    float_epochs: int = 20
    float_lr: float = 2e-3
    preservation_size: int | None = None
    preservation_budget: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    checkpoint_every: int = 500
    exclude: tuple[str, ...] = ()
    seed: int = 0
    version: int = field(default=CONFIG_VERSION)

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"version={self.version!r} is not supported; this toolchain reads version {CONFIG_VERSION}")
        ints = {"steps": (1, MAX_STEPS), "finetune_steps": (0, MAX_STEPS), "float_epochs": (0, 100_000),
                "batch_size": (1, 1_000_000), "preservation_batch_size": (1, 1_000_000),
                "restore_every": (1, MAX_STEPS), "checkpoint_every": (1, MAX_STEPS), "prune_every": (1, MAX_STEPS),
                "seed": (0, SEED_MAX)}
        if self.preservation_size is not None:
            ints["preservation_size"] = (1, 10_000_000)
        for name, (lo, hi) in ints.items():
            setattr(self, name, _check(name, getattr(self, name), lo, hi, integer=True))
        self.max_bits = _check("max_bits", self.max_bits, 1.0, 8.0)
        reals = {"lr": (0.0, 10.0, True), "lr_bits": (0.0, 10.0, True), "eps_bits": (0.0, 10.0, True),
                 "float_lr": (0.0, 10.0, True), "weight_decay": (0.0, 1.0, False), "lr_min_factor": (0.0, 1.0, False),
                 "init_bits": (0.0, self.max_bits, True), "gamma": (0.0, 1e3, False), "gamma_warmup": (0.0, 1.0, False),
                 "lam": (0.0, 1e3, False), "distill": (0.0, 1e3, False), "distill_temperature": (0.0, 100.0, True),
                 "restore_tolerance": (0.0, 1.0, False), "restore_fraction": (0.0, 1.0, False),
                 "restore_bits": (0.0, self.max_bits, True)}
        if self.lr_exponent is not None:
            reals["lr_exponent"] = (0.0, 10.0, True)
        for name, (lo, hi, lo_open) in reals.items():
            setattr(self, name, _check(name, getattr(self, name), lo, hi, lo_open=lo_open))
        budget = self.preservation_budget
        if (isinstance(budget, (str, bytes)) or not hasattr(budget, "__len__") or len(budget) != 3
                or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in budget)):
            raise ConfigError(f"preservation_budget must be three finite numbers (uncertainty, saliency, diversity); "
                              f"got {budget!r}")
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

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preservation_budget"] = list(self.preservation_budget)
        d["exclude"] = list(self.exclude)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompressConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> CompressConfig:
        return dataclasses.replace(self, **changes)
