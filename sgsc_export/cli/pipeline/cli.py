"""``sgsc pipeline``: compress → export → validate → report in one run directory, loaded lazily by the group.

The options are made from ``PipelineConfig``'s fields, so every option has its config key and environment
variable by construction, and its help is the config's (itself reused from ``CompressConfig`` and
``ValidateConfig``). Values are read as text and converted by ``config.coerce``: a bad value from any source
is one line ``error: …`` and exit 2, from the CLI's one handler. Ctrl-C says how to continue (an
``Interrupted`` with that line).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import click

from sgsc_export.cli import Command, Interrupted, finish
from sgsc_export.cli._options import field_option, kind
from sgsc_export.cli.pipeline.config import (
    COMPRESSION,
    PipelineConfig,
    env_name,
    option_name,
    resolve_config,
    to_toml,
)

__all__ = ["pipeline_cmd"]

_METAVAR = {"int": "INT", "float": "NUMBER", "str": "TEXT", "list": "A,B"}


def _config_options(fn: Callable) -> Callable:
    for f in reversed(dataclasses.fields(PipelineConfig)):
        where = f"[key {f.name}; env {env_name(f.name)}]"
        default = f.default if f.default is not dataclasses.MISSING else ",".join(f.default_factory())
        if f.name in COMPRESSION and default is None:
            shown = " (default: the same for every data set, or --preset's)"
        elif default in (None, ""):
            shown = ""
        else:
            shown = f" (default: {str(default).lower() if kind(f) == 'bool' else default})"
        if kind(f) == "bool":
            decl = f"{option_name(f.name)}/--no-{f.name.replace('_', '-')}"
            fn = click.option(decl, f.name, default=None, help=f"{f.metadata['help']}{shown} {where}")(fn)
        else:
            fn = field_option(f, type=str, default=None, metavar=_METAVAR[kind(f)],
                              help_suffix=f"{shown} {where}")(fn)
    return fn


def _given(ctx: click.Context, params: dict) -> dict:
    """Only the options typed on the command line (click's defaults are None)."""
    return {k: v for k, v in params.items()
            if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE and v is not None}


def config_file(path: Path | None) -> Path | None:
    """``--config``, else the file named by ``SGSC_CONFIG``."""
    if path is None and os.environ.get(env_name("config")):
        return Path(os.environ[env_name("config")])
    return path


@click.command("pipeline", cls=Command)
@click.option("--config", "config_path", metavar="sgsc.toml", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (TOML; keys as listed by `sgsc config --print-defaults`) "
                   f"[env {env_name('config')}]")
@click.option("--print-config", is_flag=True, help="Print the resolved config (with each value's source) and "
                                                   "exit.")
@_config_options
@click.pass_context
def pipeline_cmd(ctx: click.Context, config_path: Path | None, print_config: bool, **params) -> None:
    """Compress, export (each profile), validate and report, in one run directory OUT.

    Precedence: command line > environment (SGSC_*) > config file > defaults. A stage whose inputs and config
    are unchanged is reused; --force redoes it. Ctrl-C keeps the last complete checkpoint; --resume continues.
    Exit code: 0 every gate passed, 1 a threshold failed, 2 error, 130 Ctrl-C, 143 SIGTERM. One run at a time
    holds OUT (a second one is refused).
    """
    config, sources = resolve_config(_given(ctx, params), os.environ, config_file(config_path))
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
        raise Interrupted(f"\ninterrupted: {advice}. No half-written file is left.",
                          getattr(exc, "exit_code", 130)) from None
    click.echo(summary(result))
    finish(result.exit_code)
