"""``report.md``: the same content as report.html, the pictures as links to ``figures/*.png``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgsc_export.cli.report.tables import Table, failed_checks, overview, run_verdict, validation_table

if TYPE_CHECKING:
    from sgsc_export.cli.report import RunData

__all__ = ["render_markdown"]


def _table(table: Table) -> list[str]:
    head, rows = table
    clean = lambda s: s.replace("|", "\\|")
    return (["| " + " | ".join(clean(h) or " " for h in head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows] + [""])


def render_markdown(run: RunData, figures: list[str]) -> str:
    from sgsc_export.cli.report import FIGURES

    m = run.manifest
    verdict = run_verdict(run.validations)
    lines = [f"# sgsc pipeline: {m['dataset']['name']} — {verdict.upper()}", "",
             f"Model `{m['model'].get('factory')}`, {m['config']['steps']} steps, seed {m['seed']}, "
             f"{len(m.get('restores', []))} restore event(s).", "", "## Summary", ""]
    lines += _table(overview(m, run.exports, run.validations))
    failures = failed_checks(run.validations)
    if failures:
        lines += ["Failed checks:", ""] + [f"- {f}" for f in failures] + [""]
    for stem in figures:
        title, caption = FIGURES[stem]
        lines += [f"## {title}", "", f"![{title}](figures/{stem}.png)", "", caption, ""]
    lines += ["## Validation per provider", ""] + _table(validation_table(run.validations))
    return "\n".join(lines)
