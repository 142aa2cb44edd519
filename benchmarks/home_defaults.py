"""The home tasks at the defaults (issue 16): ``sgsc compress --dataset D --seed S`` and nothing else.

    python -m benchmarks.home_defaults                       # digits, mnist, names; seeds 0-4; 2 jobs
    python -m benchmarks.home_defaults --datasets digits --seeds 0,1

Each (data set, seed) runs as a user would: ``sgsc compress`` with only ``--dataset``, ``--data-dir``,
``--seed`` and ``--out`` (no preset, no γ: the ``--max-drop`` controller at its default), then ``sgsc export
--profile compact`` and ``sgsc validate`` on it (the gate, onnxruntime CPU). One JSON line per unit in
``benchmarks/results/home_defaults.jsonl``; ``home_defaults.md`` sets the mean over seeds beside the full
suite's SGSC compact row (``python -m benchmarks.run --suite full``, which compresses at the per-data-set
presets), the bar being "no worse than today".
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.units import DATA_DIRS, ROOT
from benchmarks.zoo.run import _cli

RESULTS = ROOT / "benchmarks" / "results"
# the full suite's SGSC compact rows (README, "SGSC beside what you would pick instead"; 5 seeds, presets):
# test metric (accuracy %, or loss in nats for names) and the compact file's bytes
FULL_SUITE = {"digits": (98.61, 10_164), "mnist": (98.90, 14_309), "names": (1.9830, 176_653)}
LOSS_TASKS = frozenset({"names"})


def _metric(report: Path) -> float | None:
    """The test metric on onnxruntime CPU: accuracy in %, or a language model's loss in nats."""
    try:
        test = json.loads(report.read_text())["providers"]["cpu"]["test"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if "loss" in test:  # a language model (its report has a token accuracy too)
        return test["loss"]
    return round(100.0 * test["accuracy"], 4) if "accuracy" in test else None


def run_one(dataset: str, seed: int, work: str) -> dict[str, Any]:
    out = Path(work) / f"{dataset}-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    data_dir = ["--data-dir", str(DATA_DIRS[dataset])] if DATA_DIRS[dataset] else []
    row: dict[str, Any] = {"dataset": dataset, "seed": seed}
    rc, wall, err = _cli(["compress", "--dataset", dataset, *data_dir, "--seed", str(seed),
                          "--out", str(out / "run"), "--quiet"], out / "compress.log")
    row.update(rc=rc, compress_seconds=round(wall, 1), error=err)
    if rc not in (0, 1):  # 1: written, target not met
        return row
    compact = out / "compact.onnx"
    erc, _, err = _cli(["export", str(out / "run"), "--profile", "compact", "-o", str(compact)],
                       out / "export.log")
    if erc != 0:
        return {**row, "error": err}
    _cli(["validate", str(compact), "--run", str(out / "run"), "--report", str(out / "report.json"),
          "--no-latency"], out / "validate.log")
    m = json.loads((out / "run" / "manifest.json").read_text())
    fl = (m.get("metrics") or {}).get("float") or {}
    target = m.get("target") or {}
    report = out / "report.json"
    gate = json.loads(report.read_text()).get("status") if report.is_file() else None
    row.update(float_metric=(fl.get("test_loss") if "test_loss" in fl
                             else round(100.0 * fl["test_accuracy"], 4) if "test_accuracy" in fl else None),
               compact_metric=_metric(report), compact_bytes=compact.stat().st_size,
               target_met=target.get("met"), validation_drop=target.get("drop"),
               max_drop=target.get("max_drop"), choice=target.get("choice"), gate=gate,
               ratio=(m.get("totals") or {}).get("ratio"))
    return row


def _summary(rows: list[dict[str, Any]]) -> str:
    lines = ["| data set | seeds | float | SGSC compact (defaults) | compact bytes | full suite (presets) | "
             "target met | gate passed | compress s |", "|---|---|---|---|---|---|---|---|---|"]
    for ds in FULL_SUITE:
        got = [r for r in rows if r["dataset"] == ds and r.get("compact_bytes")]
        if not got:
            continue

        def ms(key: str, nd: int, got: list[dict[str, Any]] = got) -> str:
            v = [float(r[key]) for r in got if r.get(key) is not None]
            if not v:
                return "–"
            sd = f" ± {statistics.stdev(v):.{nd}f}" if len(v) > 1 else ""
            return f"{statistics.mean(v):.{nd}f}{sd}"

        nd = 4 if ds in LOSS_TASKS else 2
        ref_metric, ref_bytes = FULL_SUITE[ds]
        unit = " nats" if ds in LOSS_TASKS else " %"
        lines.append(f"| {ds} | {len(got)} | {ms('float_metric', nd)} | {ms('compact_metric', nd)}{unit} | "
                     f"{ms('compact_bytes', 0)} | {ref_metric}{unit} at {ref_bytes:,} B | "
                     f"{sum(bool(r.get('target_met')) for r in got)}/{len(got)} | "
                     f"{sum(r.get('gate') == 'passed' for r in got)}/{len(got)} | "
                     f"{ms('compress_seconds', 0)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,mnist,names")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    ap.add_argument("--results", type=Path, default=RESULTS / "home_defaults.jsonl")
    ap.add_argument("--summary-only", action="store_true", help="rewrite the .md from the results file")
    args = ap.parse_args(argv)
    md = args.results.with_suffix(".md")
    if args.summary_only:
        rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
        commits = ", ".join(sorted({r.get("commit", "?") for r in rows}))
        dates = sorted(r.get("date", "") for r in rows)
        md.write_text(f"# Home tasks at the defaults (`python -m benchmarks.home_defaults`, {dates[0]} to "
                      f"{dates[-1]}, {commits})\n\n" + _summary(rows))
        print(md.read_text())
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="sgsc-home-"))
    units = [(ds, int(s)) for ds in args.datasets.split(",") for s in args.seeds.split(",")]
    units.sort(key=lambda u: ("names", "mnist", "digits").index(u[0]))  # longest first
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "machine": f"{platform.machine()}, {platform.system()}"}
    rows = []
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.jobs) as ex, args.results.open("a") as f:
        for row in ex.map(run_one, *zip(*units), [str(work)] * len(units)):
            row = {**row, **meta}
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(json.dumps({k: row.get(k) for k in ("dataset", "seed", "rc", "compact_metric",
                                                      "compact_bytes", "target_met", "gate")}), flush=True)
    md.write_text(f"# Home tasks at the defaults (`python -m benchmarks.home_defaults`, {meta['date']}, "
                  f"{commit})\n\n" + _summary(rows))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
