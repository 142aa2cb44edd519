"""``ValidateConfig``: every setting of one validation, one typed dataclass (thresholds and session settings).

What ``validate(model, data, ...)`` is asked to do, apart from its inputs (the model, the data, a per-layer
reference, which may be in-memory activations) and the test hook ``available_providers``: those stay
arguments. The thresholds are flat fields that reuse ``Thresholds``' own (help, range), so that the command
line, the pipeline's ``PipelineConfig`` and this config share one description of each, and ``thresholds``
builds the gate's ``Thresholds`` from them. Every range is checked by ``sgsc_export.config.check_ranges`` in
``__post_init__`` (a ``ConfigError``, which is a ``ValueError``, naming the field and its range). Provider and
optimisation level names are checked here too, before anything runs. JSON-serialisable with a version field.
Imports neither click nor numpy nor onnxruntime: ``sgsc validate --help`` and ``sgsc config`` read it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from runtime_checks.gate import Thresholds
from sgsc_export._fields import MAX_THREADS, Range, check_range, check_ranges, from_known_keys, option, reuse
from sgsc_export.errors import ConfigError

__all__ = ["MAX_BATCH", "OPT_LEVEL_NAMES", "PROVIDER_NAMES", "VALIDATE_CONFIG_VERSION", "ValidateConfig"]

VALIDATE_CONFIG_VERSION = 1
PROVIDER_NAMES = ("cpu", "cuda", "tensorrt")
OPT_LEVEL_NAMES = ("disabled", "basic", "extended", "all")
MAX_BATCH = 65536
_THRESHOLDS = tuple(f.name for f in dataclasses.fields(Thresholds))


@dataclass(frozen=True)
class ValidateConfig:
    """The settings of one ``validate`` run; the defaults are ``sgsc validate``'s."""

    providers: tuple[str, ...] = option(("cpu",), "Comma list of onnxruntime providers: cpu, cuda, tensorrt.")
    require_providers: bool = option(False, "A requested provider that is unavailable is an error.")
    opt_levels: tuple[str, ...] = option(("disabled", "all"),
                                         "Comma list of onnxruntime optimisation levels: "
                                         "disabled, basic, extended, all.")
    max_accuracy_drop: float = reuse(Thresholds, "max_accuracy_drop")
    min_agreement: float = reuse(Thresholds, "min_agreement")
    max_layer_error_steps: float = reuse(Thresholds, "max_layer_error_steps")
    max_perplexity_ratio: float | None = reuse(Thresholds, "max_perplexity_ratio")
    max_logit_diff: float | None = reuse(Thresholds, "max_logit_diff")
    layers: bool = option(False, "Per-layer parity of the quantised layers.")
    latency: bool = option(True, "Measure latency (batch 1 and 64).")
    threads: int = option(1, f"onnxruntime intra-op threads (fixed for latency), in [1, {MAX_THREADS}].",
                          Range(1, MAX_THREADS, integer=True))
    batch_sizes: tuple[int, ...] = option((1, 64),
                                          f"Latency batch sizes, comma list, each in [1, {MAX_BATCH}].")
    batch_size: int = option(256, "Samples per onnxruntime run while evaluating.",
                             Range(1, 1_000_000, integer=True))
    safe_session_options: bool = option(True, "Apply the workarounds for known onnxruntime traps.")
    layer_samples: int = option(256, "Samples compared per layer under layers.", Range(1, 1_000_000,
                                                                                       integer=True))
    version: int = field(default=VALIDATE_CONFIG_VERSION)

    def __post_init__(self) -> None:
        if self.version != VALIDATE_CONFIG_VERSION:
            raise ConfigError(f"version={self.version!r} is not supported; this toolchain reads version "
                              f"{VALIDATE_CONFIG_VERSION}")
        for name in ("providers", "opt_levels", "batch_sizes"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
                raise ConfigError(f"{name}={value!r} must be a non-empty list")
            object.__setattr__(self, name, tuple(value))
        _names("providers", self.providers, PROVIDER_NAMES, "provider", "executionprovider")
        _names("opt_levels", self.opt_levels, OPT_LEVEL_NAMES, "optimisation level")
        sizes = tuple(check_range("batch_sizes", b, 1, MAX_BATCH, integer=True) for b in self.batch_sizes)
        object.__setattr__(self, "batch_sizes", sizes)
        for name in ("require_providers", "layers", "latency", "safe_session_options"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        check_ranges(self)

    @property
    def thresholds(self) -> Thresholds:
        """The gate's thresholds."""
        return Thresholds(**{name: getattr(self, name) for name in _THRESHOLDS})

    @classmethod
    def from_kwargs(cls, thresholds: Thresholds | None = None, **settings: Any) -> ValidateConfig:
        """From ``validate``'s keyword arguments (``thresholds=Thresholds(...)`` and the session settings)."""
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)} - {"version"})
        if unknown:
            raise TypeError(f"validate() got unexpected keyword argument(s) {unknown}")
        flat = dataclasses.asdict(thresholds) if thresholds is not None else {}
        return cls(**flat, **settings)

    def replace(self, **changes: Any) -> ValidateConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidateConfig:
        return from_known_keys(cls, d, "validate config")


def _names(name: str, values: tuple[str, ...], allowed: tuple[str, ...], what: str, suffix: str = "") -> None:
    """Each value one of ``allowed`` (any case; ``suffix`` may follow, as in ``CPUExecutionProvider``)."""
    for raw in values:
        text = raw.strip().lower() if isinstance(raw, str) else None
        if text is None or (text not in allowed and text.removesuffix(suffix) not in allowed):
            raise ConfigError(f"{name}={list(values)!r}: unknown {what} {raw!r}; choose from "
                              f"{', '.join(allowed)}")
