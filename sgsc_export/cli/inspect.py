"""``sgsc inspect``: the per-layer table of an ONNX file (fp32 bytes, learned bits, stored bytes, container).

Reads the file only (``converters.inspection``, imported when the command runs); errors end through the CLI's
one handler.
"""

from __future__ import annotations

import json

import click

from sgsc_export.cli import Command

__all__ = ["inspect_cmd"]


@click.command("inspect", cls=Command)
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def inspect_cmd(model: str, as_json: bool) -> None:
    """Print the per-layer table (fp32 bytes, learned bits, stored bytes, container) of an ONNX file."""
    from converters.inspection import inspect_model

    table = inspect_model(model)
    click.echo(json.dumps(table.to_dict(), indent=2, sort_keys=True) if as_json else table.render())
