"""``sgsc export``: a compressed artifact directory → one standard ONNX file, and its size table.

Errors end through the CLI's one handler (``sgsc_export.cli``): one line, exit code 2, nothing written; a
user's ``sys.exit`` while the module is rebuilt or traced is a ``ModelError``. ``converters`` is imported when
the command runs, except its profile list (``PROFILE_NAMES``, a cheap import) for ``--profile``'s choices.
"""

from __future__ import annotations

import click

from converters import PROFILE_NAMES
from runtime_checks.config import ValidateConfig
from sgsc_export.cli import Command
from sgsc_export.cli._options import cli_default, field_option, fields_of

__all__ = ["export_cmd"]

_GATE = fields_of(ValidateConfig)
_HELD = (" ort-int8 quantises only the activations that keep it on held data (the gate's threshold: give "
         "`sgsc validate` the same).")


@click.command("export", cls=Command)
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--profile", type=click.Choice(PROFILE_NAMES), default="portable", show_default=True,
              help="portable: INT2/INT4/INT8 containers; compact: exact bits, unpacked in-graph; "
                   "ort-int8: INT8 + activation QDQ for onnxruntime's integer kernels.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The .onnx file to write (atomically).")
@click.option("--model", "model_spec", metavar="FILE.py:FACTORY",
              help="Your model file, as given to `sgsc compress --model`; its SHA-256 must equal the one the "
                   "artifact recorded. Not needed for a built-in model.")
@click.option("--trust-model-code", is_flag=True,
              help="Run the model file the artifact's manifest names (its SHA-256 is still checked). Only "
                   "for artifacts you trust: it runs code.")
@field_option(_GATE["max_accuracy_drop"], metavar="PP", show_default=True,
              default=cli_default(_GATE["max_accuracy_drop"]), help_suffix=_HELD)
@field_option(_GATE["min_agreement"], metavar="FRACTION", show_default=True,
              default=cli_default(_GATE["min_agreement"]), help_suffix=_HELD)
def export_cmd(directory: str, profile: str, output: str, model_spec: str | None,
               trust_model_code: bool, max_accuracy_drop: float, min_agreement: float) -> None:
    """Export the compressed artifact DIRECTORY to one standard ONNX file and print its size table.

    An artifact never runs code by itself: a user's model file runs only when named with --model or trusted
    with --trust-model-code, and only if its SHA-256 is the one recorded at compression.
    """
    from converters.exporter import export
    from converters.passes.qdq_select import QDQTargets
    from sgsc_export._outputs import artifact_files, check_outputs

    inputs = dict(artifact_files(directory))
    if model_spec and model_spec.rpartition(":")[0]:
        inputs["--model's file"] = model_spec.rpartition(":")[0]
    check_outputs({"-o": output}, inputs)  # never over the artifact's own files or the model file
    targets = QDQTargets(min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop)
    result = export(directory, output, profile=profile, model=model_spec, trust_model_code=trust_model_code,
                    qdq_targets=targets)
    click.echo(result.table.render())
    click.echo(f"wrote {result.path} (sha256 {result.sha256[:16]}…)")
