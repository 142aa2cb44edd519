"""Click commands ``export`` and ``inspect``; the lead's ``sgsc`` group loads them lazily.

Every ``SGSCError`` becomes ``error: <message>`` on stderr and exit code 2; nothing is written on error.
"""

from __future__ import annotations

import json
import sys

import click

from sgsc_export.errors import SGSCError

__all__ = ["export_cmd", "inspect_cmd"]

_PROFILES = ("portable", "compact", "ort-int8")


def _fail(exc: SGSCError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(getattr(exc, "exit_code", 2))


@click.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--profile", type=click.Choice(_PROFILES), default="portable", show_default=True,
              help="portable: INT2/INT4/INT8 containers; compact: exact bits, unpacked in-graph; "
                   "ort-int8: INT8 + activation QDQ for onnxruntime's integer kernels.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The .onnx file to write (atomically).")
def export_cmd(directory: str, profile: str, output: str) -> None:
    """Export the compressed artifact DIRECTORY to one standard ONNX file and print its size table."""
    from sgsc_export._io import artifact_files, check_outputs
    from sgsc_export.errors import ModelError

    from .export import export

    try:
        check_outputs({"-o": output}, artifact_files(directory))  # never over the artifact's own files
        result = export(directory, output, profile=profile)
    except SGSCError as exc:
        _fail(exc)
        return
    except SystemExit as exc:  # a user's model code called sys.exit while the module was rebuilt or traced
        _fail(ModelError(f"the model code called sys.exit({exc.code!r}) during export; a model factory or "
                         "forward must return or raise, not exit the process"))
        return
    click.echo(result.table.render())
    click.echo(f"wrote {result.path} (sha256 {result.sha256[:16]}…)")


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def inspect_cmd(model: str, as_json: bool) -> None:
    """Print the per-layer table (fp32 bytes, learned bits, stored bytes, container) of an ONNX file."""
    from .inspection import inspect_model

    try:
        table = inspect_model(model)
    except SGSCError as exc:
        _fail(exc)
        return
    click.echo(json.dumps(table.to_dict(), indent=2, sort_keys=True) if as_json else table.render())
