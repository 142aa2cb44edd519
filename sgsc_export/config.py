"""Typed, validated configuration of one compression run, serialisable to JSON with a version field."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["CONFIG_VERSION", "CompressConfig"]

CONFIG_VERSION = 1


def _check(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{name}={value!r} is out of range; allowed {bracket}{lo}, {hi}]")


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
        for name in ("steps", "finetune_steps", "float_epochs"):
            _check(name, getattr(self, name), 0, 10_000_000)
        for name in ("batch_size", "preservation_batch_size", "restore_every", "checkpoint_every", "prune_every"):
            _check(name, getattr(self, name), 1, 10_000_000)
        for name in ("lr", "lr_bits", "eps_bits", "float_lr"):
            _check(name, getattr(self, name), 0.0, 10.0, lo_open=True)
        if self.lr_exponent is not None:
            _check("lr_exponent", self.lr_exponent, 0.0, 10.0, lo_open=True)
        _check("weight_decay", self.weight_decay, 0.0, 1.0)
        _check("lr_min_factor", self.lr_min_factor, 0.0, 1.0)
        _check("max_bits", self.max_bits, 1.0, 8.0)
        _check("init_bits", self.init_bits, 0.0, self.max_bits, lo_open=True)
        _check("gamma", self.gamma, 0.0, 1e3)
        _check("gamma_warmup", self.gamma_warmup, 0.0, 1.0)
        _check("lam", self.lam, 0.0, 1e3)
        _check("distill", self.distill, 0.0, 1e3)
        _check("distill_temperature", self.distill_temperature, 0.0, 100.0, lo_open=True)
        _check("restore_tolerance", self.restore_tolerance, 0.0, 1.0)
        _check("restore_fraction", self.restore_fraction, 0.0, 1.0)
        _check("restore_bits", self.restore_bits, 0.0, self.max_bits, lo_open=True)
        if self.preservation_size is not None:
            _check("preservation_size", self.preservation_size, 0, 10_000_000)
        self.preservation_budget = tuple(float(x) for x in self.preservation_budget)  # type: ignore[assignment]
        if len(self.preservation_budget) != 3 or min(self.preservation_budget) < 0 or sum(self.preservation_budget) <= 0:
            raise ConfigError(
                "preservation_budget must be three non-negative shares (uncertainty, saliency, diversity) "
                f"with a positive sum; got {self.preservation_budget!r}"
            )
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
