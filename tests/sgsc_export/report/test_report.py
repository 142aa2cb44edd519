"""report.html / report.md: self-contained, every picture present; checked in headless chromium when
installed."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest

from sgsc_export.cli.report import FIGURES

PNG = b"\x89PNG\r\n\x1a\n"


def test_pictures_are_pngs_beside_the_report(toy_run):
    out, _ = toy_run
    for stem in FIGURES:
        data = (out / "figures" / f"{stem}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, stem


def test_html_is_self_contained(toy_run):
    out, _ = toy_run
    html = (out / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(FIGURES) == html.count("<img ")
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "Content-Security-Policy" in html and "<script" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "@import" not in html
    for title, _ in FIGURES.values():
        assert title in html
    assert "Validation per provider" in html and "<td>cpu</td>" in html


def test_markdown_links_the_pictures(toy_run):
    out, _ = toy_run
    md = (out / "report.md").read_text()
    for stem in FIGURES:
        assert f"(figures/{stem}.png)" in md
    assert "| profile | provider | verdict |" in md and "| test accuracy |" in md


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const errors = window.__errors.length;
  document.body.setAttribute('data-probe', `images=${imgs.length} broken=${bad} errors=${errors}`);
});
</script>"""


@pytest.mark.skipif(_chromium() is None,
                    reason="chromium is not installed (Debian: apt-get install chromium)")
def test_report_loads_in_headless_chromium(toy_run, tmp_path):
    out, _ = toy_run
    html = (out / "report.html").read_text()
    # the probe is the test's own script: allow inline scripts in this copy only, keep every fetch forbidden
    page = tmp_path / "report.html"
    page.write_text(html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';")
                    .replace("</head>", PROBE + "</head>"))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    probe = re.search(r'data-probe="images=(\d+) broken=(\d+) errors=(\d+)"', proc.stdout)
    assert probe, f"the page did not load: {proc.stderr[-2000:]}"
    assert probe.groups() == (str(len(FIGURES)), "0", "0"), probe.group(0)
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line
               or "Content Security Policy" in line]
    assert not console, console


def test_the_target_plot_rings_the_kept_check_and_the_one_tried_first():
    from sgsc_export.cli.report.plots import target_over_training

    records = [{"step": s, "validation_drop": d, "finetune": s > 30} for s, d in
               ((10, 0.1), (20, 0.3), (30, 0.9), (40, 0.6), (50, 0.2))]
    manifest = {"target": {"unit": "pp", "max_drop": 0.5, "met": True, "drop": 0.2,
                           "gamma_trajectory": [[10, 0.5], [20, 0.8], [30, 1.3]],
                           "choice": {"compression": "smallest_met", "compression_step": 20, "retry": True,
                                      "tried": [{"compression": "smallest_near", "compression_step": 30}]}}}
    assert target_over_training(manifest, {"records": records}).startswith(PNG)
