"""``PipelineConfig``: every option of ``sgsc pipeline``, one typed dataclass, three sources and a precedence.

Each field is a command-line option (``--float-epochs``), a config-file key (``float_epochs = 3`` in
``sgsc.toml``) and an environment variable (``SGSC_FLOAT_EPOCHS=3``). The command line wins over the
environment, the environment over the file, the file over the defaults. Compression settings left unset
(``None``) take the defaults, the same for every data set (or ``preset``'s, ``sgsc_export.presets``).
Torch-free: ``sgsc config`` and ``--help``
stay fast.

It composes the other two configs rather than restating them: the compression and validation fields are
``reuse``d from ``CompressConfig`` and ``ValidateConfig`` (their help and range), ``check_ranges`` checks them
with those bounds, and ``compress_config()`` / ``validate_config()`` build the configs the stages run with.

The environment is read here (``resolve_config``), not through click's ``envvar=``: the names are generated
from the field (``env_name``: ``SGSC_`` + the key, e.g. ``SGSC_FLOAT_EPOCHS``; click's ``auto_envvar_prefix``
would make them ``SGSC_PIPELINE_FLOAT_EPOCHS``), ``sgsc config`` shows the environment's values of keys that
are no option of its own, a bad value names its variable (``SGSC_STEPS='abc': expected an integer``), and the
file sits between the environment and the defaults; with click reading the environment, each of these would be
a second path.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters import PROFILE_NAMES
from runtime_checks.config import ValidateConfig
from sgsc_export.cli._options import fields_of, option_name
from sgsc_export.cli._options import kind as field_kind
from sgsc_export.config import MAX_THREADS, CompressConfig, Range, check_ranges, option, reuse
from sgsc_export.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ENV_PREFIX", "PROFILES", "PipelineConfig", "env_name", "load_toml", "option_name",
           "resolve_config",
           "to_toml"]

ENV_PREFIX = "SGSC_"
PROFILES = PROFILE_NAMES
# the fields that are CompressConfig's (None: the default or the preset's) and ValidateConfig's
COMPRESSION = ("steps", "epochs", "finetune_steps", "float_epochs", "gamma", "lam", "init_bits", "distill",
               "max_drop", "validation_size", "preservation_size", "checkpoint_every", "exclude", "seed")
VALIDATION = ("providers", "require_providers", "opt_levels", "max_accuracy_drop", "min_agreement",
              "max_logit_diff", "layers", "latency", "threads")


def _compress(name: str, default: object = None) -> object:
    return reuse(CompressConfig, name, default, group="compress")


def _validate(name: str) -> object:
    return reuse(ValidateConfig, name, group="validate")


@dataclass
class PipelineConfig:
    """compress → export → validate → report. ``None`` compression values take the defaults (or the
    ``preset``'s)."""

    # inputs
    dataset: str = option("digits", "digits | mnist | npz:PATH", group="input")
    data_dir: str | None = option(None, "Directory of the data set's files (mnist).", group="input")
    model: str | None = option(None,
                               "Your model: path/to/file.py:factory (default: built-in for the data set).",
                               group="input")
    weights: str | None = option(None, "Float weights (state dict) for --model; skips float training.",
                                 group="input")
    out: str | None = option(None, "Run directory: artifact, ONNX files, validation and report.",
                             group="input")
    # compression (None: the default, or the preset's)
    preset: str | None = option(None, "Start from an earlier release's per-data-set settings: digits, mnist "
                                "or names (nobody needs one: the defaults hold for every data set).",
                                group="compress")
    steps: int | None = _compress("steps")
    epochs: float | None = _compress("epochs")
    finetune_steps: int | None = _compress("finetune_steps")
    float_epochs: int | None = _compress("float_epochs")
    gamma: float | None = _compress("gamma")
    lam: float | None = _compress("lam")
    init_bits: float | None = _compress("init_bits")
    distill: float | None = _compress("distill")
    max_drop: float | None = _compress("max_drop")
    validation_size: int | None = _compress("validation_size")
    preservation_size: int | None = _compress("preservation_size")
    checkpoint_every: int | None = _compress("checkpoint_every")
    exclude: tuple[str, ...] = option((), "Comma list of layer names to keep in float.", group="compress")
    seed: int = _compress("seed", 0)
    torch_threads: int = option(1, "torch intra-op threads while compressing (0: torch's default). One is "
                                "fastest for small models on a shared machine.",
                                Range(0, MAX_THREADS, integer=True), group="compress")
    # export
    profiles: tuple[str, ...] = option(("portable", "compact"), "Comma list of export profiles: portable, "
                                       "compact, ort-int8.", group="export")
    # validate
    providers: tuple[str, ...] = _validate("providers")
    require_providers: bool = _validate("require_providers")
    opt_levels: tuple[str, ...] = _validate("opt_levels")
    max_accuracy_drop: float = _validate("max_accuracy_drop")
    min_agreement: float = _validate("min_agreement")
    max_logit_diff: float | None = _validate("max_logit_diff")
    layers: bool = _validate("layers")
    latency: bool = _validate("latency")
    threads: int = _validate("threads")
    # run control
    report: bool = option(True, "Write report.html and report.md with their pictures.", group="run")
    force: bool = option(False, "Redo every stage, even when its inputs and config are unchanged.",
                         group="run")
    resume: bool = option(False, "Continue an interrupted compression from OUT/checkpoints/last.pt.",
                          group="run")
    quiet: bool = option(False, "No progress bar.", group="run")

    def __post_init__(self) -> None:
        for name in ("profiles", "providers", "opt_levels", "exclude"):
            setattr(self, name, tuple(getattr(self, name)))
        bad = [p for p in self.profiles if p not in PROFILES]
        if bad or not self.profiles:
            raise ConfigError(f"profiles={list(self.profiles)!r}: each must be one of {', '.join(PROFILES)} "
                              "(at least one)")
        if not self.dataset:
            raise ConfigError("dataset must not be empty; use digits, mnist or npz:PATH")
        if self.preset is not None:
            from sgsc_export.presets import preset

            preset(self.preset)  # an unknown name: the one ConfigError line naming the choices
        check_ranges(self)  # the bounds of CompressConfig's and ValidateConfig's fields, reused
        self.validate_config()  # the provider and level names: ValidateConfig's own check

    def validate_config(self) -> ValidateConfig:
        """The settings of the validate stage."""
        return ValidateConfig(**{name: getattr(self, name) for name in VALIDATION})

    def compress_config(self) -> CompressConfig:
        """The defaults (or ``preset``'s values) with this config's compression values on top."""
        from sgsc_export.presets import preset

        overrides = {name: getattr(self, name) for name in COMPRESSION
                     if getattr(self, name) is not None and name != "exclude"}
        if self.exclude:
            overrides["exclude"] = self.exclude
        base = preset(self.preset).to_dict() if self.preset else {}
        return CompressConfig.from_dict({**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


_FIELDS = fields_of(PipelineConfig)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def coerce(key: str, value: Any, source: str) -> Any:
    """``value`` from ``source`` (a file key, an environment variable, an option) as the field's type."""
    kind = field_kind(_FIELDS[key])
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
    expected = {"int": "an integer", "float": "a number", "bool": "true or false",
                "list": "a list of strings "
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
        raise ConfigError(f"config file {p}: unknown key(s) {unknown}; `sgsc config --print-defaults` lists "
                          f"them")
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


def to_toml(config: PipelineConfig, sources: Mapping[str, str] | None = None, *,
            fill_preset: bool = True) -> str:
    """The config as ``sgsc.toml`` text that ``load_toml`` reads back; unset paths are commented out.

    With ``fill_preset``, compression values left unset are written with the value the run takes (the default
    or the preset's; a step count the training split's size decides stays unset).
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
            origin = f" [{config.preset} preset]" if config.preset else " [default]"
            value, note = filled[f.name], note + origin
        if value is None:
            lines.append(f"# {f.name} = \"\"  # {note}")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}  # {note}")
    return "\n".join(lines) + "\n"
