"""``sgsc config``: the pipeline's config as ``sgsc.toml``, its defaults or what a file and the environment
resolve to, with each key's source. Torch-free and onnxruntime-free: it reads ``PipelineConfig`` only.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from sgsc_export.cli import Command
from sgsc_export.cli.pipeline.cli import config_file
from sgsc_export.cli.pipeline.config import ENV_PREFIX, env_name, resolve_config, to_toml
from sgsc_export.errors import ConfigError

__all__ = ["config_cmd"]


@click.command("config", cls=Command)
@click.option("--print-defaults", is_flag=True,
              help="Print every key with its default value (TOML) and exit.")
@click.option("--config", "config_path", metavar="sgsc.toml", type=click.Path(dir_okay=False, path_type=Path),
              help="Show this file merged with the environment (SGSC_*) and the defaults "
                   f"[env {env_name('config')}].")
@click.option("--dataset", help="Fill the compression values from this data set's preset (default: digits).")
def config_cmd(print_defaults: bool, config_path: Path | None, dataset: str | None) -> None:
    """Show the pipeline's config as sgsc.toml: the defaults, or what a file and the environment resolve
    to."""
    cli = {"dataset": dataset} if dataset else {}
    if print_defaults:
        config, sources = resolve_config(cli, {}, None)
    else:
        config_path = config_file(config_path)
        if config_path is None and not any(k.startswith(ENV_PREFIX) for k in os.environ):
            raise ConfigError("nothing to show: use --print-defaults, or --config FILE (and/or SGSC_* "
                              "variables)")
        config, sources = resolve_config(cli, os.environ, config_path)
    click.echo(to_toml(config, None if print_defaults else sources), nl=False)
