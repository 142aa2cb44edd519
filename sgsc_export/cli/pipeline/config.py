"""``PipelineConfig``: every option of ``sgsc pipeline``, one typed dataclass, three sources and a precedence.

Each field is a command-line option (``--float-epochs``), a config-file key (``float_epochs = 3`` in
``sgsc.toml``) and an environment variable (``SGSC_FLOAT_EPOCHS=3``). The command line wins over the environment,
the environment over the file, the file over the defaults. Compression settings left unset (``None``) take the
data set's preset (``sgsc_export.presets``). Torch-free: ``sgsc config`` and ``--help`` stay fast.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters import PROFILE_NAMES
from sgsc_export.config import MAX_STEPS, SEED_MAX, _check
from sgsc_export.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ENV_PREFIX", "PROFILES", "PipelineConfig", "env_name", "load_toml", "option_name", "resolve_config",
           "to_toml"]

ENV_PREFIX = "SGSC_"
PROFILES = PROFILE_NAMES
PROVIDERS = ("cpu", "cuda", "tensorrt")
OPT_LEVELS = ("disabled", "basic", "extended", "all")


def _opt(help_text: str, default: Any = None, group: str = "run") -> Any:
    kwargs: dict[str, Any] = {"metadata": {"help": help_text, "group": group}}
    if isinstance(default, (list, tuple)):
        kwargs["default_factory"] = lambda: tuple(default)
    else:
        kwargs["default"] = default
    return field(**kwargs)


@dataclass
class PipelineConfig:
    """compress → export → validate → report. ``None`` compression values take the data set's preset."""

    # inputs
    dataset: str = _opt("digits | mnist | npz:PATH", "digits", "input")
    data_dir: str | None = _opt("Directory of the data set's files (mnist).", None, "input")
    model: str | None = _opt("Your model: path/to/file.py:factory (default: built-in for the data set).", None,
                             "input")
    weights: str | None = _opt("Float weights (state dict) for --model; skips float training.", None, "input")
    out: str | None = _opt("Run directory: artifact, ONNX files, validation and report.", None, "input")
    # compression (None: the data set's preset)
    steps: int | None = _opt("Compression steps.", None, "compress")
    finetune_steps: int | None = _opt("Steps with bits frozen, after compression.", None, "compress")
    float_epochs: int | None = _opt("Epochs of float reference training.", None, "compress")
    gamma: float | None = _opt("γ, weight of the size term Q.", None, "compress")
    lam: float | None = _opt("λ, weight of the preservation loss (0 = plain self-compression).", None, "compress")
    init_bits: float | None = _opt("Starting bit-depth of every channel.", None, "compress")
    distill: float | None = _opt("κ, weight of distillation from the float reference (0 = off).", None, "compress")
    preservation_size: int | None = _opt("Samples in the preservation set (default min(10%, 1000)).", None,
                                         "compress")
    checkpoint_every: int | None = _opt("Steps between checkpoints (what --resume continues from).", None,
                                        "compress")
    exclude: tuple[str, ...] = _opt("Comma list of layer names to keep in float.", (), "compress")
    seed: int = _opt("Seed: same seed, same artifact.", 0, "compress")
    torch_threads: int = _opt("torch intra-op threads while compressing (0: torch's default). One is fastest for "
                              "small models on a shared machine.", 1, "compress")
    # export
    profiles: tuple[str, ...] = _opt("Comma list of export profiles: portable, compact, ort-int8.",
                                     ("portable", "compact"), "export")
    # validate
    providers: tuple[str, ...] = _opt("Comma list of onnxruntime providers: cpu, cuda, tensorrt.", ("cpu",),
                                      "validate")
    require_providers: bool = _opt("A requested provider that is unavailable is an error.", False, "validate")
    opt_levels: tuple[str, ...] = _opt("Comma list of onnxruntime optimisation levels.", ("disabled", "all"),
                                       "validate")
    max_accuracy_drop: float = _opt("Largest accuracy drop against the float model, percentage points.", 1.0,
                                    "validate")
    min_agreement: float = _opt("Smallest top-1 agreement with the PyTorch reference.", 0.99, "validate")
    max_logit_diff: float | None = _opt("Largest |Δlogit| against the PyTorch reference (default: derived from "
                                        "the file's profile).", None, "validate")
    layers: bool = _opt("Per-layer parity of the quantised layers.", False, "validate")
    latency: bool = _opt("Measure latency (batch 1 and 64).", True, "validate")
    threads: int = _opt("onnxruntime intra-op threads.", 1, "validate")
    # run control
    report: bool = _opt("Write report.html and report.md with their pictures.", True)
    force: bool = _opt("Redo every stage, even when its inputs and config are unchanged.", False)
    resume: bool = _opt("Continue an interrupted compression from OUT/checkpoints/last.pt.", False)
    quiet: bool = _opt("No progress bar.", False)

    def __post_init__(self) -> None:
        for name in ("profiles", "providers", "opt_levels", "exclude"):
            setattr(self, name, tuple(getattr(self, name)))
        _choices("profiles", self.profiles, PROFILES)
        _choices("providers", self.providers, PROVIDERS)
        _choices("opt_levels", self.opt_levels, OPT_LEVELS)
        if not self.dataset:
            raise ConfigError("dataset must not be empty; use digits, mnist or npz:PATH")
        ints = {"steps": (1, MAX_STEPS), "finetune_steps": (0, MAX_STEPS), "float_epochs": (0, 100_000),
                "preservation_size": (1, 10_000_000), "checkpoint_every": (1, MAX_STEPS), "seed": (0, SEED_MAX),
                "torch_threads": (0, 1024), "threads": (1, 1024)}
        for name, (lo, hi) in ints.items():
            if getattr(self, name) is not None:
                setattr(self, name, _check(name, getattr(self, name), lo, hi, integer=True))
        reals = {"gamma": (0.0, 1e3, False), "lam": (0.0, 1e3, False), "init_bits": (0.0, 8.0, True),
                 "distill": (0.0, 1e3, False), "max_accuracy_drop": (0.0, 100.0, False),
                 "min_agreement": (0.0, 1.0, False), "max_logit_diff": (0.0, 1e30, False)}
        for name, (lo, hi, lo_open) in reals.items():
            if getattr(self, name) is not None:
                setattr(self, name, _check(name, getattr(self, name), lo, hi, lo_open=lo_open))

    def compress_config(self):
        """The data set's preset with this config's compression values on top (a ``CompressConfig``)."""
        from sgsc_export.config import CompressConfig
        from sgsc_export.presets import preset

        overrides = {name: getattr(self, name) for name in ("steps", "finetune_steps", "float_epochs", "gamma",
                                                            "lam", "init_bits", "distill", "preservation_size",
                                                            "checkpoint_every", "seed")
                     if getattr(self, name) is not None}
        if self.exclude:
            overrides["exclude"] = self.exclude
        return CompressConfig.from_dict({**preset(self.dataset.split(":")[0]).to_dict(), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}


def _choices(name: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ConfigError(f"{name}={list(values)!r}: each must be one of {', '.join(allowed)} (at least one)")


def option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


_FIELDS = {f.name: f for f in dataclasses.fields(PipelineConfig)}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _kind(key: str) -> str:
    """int | float | str | bool | list, from the field's annotation."""
    ann = str(_FIELDS[key].type)
    for kind in ("bool", "int", "float", "tuple"):
        if ann.startswith(kind):
            return "list" if kind == "tuple" else kind
    return "str"


def coerce(key: str, value: Any, source: str) -> Any:
    """``value`` from ``source`` (a file key, an environment variable, an option) as the field's type."""
    kind = _kind(key)
    try:
        if isinstance(value, str) and kind != "str":
            text = value.strip()
            if kind == "bool":
                if text.lower() not in _TRUE | _FALSE:
                    raise ValueError
                return text.lower() in _TRUE
            if kind == "list":
                return tuple(part.strip() for part in text.split(",") if part.strip())
            return int(text) if kind == "int" else float(text)
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "list" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind == "str" and isinstance(value, str):
            return value
    except ValueError:
        pass
    expected = {"int": "an integer", "float": "a number", "bool": "true or false", "list": "a list of strings "
                "(a comma list in the environment)", "str": "a string"}[kind]
    raise ConfigError(f"{source}={value!r}: expected {expected}")


CONFIG_MAX_BYTES = 1 << 20  # a config file is a few hundred bytes; a larger one is not a config


def load_toml(path: str | Path) -> dict[str, Any]:
    """The keys of a ``sgsc.toml`` (top level, or under ``[pipeline]``), checked against the fields."""
    from sgsc_export._io import read_bytes_bounded
    p = Path(path)
    raw = read_bytes_bounded(p, "config file", max_bytes=CONFIG_MAX_BYTES, error=ConfigError)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file {p} as UTF-8: {exc}") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    if set(data) == {"pipeline"} and isinstance(data["pipeline"], dict):
        data = data["pipeline"]
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"config file {p}: unknown key(s) {unknown}; `sgsc config --print-defaults` lists them")
    return {key: coerce(key, value, f"{p}: {key}") for key, value in data.items()}


def resolve_config(cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                   file: str | Path | None = None) -> tuple[PipelineConfig, dict[str, str]]:
    """Defaults < file < environment (``SGSC_*``) < command line. Returns the config and each key's source."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources = {key: "default" for key in _FIELDS}
    if file is not None:
        for key, value in load_toml(file).items():
            values[key], sources[key] = value, f"file {file}"
    for key in _FIELDS:
        if env_name(key) in env:
            values[key], sources[key] = coerce(key, env[env_name(key)], env_name(key)), f"env {env_name(key)}"
    for key, value in (cli or {}).items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown option {option_name(key)}")
        if value is not None:
            values[key] = coerce(key, value, option_name(key)) if isinstance(value, str) else value
            sources[key] = "command line"
    return PipelineConfig(**values), sources


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(config: PipelineConfig, sources: Mapping[str, str] | None = None, *, fill_preset: bool = True) -> str:
    """The config as ``sgsc.toml`` text that ``load_toml`` reads back; unset paths are commented out.

    With ``fill_preset``, compression values left to the preset are written with the preset's value.
    """
    filled = config.compress_config().to_dict() if fill_preset else {}
    lines = ["# sgsc pipeline config: every key is also --option-name and SGSC_KEY_NAME (CLI > env > file)"]
    group = None
    for f in dataclasses.fields(config):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines += ["", f"# --- {group}"]
        value = getattr(config, f.name)
        note = f.metadata["help"]
        if sources and sources.get(f.name, "default") != "default":
            note += f" [from {sources[f.name]}]"
        if value is None and f.name in filled and filled[f.name] is not None:
            value, note = filled[f.name], note + f" [{config.dataset.split(':')[0]} preset]"
        if value is None:
            lines.append(f"# {f.name} = \"\"  # {note}")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}  # {note}")
    return "\n".join(lines) + "\n"
