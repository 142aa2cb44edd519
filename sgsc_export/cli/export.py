"""Click commands ``export`` and ``inspect``; the lead's ``sgsc`` group loads them lazily.

Every ``SGSCError`` becomes ``error: <message>`` on stderr and exit code 2; nothing is written on error.
"""

from __future__ import annotations

import json
import sys

import click

from converters import PROFILE_NAMES
from sgsc_export.errors import SGSCError, user_code_exit

__all__ = ["export_cmd", "inspect_cmd"]



def _fail(exc: SGSCError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(getattr(exc, "exit_code", 2))


@click.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--profile", type=click.Choice(PROFILE_NAMES), default="portable", show_default=True,
              help="portable: INT2/INT4/INT8 containers; compact: exact bits, unpacked in-graph; "
                   "ort-int8: INT8 + activation QDQ for onnxruntime's integer kernels.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The .onnx file to write (atomically).")
@click.option("--model", "model_spec", metavar="FILE.py:FACTORY",
              help="Your model file, as given to `sgsc compress --model`; its SHA-256 must equal the one the artifact "
                   "recorded. Not needed for a built-in model.")
@click.option("--trust-model-code", is_flag=True,
              help="Run the model file the artifact's manifest names (its SHA-256 is still checked). Only for "
                   "artifacts you trust: it runs code.")
def export_cmd(directory: str, profile: str, output: str, model_spec: str | None, trust_model_code: bool) -> None:
    """Export the compressed artifact DIRECTORY to one standard ONNX file and print its size table.

    An artifact never runs code by itself: a user's model file runs only when named with --model or trusted
    with --trust-model-code, and only if its SHA-256 is the one recorded at compression.
    """
    from converters.exporter import export
    from sgsc_export._io import artifact_files, check_outputs

    try:
        inputs = dict(artifact_files(directory))
        if model_spec and model_spec.rpartition(":")[0]:
            inputs["--model's file"] = model_spec.rpartition(":")[0]
        check_outputs({"-o": output}, inputs)  # never over the artifact's own files or the model file
        result = export(directory, output, profile=profile, model=model_spec, trust_model_code=trust_model_code)
    except SGSCError as exc:
        _fail(exc)
        return
    except SystemExit as exc:  # a user's model code called sys.exit while the module was rebuilt or traced
        _fail(user_code_exit(exc, "export"))
        return
    click.echo(result.table.render())
    click.echo(f"wrote {result.path} (sha256 {result.sha256[:16]}…)")


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def inspect_cmd(model: str, as_json: bool) -> None:
    """Print the per-layer table (fp32 bytes, learned bits, stored bytes, container) of an ONNX file."""
    from converters.inspection import inspect_model

    try:
        table = inspect_model(model)
    except SGSCError as exc:
        _fail(exc)
        return
    click.echo(json.dumps(table.to_dict(), indent=2, sort_keys=True) if as_json else table.render())
