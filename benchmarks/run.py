"""One command for the benchmark table: SGSC beside float, onnxruntime's PTQ, uniform QAT and λ = 0 (issue 7).

    python -m benchmarks.run --suite quick     # digits, one seed, small γ sweep; ≤ 10 minutes on 2 cores
    python -m benchmarks.run --suite full      # digits, MNIST-10k, names; five seeds; γ sweeps;
                                               # 110 min on 2 cores
    python -m benchmarks.run --suite seeds     # digits, 20 seeds of float, PTQ, SGSC and λ = 0: seed variance
    python -m benchmarks.run --suite select    # the presets' γ (names: and λ) chosen on a validation split

Units (one method, one data set, one seed: see ``benchmarks/units.py``) run in ``--jobs`` worker processes of
one torch thread each, longest first, each after the units it needs. Every finished unit is one JSON line in
``benchmarks/results/bench_<suite>.jsonl``; a rerun skips the units already there (``--fresh`` starts over),
so an interrupted run continues where it stopped. When all units are done, the latency of every ``.onnx`` of a
data set is measured in this process alone (nothing else running), interleaved model by model at batch 1 and
64, into ``bench_<suite>_latency.jsonl``; then ``benchmarks.summary`` writes the table (``bench_<suite>.md``),
the Pareto plot (``bench_<suite>_pareto.png``) and, for ``full``, the README's results section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

from benchmarks.units import DATA_DIRS, ROOT, VALIDATION_SUITES, Unit, run_unit, workdir

RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Suite:
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    sweep_sgsc: dict[str, tuple[float, ...]]     # extra γ (beside the preset's) on seed 0
    sweep_lambda0: dict[str, tuple[float, ...]]
    qat_bits: tuple[int, ...] = (4, 2)
    methods: tuple[str, ...] = ("float", "sgsc", "lambda0", "ptq", "qat")
    sweep_every_seed: bool = False               # the sweeps on every seed, not on the first only
    sweep_sgsc_lam: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)  # extra (γ, λ)
    seeds_by_dataset: dict[str, tuple[int, ...]] = field(default_factory=dict)  # where not ``seeds``


SUITES = {
    "quick": Suite(("digits",), (0,), {"digits": (0.2, 1.0)}, {"digits": (0.2, 1.0)}),
    "full": Suite(("digits", "mnist", "names"), (0, 1, 2, 3, 4),
                  {"digits": (0.1, 0.2, 0.5, 1.0), "mnist": (0.1, 0.3, 0.5), "names": (0.05,)},
                  {"digits": (0.1, 0.2, 0.5, 1.0), "mnist": (0.3, 0.5), "names": (0.05,)}),
    # the seed-variance question (does λ > 0 reduce it?) with
    # enough seeds for an F interval that can tell; no QAT
    "seeds": Suite(("digits",), tuple(range(20)), {}, {}, methods=("float", "sgsc", "lambda0", "ptq")),
    # the presets' γ, chosen on a validation split held out of the training split (units.VALIDATION_SUITES) by
    # the rule in summary.select_setting, so that no setting the full suite measures was picked on its test
    # split; PTQ for the size budget the rule applies (1/6 of its INT8 file)
    "select": Suite(("digits", "mnist", "names"), (0, 1, 2),
                    {"digits": (0.1, 0.2, 0.3, 0.5, 1.0), "mnist": (0.1, 0.2, 0.3, 0.5),
                     "names": (0.02, 0.05, 0.1)},
                    {}, methods=("float", "sgsc", "ptq"), sweep_every_seed=True,
                    sweep_sgsc_lam={"names": ((0.05, 1.0),)},
                    # names: two seeds, its loss varies little between seeds; digits: ten, its 288 validation
                    # images tied γ 0.5 and 1.0 on three (1 image = 0.35 pp)
                    seeds_by_dataset={"names": (0, 1), "digits": tuple(range(10))}),
}
# rough CPU seconds per unit on this machine (longest first keeps two workers busy to the end)
COST = {("mnist", "sgsc"): 360, ("mnist", "lambda0"): 150, ("mnist", "qat"): 310, ("names", "sgsc"): 280,
        ("names", "lambda0"): 145, ("names", "qat"): 145, ("names", "float"): 85, ("mnist", "float"): 45}


def default_gamma(dataset: str) -> float:
    from sgsc_export.presets import preset

    return preset(dataset).gamma


def plan(suite: Suite) -> list[Unit]:
    from sgsc_export.presets import preset

    units: list[Unit] = []
    for ds in suite.datasets:
        g0, lam0 = preset(ds).gamma, preset(ds).lam
        seeds = suite.seeds_by_dataset.get(ds, suite.seeds)
        for seed in seeds:
            units += [u for u in (Unit(ds, seed, "float"), Unit(ds, seed, "sgsc", gamma=g0),
                                   Unit(ds, seed, "lambda0", gamma=g0), Unit(ds, seed, "ptq"))
                      if u.method in suite.methods]
            if "qat" in suite.methods:
                units += [Unit(ds, seed, "qat", bits=b) for b in suite.qat_bits]
        for seed in seeds if suite.sweep_every_seed else seeds[:1]:
            units += [Unit(ds, seed, "sgsc", gamma=g) for g in suite.sweep_sgsc.get(ds, ()) if g != g0]
            units += [Unit(ds, seed, "lambda0", gamma=g) for g in suite.sweep_lambda0.get(ds, ()) if g != g0]
            units += [Unit(ds, seed, "sgsc", gamma=g, lam=lam) for g, lam in suite.sweep_sgsc_lam.get(ds, ())
                      if lam != lam0]
    return units


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _append(path: Path, rec: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _files_present(suite: str, unit: Unit) -> bool:
    """Whether the files the units after ``unit`` read are on disk (the float weights; the SGSC artifact)."""
    d = workdir(suite, unit)
    return ((d / "float.pt").is_file() if unit.method == "float"
            else (d / "artifact" / "manifest.json").is_file())


def run_units(name: str, units: list[Unit], jobs: int, log: Path) -> list[dict]:
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if "error" not in rec:
                done[rec["key"]] = rec
    todo = [u for u in units if u.key not in done]
    gammas = {u.dataset: default_gamma(u.dataset) for u in units}
    # a unit recorded as done whose files are gone (a fresh checkout: runs/ is not committed) is redone when a
    # unit still to run needs them; training is deterministic per seed, so the redone reference is the same
    # model
    for u in list(todo):
        for d in u.deps(gammas[u.dataset]):
            if d.key in done and not _files_present(name, d):
                del done[d.key]
                todo.append(d)
    print(f"{len(units)} units, {len(units) - len(todo)} already in {log.name}, {len(todo)} to run on {jobs} "
          "worker(s)", flush=True)
    failed: set[str] = set()
    running: dict = {}
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        while todo or running:
            ready = [u for u in todo if all(d.key in done for d in u.deps(gammas[u.dataset]))]
            blocked = [u for u in todo if any(d.key in failed for d in u.deps(gammas[u.dataset]))]
            for u in blocked:
                todo.remove(u)
                failed.add(u.key)
                print(f"skip {u.key}: a unit it needs failed", flush=True)
            ready.sort(key=lambda u: -COST.get((u.dataset, u.method), 30))
            while ready and len(running) < jobs:
                u = ready.pop(0)
                todo.remove(u)
                running[pool.submit(run_unit, name, u, gammas[u.dataset])] = (u, time.perf_counter())
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                u, t0 = running.pop(fut)
                try:
                    rec = fut.result()
                except Exception as exc:  # a unit's failure is recorded, the others go on
                    rec = {"key": u.key,
                           "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                    failed.add(u.key)
                rec["unit_wall_seconds"] = round(time.perf_counter() - t0, 1)
                rec["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                _append(log, rec)
                if "error" not in rec:
                    done[u.key] = rec
                print(f"{'FAILED' if 'error' in rec else 'done'} {u.key} in {rec['unit_wall_seconds']} s"
                      + (f": {rec['error']}" if "error" in rec else ""), flush=True)
    return [done[u.key] for u in units if u.key in done]


def measure_latency(name: str, records: list[dict], out: Path, rounds: int = 5, runs: int = 10) -> list[dict]:
    """Median ms per batch (1 and 64) of every .onnx, one CPU thread, in this process; models are interleaved
    round by round so that drift of the machine falls on all of them alike."""
    import numpy as np

    from benchmarks.units import cpu_session, dataset
    from runtime_checks.latency import LatencyConfig
    from runtime_checks.latency import measure_latency as timeit

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    earlier = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            earlier[(row["key"], row["format"])] = row
    rows = []
    for ds in dict.fromkeys(r["dataset"] for r in records):
        x = np.ascontiguousarray(dataset(ds).x_test[:64])
        models = []
        for r in records:
            if r["dataset"] != ds or "onnx" not in r:
                continue
            unit_dir = workdir(name,
                               Unit(r["dataset"], r["seed"], r["method"], r["gamma"], r["bits"],
                                    r.get("lam")))
            base = workdir(name, Unit(r["dataset"], r["seed"], "float")) if r["method"] == "ptq" else unit_dir
            for fmt in r["onnx"]:
                path = (base / "float.onnx") if fmt == "float" else (unit_dir / f"{fmt}.onnx")
                if path.is_file():
                    models.append((r["key"], fmt, cpu_session(path)))
        times: dict[tuple, dict[int, list[float]]] = {(k, f): {1: [], 64: []} for k, f, _ in models}
        cfg = LatencyConfig(batch_sizes=(1, 64), warmup=2, runs=runs)
        for _ in range(rounds):
            for key, fmt, sess in models:
                res = timeit(sess, x, "cpu", "all", 1, cfg)
                for b in (1, 64):
                    times[(key, fmt)][b].append(res.ms[b]["p50"])
        for (key, fmt), t in times.items():
            rows.append({"key": key, "format": fmt, "threads": 1, "ms_batch_1": float(np.median(t[1])),
                         "ms_batch_64": float(np.median(t[64])), "measured": now})
    # a file no longer on disk (runs/ is not committed; a later invocation on a fresh checkout) keeps its
    # earlier measurement, which says when it was taken
    fresh = {(r["key"], r["format"]) for r in rows}
    rows += [r for k, r in earlier.items() if k not in fresh]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p)
            for p in ("torch", "onnx", "onnxruntime", "onnxscript", "onnx-ir", "numpy", "scikit-learn")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), default="quick")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes (1 thread each)")
    ap.add_argument("--fresh", action="store_true",
                    help="forget earlier results of this suite and start over")
    ap.add_argument("--summary-only", action="store_true",
                    help="only rewrite the table, plot and README section")
    ap.add_argument("--datasets",
                    help="comma list: run only these data sets of the suite (the table keeps them all)")
    args = ap.parse_args(argv)
    suite = SUITES[args.suite]
    if args.datasets:
        wanted = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
        unknown = sorted(set(wanted) - set(suite.datasets))
        if unknown:
            print(f"error: --datasets {', '.join(unknown)} not in suite {args.suite} "
                  f"({', '.join(suite.datasets)})",
                  file=sys.stderr)
            return 2
        suite = replace(suite, datasets=wanted)
    missing = [ds for ds in suite.datasets if DATA_DIRS[ds] is not None and not DATA_DIRS[ds].is_dir()]
    if missing and not args.summary_only:  # a summary reads only the results, never the data
        print(f"error: {', '.join(str(DATA_DIRS[d]) for d in missing)} absent; the {args.suite} suite needs "
              "the real data in ../shared/data (use --suite quick for digits only)", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"bench_{args.suite}.jsonl"
    lat = RESULTS / f"bench_{args.suite}_latency.jsonl"
    meta_path = RESULTS / f"bench_{args.suite}_run.json"
    if not args.summary_only:
        if args.fresh:
            for p in (log, lat, meta_path):
                p.unlink(missing_ok=True)
        t0, load0 = time.perf_counter(), os.getloadavg()
        records = run_units(args.suite, plan(suite), args.jobs, log)
        t1 = time.perf_counter()
        if args.suite not in VALIDATION_SUITES:  # a validation suite picks settings; its files do not ship
            measure_latency(args.suite, records, lat)
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"invocations": []}
        meta["invocations"].append({
            "command": f"python -m benchmarks.run --suite {args.suite}" + (" --fresh" if args.fresh else "")
            + (f" --datasets {','.join(suite.datasets)}" if args.datasets else ""),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "units_seconds": round(t1 - t0, 1), "latency_seconds": round(time.perf_counter() - t1, 1),
            "wall_seconds": round(time.perf_counter() - t0, 1), "jobs": args.jobs, "cpus": os.cpu_count(),
            "load_average_start": load0, "load_average_end": os.getloadavg(),
            "machine": f"{platform.machine()}, {os.cpu_count()} "
            f"CPUs, {platform.processor() or platform.platform()}",
            "python": platform.python_version(), "versions": _versions(),
        })
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    from benchmarks.summary import IncompleteSuite, write_summary

    try:
        write_summary(args.suite, readme=args.suite == "full")
    except IncompleteSuite as err:
        print(f"error: cannot summarise suite {args.suite}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
