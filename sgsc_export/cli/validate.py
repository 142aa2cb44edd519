"""``sgsc validate``: the deployment gate as a click command (wired into the ``sgsc`` group by sgsc_export.cli).

Exit codes: 0 passed, 1 a threshold failed, 2 the check could not run. Every error, anticipated or not, ends in
``error: …`` on stderr and exit 2 (and an error report when ``--report`` was given): no path leads to 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runtime_checks.gate import Thresholds
from runtime_checks.reports import Report
from sgsc_export._io import artifact_files, check_outputs, check_writable, write_atomic_many
from sgsc_export.errors import SGSCError, ValidationError, user_code_exit

__all__ = ["validate_cmd"]


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _ints(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(part) for part in _csv(value))
    except ValueError as exc:
        raise ValidationError(f"--batch-sizes must be comma-separated integers, got {value!r}") from exc
    if not out or min(out) < 1:
        raise ValidationError(f"--batch-sizes must be positive integers, got {value!r}")
    return out


_MAX_THREADS = 1024  # the pipeline's bound (PipelineConfig.threads)
_MAX_BATCH = 65536


class _BatchSizes(click.ParamType):
    """``--batch-sizes``: a comma list of integers in [1, _MAX_BATCH]; a bad one is a usage error (exit 2)."""

    name = "N[,N…]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        try:
            sizes = [int(part) for part in _csv(str(value))]
        except ValueError:
            self.fail(f"must be comma-separated integers, got {value!r}", param, ctx)
        if not sizes or min(sizes) < 1 or max(sizes) > _MAX_BATCH:
            self.fail(f"each batch size must be in [1, {_MAX_BATCH}], got {value!r}", param, ctx)
        return ",".join(map(str, sizes))


def _write_reports(report: Report, json_path: str | None, md_path: str | None, junit_path: str | None) -> None:
    """All the requested files, or none (``write_atomic_many``: every temp file first, then the renames)."""
    items = [(path, render()) for path, render in ((json_path, report.to_json), (md_path, report.to_markdown),
                                                   (junit_path, report.to_junit)) if path]
    write_atomic_many(items)


def _supersede_reports(report: Report, *paths: str | None) -> None:
    """After an error: the error report at every requested path, all or none; if it cannot be written, remove
    what is there, so that no file at these paths says "passed" after a run that exited 2."""
    try:
        _write_reports(report, *paths)
    except OSError:
        for path in paths:
            if path and (Path(path).is_file() or Path(path).is_symlink()):
                try:
                    Path(path).unlink()
                except OSError:
                    pass


@click.command("validate")
@click.argument("model", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--run", "run_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Artifact directory of `sgsc compress`: its test split, preservation set and references.")
@click.option("--data", "data_spec", metavar="npz:PATH",
              help="A user's data: .npz with x, y, optional preservation_indices (and logits as reference).")
@click.option("--providers", default="cpu", show_default=True, help="Comma list of cpu, cuda, tensorrt.")
@click.option("--require-providers", is_flag=True, help="A requested provider that is unavailable is an error.")
@click.option("--opt-levels", default="disabled,all", show_default=True,
              help="Comma list of onnxruntime optimisation levels: disabled, basic, extended, all.")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True, metavar="PP",
              help="Largest accuracy drop against the float model, percentage points, per split.")
@click.option("--min-agreement", type=float, default=0.99, show_default=True, metavar="FRACTION",
              help="Smallest top-1 agreement with the PyTorch reference.")
@click.option("--max-layer-error", type=float, default=1.0, show_default=True, metavar="STEPS",
              help="With --layers: largest per-layer error in quantisation steps.")
@click.option("--max-perplexity-ratio", type=float, default=None, metavar="RATIO",
              help="Language models: largest perplexity over the float model's, per split (default 1.05).")
@click.option("--max-logit-diff", type=float, default=None, metavar="X",
              help="Largest |Δlogit| against the PyTorch reference (default: derived from the file's profile, "
                   "see docs/REPORT.md).")
@click.option("--layers", is_flag=True, help="Per-layer parity of the quantised layers.")
@click.option("--layer-reference", metavar="REF.onnx", type=click.Path(dir_okay=False),
              help="With --layers: a reference ONNX model (default: the artifact's float weights, or the model's "
                   "own dequantized weights).")
@click.option("--report", "report_path", metavar="report.json", help="Write the JSON report here.")
@click.option("--markdown", "markdown_path", metavar="PATH", help="Write a Markdown summary here.")
@click.option("--junit", "junit_path", metavar="PATH", help="Write JUnit XML here.")
@click.option("--batch-sizes", type=_BatchSizes(), default="1,64", show_default=True,
              help=f"Latency batch sizes, comma list, each in [1, {_MAX_BATCH}].")
@click.option("--threads", type=click.IntRange(1, _MAX_THREADS), default=1, show_default=True,
              help=f"intra-op threads (fixed for latency), in [1, {_MAX_THREADS}].")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option("--unsafe-session-options", is_flag=True,
              help="Do not apply the workarounds for known onnxruntime traps (to reproduce its defaults).")
def validate_cmd(model: str, run_dir: str | None, data_spec: str | None, providers: str, require_providers: bool,
                 opt_levels: str, max_accuracy_drop: float, min_agreement: float, max_layer_error: float,
                 max_perplexity_ratio: float | None, max_logit_diff: float | None, layers: bool, layer_reference: str | None, report_path: str | None, markdown_path: str | None,
                 junit_path: str | None, batch_sizes: str, threads: int, no_latency: bool,
                 unsafe_session_options: bool) -> None:
    """Validate MODEL.onnx in onnxruntime and gate it: exit 0 passed, 1 a threshold failed, 2 could not run."""
    outputs = {"--report": report_path, "--markdown": markdown_path, "--junit": junit_path}
    try:  # before anything runs or is written: no output over an input, none unwritable
        inputs = {"the model": model, "--layer-reference": layer_reference,
                  "--data's file": data_spec[4:] if data_spec and data_spec.startswith("npz:") else None}
        check_outputs(outputs, {**inputs, **(artifact_files(run_dir) if run_dir else {})})
    except SGSCError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    try:
        check_writable(outputs)
    except SGSCError as exc:
        _supersede_reports(Report(errors=[str(exc)], status="error"), report_path, markdown_path, junit_path)
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    try:
        report = _run(model, run_dir, data_spec, providers, require_providers, opt_levels, max_accuracy_drop,
                      min_agreement, (max_layer_error, max_perplexity_ratio, max_logit_diff), layers, layer_reference, batch_sizes, threads, no_latency,
                      unsafe_session_options)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - fail closed: every error, expected or not, is exit 2
        if isinstance(exc, SystemExit):  # a user's model code (validate --run rebuilds the module) called sys.exit
            message = str(user_code_exit(exc, "validate"))
        else:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if not isinstance(exc, ValidationError | ValueError):
                message = f"{type(exc).__name__}: {message}"
        _supersede_reports(Report(errors=[message], status="error"), report_path, markdown_path, junit_path)
        click.echo(f"error: {message}", err=True)
        raise SystemExit(2) from None
    try:
        _write_reports(report, report_path, markdown_path, junit_path)
    except OSError as exc:
        message = f"cannot write the report: {exc}"
        _supersede_reports(Report(errors=[message], status="error"), report_path, markdown_path, junit_path)
        click.echo(f"error: {message}", err=True)
        raise SystemExit(2) from None
    _print_summary(report)
    raise SystemExit(report.exit_code)


def _run(model, run_dir, data_spec, providers, require_providers, opt_levels, max_accuracy_drop, min_agreement,
         max_layer_error, layers, layer_reference, batch_sizes, threads, no_latency, unsafe) -> Report:
    from runtime_checks.data import EvalData
    from runtime_checks.runner import validate

    if bool(run_dir) == bool(data_spec):
        raise ValidationError("give exactly one of --run DIR or --data npz:PATH")
    if data_spec and not data_spec.startswith("npz:"):
        raise ValidationError(f"--data must be npz:PATH, got {data_spec!r}")
    data = EvalData.from_run_dir(run_dir) if run_dir else EvalData.from_npz(Path(data_spec[4:]))
    max_layer_error, max_perplexity_ratio, max_logit_diff = max_layer_error
    thresholds = Thresholds(max_accuracy_drop, min_agreement, max_layer_error, max_perplexity_ratio, max_logit_diff)
    return validate(model, data, providers=_csv(providers), opt_levels=_csv(opt_levels), thresholds=thresholds,
                    layers=layers, latency=not no_latency, require_providers=require_providers, threads=threads,
                    batch_sizes=_ints(batch_sizes), safe_session_options=not unsafe, layer_reference=layer_reference)


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
            extra = (f"  loss {lm['loss']:.4f}  perplexity {lm['perplexity']:.4f}" if "perplexity" in lm else "")
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
