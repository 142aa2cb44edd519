"""``report.html``: one self-contained page. Pictures are inline ``data:`` PNGs, the style is inline, there is
no script, and a Content-Security-Policy forbids every network fetch, so the page renders the same offline.
"""

from __future__ import annotations

import base64
from html import escape
from typing import TYPE_CHECKING

from sgsc_export.cli.report.tables import Table, failed_checks, overview, run_verdict, validation_table

if TYPE_CHECKING:
    from sgsc_export.cli.report import RunData

__all__ = ["render_html"]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #666; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; } th { background: #f3f3f3; }
.passed { color: #1a7f37; font-weight: bold; } .failed { color: #c62828; font-weight: bold; }
.error, .skipped { color: #b26a00; font-weight: bold; }
figure { margin: 1.2em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _cell(text: str) -> str:
    word = text.strip().lower().split(":")[-1].strip()
    cls = f' class="{word}"' if word in {"passed", "failed", "error", "skipped"} else ""
    return f"<td{cls}>{escape(text)}</td>"


def _table(table: Table) -> str:
    head, rows = table
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def render_html(run: RunData, pictures: dict[str, bytes]) -> str:
    from sgsc_export.cli.report import FIGURES

    m = run.manifest
    verdict = run_verdict(run.validations)
    title = f"sgsc pipeline: {m['dataset']['name']}"
    badge = f"<span class=\"{verdict.split()[0]}\">{escape(verdict.upper())}</span>"
    body = [f"<h1>{escape(title)} — {badge}</h1>",
            f"<p class=\"muted\">Run directory <code>{escape(str(run.out))}</code>; model "
            f"<code>{escape(str(m['model'].get('factory')))}</code>; {m['config']['steps']} steps, seed "
            f"{m['seed']}; {len(m.get('restores', []))} restore event(s); sgsc-export "
            f"{escape(m['versions']['sgsc_export'])}, torch {escape(m['versions']['torch'])}.</p>",
            "<h2>Summary</h2>", _table(overview(m, run.exports, run.validations))]
    failures = failed_checks(run.validations)
    if failures:
        body.append("<h3>Failed checks</h3><ul>" + "".join(f"<li>{escape(f)}</li>" for f in failures)
                    + "</ul>")
    for stem, png in pictures.items():
        caption_title, caption = FIGURES[stem]
        data = base64.b64encode(png).decode()
        body.append(f"<h2>{escape(caption_title)}</h2><figure><img src=\"data:image/png;base64,{data}\" "
                    f"alt=\"{escape(caption_title)}\"><figcaption>{escape(caption)}</figcaption></figure>")
    body += ["<h2>Validation per provider</h2>", _table(validation_table(run.validations))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
