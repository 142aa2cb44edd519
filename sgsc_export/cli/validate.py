"""``sgsc validate``: the deployment gate as a command. Exit codes: 0 passed, 1 a threshold failed, 2 the
check could not run.

Its settings are ``runtime_checks.ValidateConfig``'s fields: the options are made from their metadata (help,
defaults; ``--threads``' range as a ``click.IntRange``, as it always was a usage error), and the config checks
every value before anything runs. Only the options whose command-line form differs from the field are written
out here (``--no-latency``, ``--unsafe-session-options``, ``--batch-sizes``). On any error, the requested
report files are replaced by an error report (or removed), so that no file at these paths says "passed" after
a run that exited 2; the line and the exit code come from the CLI's one handler. Imports neither onnx nor
onnxruntime until the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runtime_checks.config import MAX_BATCH, ValidateConfig
from sgsc_export._outputs import artifact_files, check_outputs, check_writable, write_atomic_many
from sgsc_export.cli import Command, describe, finish
from sgsc_export.cli._options import cli_default, field_option, fields_of
from sgsc_export.errors import ValidationError

if TYPE_CHECKING:
    from runtime_checks.reports import Report

__all__ = ["validate_cmd"]


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class _BatchSizes(click.ParamType):
    """``--batch-sizes``: a comma list of integers in [1, MAX_BATCH]; a bad one is a usage error (exit 2)."""

    name = "N[,N…]"

    def convert(self, value, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(int(part) for part in _csv(str(value)))
        except ValueError:
            self.fail(f"must be comma-separated integers, got {value!r}", param, ctx)
        if not sizes or min(sizes) < 1 or max(sizes) > MAX_BATCH:
            self.fail(f"each batch size must be in [1, {MAX_BATCH}], got {value!r}", param, ctx)
        return sizes


def _settings(fn):
    """The options of ``ValidateConfig``'s fields, in the order of ``--help``."""
    f = fields_of(ValidateConfig)

    def setting(name: str, *decls: str, **kwargs):
        """The option of field ``name`` with the config's default, shown in ``--help``."""
        return field_option(f[name], *decls, default=cli_default(f[name]), show_default=True, **kwargs)

    options = [
        setting("providers"),
        field_option(f["require_providers"]),
        setting("opt_levels"),
        setting("max_accuracy_drop", metavar="PP"),
        setting("min_agreement", metavar="FRACTION"),
        setting("max_layer_error_steps", "--max-layer-error", metavar="STEPS"),
        field_option(f["max_perplexity_ratio"], default=None, metavar="RATIO"),
        field_option(f["max_logit_diff"], default=None, metavar="X"),
        field_option(f["layers"]),
        click.option("--layer-reference", metavar="REF.onnx", type=click.Path(dir_okay=False),
                     help="With --layers: a reference ONNX model (default: the artifact's float weights, or "
                          "the "
                          "model's own dequantized weights)."),
        click.option("--report", "report_path", metavar="report.json", help="Write the JSON report here."),
        click.option("--markdown", "markdown_path", metavar="PATH", help="Write a Markdown summary here."),
        click.option("--junit", "junit_path", metavar="PATH", help="Write JUnit XML here."),
        setting("batch_sizes", type=_BatchSizes()),
        setting("threads", bounded=True),
        click.option("--no-latency", is_flag=True, help="Skip the latency measurement."),
        click.option("--unsafe-session-options", is_flag=True,
                     help="Do not apply the workarounds for known onnxruntime traps (to reproduce its "
                          "defaults)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command("validate", cls=Command)
@click.argument("model", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--run", "run_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Artifact directory of `sgsc compress`: its test split, preservation set and references.")
@click.option("--data", "data_spec", metavar="npz:PATH",
              help="A user's data: .npz with x, y, optional preservation_indices (and logits as reference).")
@_settings
def validate_cmd(model: str, run_dir: str | None, data_spec: str | None, layer_reference: str | None,
                 report_path: str | None, markdown_path: str | None, junit_path: str | None, no_latency: bool,
                 unsafe_session_options: bool, providers: str, opt_levels: str, **settings) -> None:
    """Validate MODEL.onnx in onnxruntime and gate it: exit 0 passed, 1 a threshold failed, 2 could not
    run."""
    paths = (report_path, markdown_path, junit_path)
    inputs = {"the model": model, "--layer-reference": layer_reference,
              "--data's file": data_spec[4:] if data_spec and data_spec.startswith("npz:") else None}
    # before anything runs or is written: no output over an input (a plain error: nothing is replaced)
    check_outputs(dict(zip(("--report", "--markdown", "--junit"), paths)),
                  {**inputs, **(artifact_files(run_dir) if run_dir else {})})
    try:
        check_writable(dict(zip(("--report", "--markdown", "--junit"), paths)))
        config = ValidateConfig(providers=_csv(providers), opt_levels=_csv(opt_levels),
                                latency=not no_latency, safe_session_options=not unsafe_session_options,
                                **settings)
        report = _run(model, run_dir, data_spec, config, layer_reference)
        try:
            _write_reports(report, *paths)
        except OSError as exc:
            raise ValidationError(f"cannot write the report: {exc}") from None
    except (Exception, SystemExit) as exc:  # fail closed: the error report replaces any earlier one
        _supersede_reports(describe(exc, "validate"), *paths)
        raise
    _print_summary(report)
    finish(report.exit_code)


def _run(model: str, run_dir: str | None, data_spec: str | None, config: ValidateConfig,
         layer_reference: str | None) -> Report:
    from runtime_checks.data import EvalData
    from runtime_checks.runner import validate

    if bool(run_dir) == bool(data_spec):
        raise ValidationError("give exactly one of --run DIR or --data npz:PATH")
    if data_spec and not data_spec.startswith("npz:"):
        raise ValidationError(f"--data must be npz:PATH, got {data_spec!r}")
    data = EvalData.from_run_dir(run_dir) if run_dir else EvalData.from_npz(Path(data_spec[4:]))
    return validate(model, data, config, layer_reference=layer_reference)


def _write_reports(report: Report, json_path: str | None, md_path: str | None,
                   junit_path: str | None) -> None:
    """All the requested files, or none (``write_atomic_many``: every temp file first, then the renames)."""
    items = [(path, render()) for path, render in ((json_path, report.to_json), (md_path, report.to_markdown),
                                                   (junit_path, report.to_junit)) if path]
    write_atomic_many(items)


def _supersede_reports(message: str, *paths: str | None) -> None:
    """After an error: the error report at every requested path, all or none; if it cannot be written, remove
    what is there, so that no file at these paths says "passed" after a run that exited 2."""
    if not any(paths):
        return
    from runtime_checks.reports import Report

    try:
        _write_reports(Report(errors=[message], status="error"), *paths)
    except OSError:
        for path in paths:
            if path and (Path(path).is_file() or Path(path).is_symlink()):
                try:
                    Path(path).unlink()
                except OSError:
                    pass


def _print_summary(report: Report) -> None:
    out = sys.stdout
    for name, provider in report.providers.items():
        for split in ("preservation", "test"):
            summary = provider.summary(split)
            if summary is None or summary.n == 0:
                continue
            parity = summary.parity
            agreement = f"{parity.agreement:.4f}, {len(parity.flipped)} flipped" if parity else "no reference"
            acc = f"{summary.accuracy:.4f}" if summary.accuracy is not None else "-"
            lm = summary.metrics
            extra = (f"  loss {lm['loss']:.4f}  perplexity {lm['perplexity']:.4f}" if "perplexity" in lm
                     else "")
            print(f"{name:9s} {split:12s} accuracy {acc}  agreement {agreement}{extra}", file=out)
    if report.layers and report.layers.worst:
        worst = report.layers.worst
        print(f"largest layer error: {worst.layer} ({worst.max_error_steps:.3g} steps)", file=out)
    for name in report.workarounds:
        print(f"workaround: {name}", file=out)
    for name, reason in report.skipped_providers.items():
        print(f"skipped {name}: {reason}", file=out)
    for check in report.failed_checks:
        print(f"FAILED {check.name}: {check.reason}", file=out)
    if report.errors:  # one line: the first error, and how many more the report holds
        more = len(report.errors) - 1
        print(f"error: {report.errors[0]}" + (f" (and {more} more error(s) in the report)" if more else ""),
              file=sys.stderr)
    print(report.status.upper(), file=out)
