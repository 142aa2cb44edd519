"""Typed config fields, described once (torch-free): a field's ``help`` and ``range`` live in its metadata.

:func:`option` declares a field with its description, :func:`reuse` takes another config's field (a
config that composes others repeats neither help text nor bounds), :func:`check_ranges` is the one place a
range is checked (``__post_init__`` of ``CompressConfig``, the pipeline's config, and ``runtime_checks``'
``Thresholds`` and ``ValidateConfig``), and the CLI builds its options from the same metadata.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any

from sgsc_export.errors import ConfigError

__all__ = ["MAX_THREADS", "Range", "check_range", "check_ranges", "from_known_keys", "option", "reuse"]

MAX_THREADS = 1024


def check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                integer: bool = False) -> Any:
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


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric field: ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), integers with
    ``integer``. ``hi_field`` names a field of the same config that lowers the upper bound (``init_bits`` is
    at most ``max_bits``); a config without that field keeps ``hi``."""

    lo: float
    hi: float
    lo_open: bool = False
    integer: bool = False
    hi_field: str | None = None

    def check(self, name: str, value: Any, owner: Any = None) -> Any:
        hi = self.hi
        if self.hi_field is not None and hasattr(owner, self.hi_field):
            hi = getattr(owner, self.hi_field)
        return check_range(name, value, self.lo, hi, lo_open=self.lo_open, integer=self.integer)


def option(default: Any, help_text: str, range_: Range | None = None, **metadata: Any) -> Any:
    """A dataclass field with its description: ``help`` and, for a number, its ``range``. A tuple default is
    stored as a ``default_factory``; extra ``metadata`` (a pipeline field's ``group``) is kept as given."""
    meta = {"help": help_text, **({"range": range_} if range_ is not None else {}), **metadata}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


def reuse(config: type, name: str, default: Any = dataclasses.MISSING, **metadata: Any) -> Any:
    """A field of another config with ``name``'s help and range (and ``default``, unless given): a config that
    composes others repeats neither their help text nor their bounds."""
    source = {f.name: f for f in dataclasses.fields(config)}[name]
    if default is dataclasses.MISSING:
        default = source.default if source.default is not dataclasses.MISSING else source.default_factory()
    return option(default, source.metadata["help"], source.metadata.get("range"), **metadata)


def from_known_keys(config: type, d: dict[str, Any], what: str = "config") -> Any:
    """``config(**d)``, after refusing a key that is no field (a ``ConfigError`` listing the known ones)."""
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} key(s) {unknown}; known keys: {sorted(known)}")
    return config(**d)


def check_ranges(config: Any) -> None:
    """Check every field of ``config`` that has a ``range`` (``None`` is "unset" and passes), storing the
    plain ``int``/``float`` back (frozen dataclasses too)."""
    for f in dataclasses.fields(config):
        bounds, value = f.metadata.get("range"), getattr(config, f.name)
        if bounds is not None and value is not None:
            object.__setattr__(config, f.name, bounds.check(f.name, value, config))
