"""Click commands ``sgsc pipeline`` and ``sgsc config``, loaded lazily by ``sgsc_export.cli``.

The options are made from ``PipelineConfig``'s fields, so every option has its config key and environment variable
by construction. Values are read as text and converted by ``config.coerce``: a bad value from any source is one
line ``error: …`` and exit 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from sgsc_export.cli.pipeline.config import PipelineConfig, env_name, option_name, resolve_config, to_toml
from sgsc_export.errors import ConfigError

__all__ = ["config_cmd", "pipeline_cmd"]

_METAVAR = {"int": "INT", "float": "NUMBER", "str": "TEXT", "list": "A,B"}


def _config_options(fn: Callable) -> Callable:
    from sgsc_export.cli.pipeline.config import _kind

    for f in reversed(dataclasses.fields(PipelineConfig)):
        kind = _kind(f.name)
        where = f"[key {f.name}; env {env_name(f.name)}]"
        default = f.default if f.default is not dataclasses.MISSING else ",".join(f.default_factory())
        shown = "" if default in (None, "") else f" (default: {str(default).lower() if kind == 'bool' else default})"
        if kind == "bool":
            decl = f"{option_name(f.name)}/--no-{f.name.replace('_', '-')}"
            fn = click.option(decl, f.name, default=None, help=f"{f.metadata['help']}{shown} {where}")(fn)
        else:
            if f.name in {"steps", "finetune_steps", "float_epochs", "gamma", "lam", "init_bits", "distill",
                          "preservation_size", "checkpoint_every"}:
                shown = " (default: the data set's preset)"
            fn = click.option(option_name(f.name), f.name, default=None, metavar=_METAVAR[kind],
                              help=f"{f.metadata['help']}{shown} {where}")(fn)
    return fn


def _given(ctx: click.Context, params: dict) -> dict:
    """Only the options typed on the command line (click's defaults are None)."""
    return {k: v for k, v in params.items()
            if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE and v is not None}


@click.command("pipeline")
@click.option("--config", "config_path", metavar="sgsc.toml", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Config file (TOML; keys as listed by `sgsc config --print-defaults`) [env {env_name('config')}]")
@click.option("--print-config", is_flag=True, help="Print the resolved config (with each value's source) and exit.")
@_config_options
@click.pass_context
def pipeline_cmd(ctx: click.Context, config_path: Path | None, print_config: bool, **params) -> None:
    """Compress, export (each profile), validate and report, in one run directory OUT.

    Precedence: command line > environment (SGSC_*) > config file > defaults. A stage whose inputs and config are
    unchanged is reused; --force redoes it. Ctrl-C keeps the last complete checkpoint; --resume continues.
    Exit code: 0 every gate passed, 1 a threshold failed, 2 error, 130 Ctrl-C, 143 SIGTERM. One run at a time
    holds OUT (a second one is refused).
    """
    config_path = config_path or (Path(os.environ[env_name("config")]) if os.environ.get(env_name("config")) else None)
    config, sources = resolve_config(_given(ctx, params), os.environ, config_path)
    if print_config:
        click.echo(to_toml(config, sources), nl=False)
        return
    from sgsc_export.cli.pipeline.run import remove_partial_files, run_pipeline
    from sgsc_export.cli.pipeline.summary import summary

    try:
        result = run_pipeline(config, echo=lambda line: click.echo(line, err=True))
    except KeyboardInterrupt as exc:  # Ctrl-C: 130; SIGTERM (sgsc_export.cli.Terminated): 143
        out = Path(config.out or ".")
        remove_partial_files(out)
        ckpt = out / "checkpoints" / "last.pt"
        if ckpt.is_file():
            advice = f"the last complete checkpoint is {ckpt}; run the same command with --resume to continue"
        else:
            advice = "no checkpoint was written yet; run the same command again to start over"
        click.echo(f"\ninterrupted: {advice}. No half-written file is left.", err=True)
        sys.exit(getattr(exc, "exit_code", 130))
    click.echo(summary(result))
    sys.exit(result.exit_code)


@click.command("config")
@click.option("--print-defaults", is_flag=True, help="Print every key with its default value (TOML) and exit.")
@click.option("--config", "config_path", metavar="sgsc.toml", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Show this file merged with the environment (SGSC_*) and the defaults [env {env_name('config')}].")
@click.option("--dataset", help="Fill the compression values from this data set's preset (default: digits).")
def config_cmd(print_defaults: bool, config_path: Path | None, dataset: str | None) -> None:
    """Show the pipeline's config as sgsc.toml: the defaults, or what a file and the environment resolve to."""
    cli = {"dataset": dataset} if dataset else {}
    if print_defaults:
        config, sources = resolve_config(cli, {}, None)
    else:
        if config_path is None and os.environ.get(env_name("config")):
            config_path = Path(os.environ[env_name("config")])
        if config_path is None and not any(k.startswith("SGSC_") for k in os.environ):
            raise ConfigError("nothing to show: use --print-defaults, or --config FILE (and/or SGSC_* variables)")
        config, sources = resolve_config(cli, os.environ, config_path)
    click.echo(to_toml(config, None if print_defaults else sources), nl=False)
