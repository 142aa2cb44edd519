"""The one-screen summary that ends ``sgsc pipeline``: accuracy, bits, file sizes, gate verdicts, where files
are."""

from __future__ import annotations

from sgsc_export._tables import render_rows
from sgsc_export.cli.pipeline.run import PipelineResult
from sgsc_export.cli.report.tables import failed_checks, overview, provider_verdicts
from sgsc_export.cli.tables import target_line

__all__ = ["summary"]


def summary(result: PipelineResult) -> str:
    m, cfg = result.manifest, result.config
    lines = [f"sgsc pipeline: {result.status.upper()}  ({m['dataset']['name']}, {m['config']['steps']} "
             f"steps, seed {m['seed']}; {len(m.get('restores', []))} restore event(s))", ""]
    head, rows = overview(m, result.exports, result.validations)
    lines += render_rows([head, *rows])
    kept = sum(layer["channels_kept"] for layer in m["layers"])
    before = sum(layer["channels_before"] for layer in m["layers"])
    lines.append(f"channels kept {kept}/{before} in {len(m['layers'])} quantised layers")
    verdicts = [f"{profile}/{provider} {verdict.upper()}" for profile, report in result.validations.items()
                for provider, verdict in provider_verdicts(report).items()]
    lines.append("gate: " + ", ".join(verdicts))
    target = target_line(m)
    if target:
        lines.append("target: " + target)
    failures = failed_checks(result.validations)
    for failure in failures[:4]:
        lines.append(f"  FAILED {failure}")
    if len(failures) > 4:
        lines.append(f"  … and {len(failures) - 4} more failed check(s): see the validation reports")
    reused = [s.name for s in result.stages if s.reused]
    if reused:
        lines.append(f"reused: {', '.join(reused)} (unchanged inputs and config; --force redoes them)")
    out = result.out
    lines += ["", f"artifact    {out}/  (manifest.json, checkpoints/last.pt)",
              "onnx        " + "  ".join(f"{out}/onnx/{p}.onnx" for p in cfg.profiles),
              f"validation  {out}/validation/<profile>.json|.md|.junit.xml"]
    if result.report_html:
        lines.append(f"report      {result.report_html}  {result.report_md}  {out}/figures/*.png")
    return "\n".join(lines)
