"""``python -m benchmarks.zoo``: every zoo model on every data set, one JSON row each.

A unit is one (model, data set), run in one worker process (``--jobs``) of one torch thread:

1. float weights trained in plain PyTorch (``train.train_float``; timed), ``float.pt``, the float ONNX and its
   test accuracy;
2. onnxruntime PTQ INT8 of the float ONNX (``train.ptq_int8``): test accuracy and bytes;
3. the installed CLI as subprocesses, at its defaults (only ``--dataset --model --weights --out``):
   ``python -m sgsc_export.cli compress``, then ``export --profile P`` and ``validate P.onnx --run RUN`` for
   every profile, each exit code captured;
4. the row: float, PTQ and per-profile SGSC test accuracy (validate's onnxruntime CPU numbers), drop in pp
   against the float ONNX, bytes, compact ÷ PTQ, channels removed / masked and layers left float (from the
   manifest; a key it lacks is null), compress wall seconds and their ratio to float training, the gate's
   verdict per profile and the first error line of every failed step.

Rows are appended to ``--results`` (default ``benchmarks/results/zoo.jsonl``) as units finish, and the
Markdown table (``zoo.md`` beside it) is rewritten from the newest row of every (model, data set) there.
``--toy`` (the smoke test) trains one epoch and passes ``--steps 10`` to compress and ``--no-latency`` to
validate; its rows carry ``"toy": true`` and it refuses to write into ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.units import ROOT
from benchmarks.zoo import data as zdata
from benchmarks.zoo import train as ztrain

RESULTS = ROOT / "benchmarks" / "results"
PROFILES = ("portable", "compact", "ort-int8")
MODEL_FILE = "benchmarks/zoo/models.py"  # relative to ROOT, as a user would type it
TOY_COMPRESS = ("--steps", "10", "--max-drop", "100")  # a smoke test is not meant to meet the target
TOY_VALIDATE = ("--no-latency",)
CLI_TIMEOUT = 3 * 3600


def _die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so that a killed
    runner leaves no worker, and a killed worker no CLI, training on alone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _first_error(text: str) -> str:
    """The last non-empty line of a CLI's stderr: its one-line error (or the exception of a traceback)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:400] if lines else ""


def _cli(args: list[str], log: Path) -> tuple[int, float, str]:
    """Run ``python -m sgsc_export.cli ARGS`` from the repository root; return (exit code, wall seconds,
    error line)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "sgsc_export.cli", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=CLI_TIMEOUT,
                           preexec_fn=_die_with_parent)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = 124, str(exc.stdout or ""), f"timed out after {CLI_TIMEOUT} s"
    wall = time.perf_counter() - t0
    log.write_text(f"$ sgsc {' '.join(args)}\n# exit {rc}, {wall:.1f} s\n"
                   f"--- stdout\n{out}\n--- stderr\n{err}")
    return rc, wall, "" if rc == 0 else _first_error(err) or _first_error(out)


def _manifest_fields(run: Path) -> dict[str, Any]:
    """What the manifest says about removal and float layers; a key it lacks is None."""
    try:
        m = json.loads((run / "manifest.json").read_text())
    except (OSError, ValueError):
        return dict.fromkeys(("channels_before", "channels_removed", "channels_masked", "masked_reasons",
                              "float_layers", "stored_ratio", "sgsc_float_acc", "target_met",
                              "validation_drop"))
    layers = m.get("layers")
    reasons: dict[str, int] = {}
    for x in layers if isinstance(layers, list) else []:
        if isinstance(x, dict) and x.get("channels_masked"):
            why = str(x.get("masked_reason"))
            reasons[why] = reasons.get(why, 0) + int(x["channels_masked"])

    def total(key: str) -> int | None:
        if not isinstance(layers, list) or not all(isinstance(x, dict) and key in x for x in layers):
            return None
        return int(sum(x[key] for x in layers))

    return {"channels_before": total("channels_before"), "channels_removed": total("channels_removed"),
            "channels_masked": total("channels_masked"), "masked_reasons": reasons,
            "float_layers": m.get("float_layers"),
            "stored_ratio": (m.get("totals") or {}).get("ratio"),
            "sgsc_float_acc": ((m.get("metrics") or {}).get("float") or {}).get("test_accuracy"),
            "target_met": (m.get("target") or {}).get("met"),
            "validation_drop": (m.get("target") or {}).get("drop")}


def _report_fields(path: Path) -> tuple[float | None, str | None, list[str], list[str]]:
    """(test accuracy on onnxruntime CPU, gate status, errors, the reasons of the failed checks) of a
    validate report."""
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None, [], []
    acc = (((r.get("providers") or {}).get("cpu") or {}).get("test") or {}).get("accuracy")
    failed = [f"{c.get('name')}: {c.get('reason')}"[:300] for c in r.get("checks") or []
              if isinstance(c, dict) and c.get("status") not in ("passed", "skipped")]
    return acc, r.get("status"), [str(e)[:400] for e in r.get("errors") or []], failed


def run_unit(model: str, dataset: str, work: str, toy: bool, seed: int = 0) -> dict[str, Any]:
    """One (model, data set), end to end, in this process; returns its row (never raises for a failed step:
    the step's error is in the row)."""
    import logging

    import torch

    from benchmarks.zoo.models import MODELS

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # the quantizer's advice to pre-process; errors still show
    t_unit = time.perf_counter()
    out = Path(work) / dataset / model
    out.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"model": model, "dataset": dataset, "toy": toy, "seed": seed, "errors": []}
    try:
        npz = zdata.build_npz(dataset, Path(work))
        d = zdata.load_npz(npz)
        row.update(n_train=len(d["y_train"]), n_val=len(d["y_val"]), n_test=len(d["y_test"]))
        torch.manual_seed(seed)
        net = MODELS[model](num_classes=int(d["y_train"].max()) + 1)
        row["params"] = sum(p.numel() for p in net.parameters())
        epochs = 1 if toy else ztrain.EPOCHS[dataset]
        row["float_epochs"] = epochs
        row["float_train_seconds"] = round(ztrain.train_float(net, d, epochs, seed), 2)
        torch.save(net.state_dict(), out / "float.pt")
        row["float_torch_acc"] = ztrain.torch_accuracy(net, d["x_test"], d["y_test"])
        ztrain.export_float_onnx(net, d["x_test"][:2], out / "float.onnx")
        row["float_acc"] = ztrain.onnx_accuracy(out / "float.onnx", d["x_test"], d["y_test"])
        row["float_onnx_bytes"] = (out / "float.onnx").stat().st_size
    except Exception as exc:  # noqa: BLE001 - recorded; without float weights nothing else can run
        row["errors"].append(f"float: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
        return _finish(row, t_unit)

    try:
        ptq = out / "ptq-int8.onnx"
        row["ptq_seconds"] = round(ztrain.ptq_int8(out / "float.onnx", ptq,
                                                   ztrain.calibration_samples(d["x_train"], seed=seed)), 2)
        row["ptq_acc"] = ztrain.onnx_accuracy(ptq, d["x_test"], d["y_test"])
        row["ptq_bytes"] = ptq.stat().st_size
    except Exception as exc:  # noqa: BLE001 - onnxruntime's PTQ failing on a model is a result
        row["errors"].append(f"ptq: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")

    spec = f"{MODEL_FILE}:{model}"
    run = out / "sgsc"
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    compress = ["compress", "--dataset", f"npz:{npz}", "--model", spec, "--weights", str(out / "float.pt"),
                "--out", str(run), "--quiet", *(TOY_COMPRESS if toy else ())]
    rc, wall, err = _cli(compress, logs / "compress.log")
    row["rc"] = {"compress": rc}
    row["compress_seconds"] = round(wall, 2)
    row["compress_over_float_train"] = (round(wall / row["float_train_seconds"], 2)
                                        if row["float_train_seconds"] > 0 else None)
    if rc not in (0, 1):  # 1: the --max-drop target was missed; the artifact is written and usable
        row["errors"].append(f"compress (exit {rc}): {err}")
    row.update(_manifest_fields(run))
    row.update(sgsc_acc={}, drop_pp={}, bytes={}, gate={}, gate_failed={})
    for profile in PROFILES:
        onnx_path = out / f"{profile}.onnx"
        acc = status = None
        if rc in (0, 1):
            erc, _, err = _cli(["export", str(run), "--profile", profile, "-o", str(onnx_path),
                                "--model", spec], logs / f"export-{profile}.log")
            row["rc"][f"export-{profile}"] = erc
            if erc != 0:
                row["errors"].append(f"export {profile} (exit {erc}): {err}")
            else:
                row["bytes"][profile] = onnx_path.stat().st_size
                report = out / f"validate-{profile}.json"
                vrc, _, err = _cli(["validate", str(onnx_path), "--run", str(run), "--report", str(report),
                                    *(TOY_VALIDATE if toy else ())], logs / f"validate-{profile}.log")
                row["rc"][f"validate-{profile}"] = vrc
                acc, status, errs, row["gate_failed"][profile] = _report_fields(report)
                if vrc not in (0, 1):  # 1 is a failed threshold: a verdict, not an error
                    row["errors"].append(f"validate {profile} (exit {vrc}): {err}")
                row["errors"] += [f"validate {profile}: {e}" for e in errs]
        row["sgsc_acc"][profile] = acc
        row["gate"][profile] = status
        row["drop_pp"][profile] = (round(100 * (row["float_acc"] - acc), 2) if acc is not None else None)
        row["bytes"].setdefault(profile, None)
    row["compact_bytes"] = row["bytes"]["compact"]
    row["compact_over_ptq"] = (round(row["compact_bytes"] / row["ptq_bytes"], 4)
                               if row["compact_bytes"] and row.get("ptq_bytes") else None)
    return _finish(row, t_unit)


def _finish(row: dict[str, Any], t0: float) -> dict[str, Any]:
    import onnxruntime
    import torch

    row["error"] = row["errors"][0] if row["errors"] else None
    row["unit_wall_seconds"] = round(time.perf_counter() - t0, 1)
    row["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    row["versions"] = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                       "python": platform.python_version()}
    return row


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- the table


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _num(x: Any, fmt: str = "{}") -> str:
    return "–" if x is None else fmt.format(x)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The newest row of every (model, data set), as a Markdown table."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        newest[(r["model"], r["dataset"])] = r
    head = ("| model | data | float acc % | PTQ acc % | PTQ bytes | SGSC acc % portable / compact / ort-int8 "
            "| drop pp (compact) | compact bytes | compact ÷ PTQ | channels removed / masked / of "
            "| float layers | compress s (× float training) | target met (validation drop pp) "
            "| gate portable / compact / ort-int8 | error |")
    lines = ["# Model zoo: SGSC at its defaults against onnxruntime PTQ INT8", "",
             "Command: `python -m benchmarks.zoo`. Accuracy on the test split in onnxruntime CPU; drop "
             "against the float ONNX; bytes of the `.onnx` files. Rows marked *toy* are smoke tests, not "
             "results.", "",
             *summary(list(newest.values())), "",
             head, "|" + "---|" * 15]
    for (model, ds), r in sorted(newest.items()):
        acc = r.get("sgsc_acc") or {}
        gate = r.get("gate") or {}
        ch = (f"{_num(r.get('channels_removed'))} / {_num(r.get('channels_masked'))} / "
              f"{_num(r.get('channels_before'))}")
        fl = r.get("float_layers")
        fl_text = ", ".join(fl) if fl else ("none" if fl == [] else "–")
        secs = (f"{_num(r.get('compress_seconds'), '{:.0f}')} (× {_num(r.get('compress_over_float_train'))})"
                if r.get("compress_seconds") is not None else "–")
        err = (r.get("error") or "").replace("|", "\\|")
        met = r.get("target_met")
        vd = _num(r.get("validation_drop"), "{:.2f}")
        target = "–" if met is None else f"{'yes' if met else 'no'} ({vd})"
        lines.append(
            f"| {model}{' *toy*' if r.get('toy') else ''} | {ds} | {_pct(r.get('float_acc'))} "
            f"| {_pct(r.get('ptq_acc'))} | {_num(r.get('ptq_bytes'))} "
            f"| {' / '.join(_pct(acc.get(p)) for p in PROFILES)} "
            f"| {_num((r.get('drop_pp') or {}).get('compact'))} | {_num(r.get('compact_bytes'))} "
            f"| {_num(r.get('compact_over_ptq'))} | {ch} | {fl_text} "
            f"| {secs} | {target} | {' / '.join(gate.get(p) or '–' for p in PROFILES)} | {err} |")
    why_lines = [f"- {model} / {ds}: " + "; ".join(f"{why}: {n}" for why, n in
                                                   sorted(r["masked_reasons"].items(), key=lambda kv: -kv[1]))
                 for (model, ds), r in sorted(newest.items()) if r.get("masked_reasons")]
    if why_lines:
        lines += ["", "Masked channels by reason (`layers[].masked_reason` of each artifact: why they were "
                  "not removed), channels:", "", *why_lines]
    return "\n".join(lines) + "\n"


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 16's acceptance bar over the given rows (the newest per model and data set), one line per data
    set: how many meet each part of it."""
    out = []
    for ds in sorted({r["dataset"] for r in rows if not r.get("toy")}):
        rs = [r for r in rows if r["dataset"] == ds and not r.get("toy")]
        drops = [(r.get("drop_pp") or {}).get("compact") for r in rs]
        drops = [d for d in drops if d is not None]
        ratio = [r.get("compact_over_ptq") for r in rs if r.get("compact_over_ptq") is not None]
        times = [r["compress_over_float_train"] for r in rs if r.get("compress_over_float_train") is not None]
        gates = sum(all((r.get("gate") or {}).get(p) == "passed" for p in PROFILES) for r in rs)
        mean = f"{sum(drops) / len(drops):.2f}" if drops else "–"
        worst = max(drops, default=float("nan"))
        out.append(
            f"- {ds}, {len(rs)} models: compact drop ≤ 1.0 pp on {sum(d <= 1.0 for d in drops)} (mean {mean} "
            f"pp, max {worst:.2f}); compact ≤ 1/4 of PTQ on {sum(x <= 0.25 for x in ratio)}; all three gates "
            f"passed on {gates}; compress ≤ 3× float training on {sum(t <= 3 for t in times)}; target met on "
            f"{sum(bool(r.get('target_met')) for r in rs)}.")
    return out


def write_markdown(results: Path) -> Path:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    md = results.with_suffix(".md")
    md.write_text(markdown(rows))
    return md


# ---------------------------------------------------------------- command line


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from benchmarks.zoo.models import MODELS

    p = argparse.ArgumentParser(prog="python -m benchmarks.zoo", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma list (default: all): " + ", ".join(MODELS))
    p.add_argument("--datasets", default=",".join(zdata.DATASETS), help="comma list: digits, mnist")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "zoo", help="work directory (runs/zoo)")
    p.add_argument("--results", type=Path, default=None,
                   help="JSON lines to append to (benchmarks/results/zoo.jsonl; --toy: WORK/toy/zoo.jsonl)")
    p.add_argument("--toy", action="store_true", help="smoke test: 1 float epoch, compress --steps 10")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one torch thread each)")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.datasets = [d for d in args.datasets.split(",") if d]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; the zoo has {', '.join(MODELS)}")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    if args.toy:
        args.work = args.work / "toy"
        args.results = args.results or args.work / "zoo.jsonl"
        if args.results.resolve().is_relative_to(RESULTS.resolve()):
            p.error(f"--toy rows are smoke tests; they are not written into {RESULTS}")
    args.results = args.results or RESULTS / "zoo.jsonl"
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    datasets = []
    for ds in args.datasets:
        why = zdata.unavailable(ds)
        if why:
            print(f"skip {ds}: {why}", flush=True)
        else:
            datasets.append(ds)
    units = [(m, ds) for ds in datasets for m in args.models]
    print(f"{len(units)} unit(s) on {args.jobs} worker(s); work {args.work}; rows to {args.results}",
          flush=True)
    for ds in datasets:  # once, before the workers start, so that two never write the same file
        zdata.build_npz(ds, args.work)
    failed = 0

    def record(row: dict[str, Any]) -> None:
        nonlocal failed
        _append(args.results, row)
        failed += bool(row["error"])
        acc = row.get("sgsc_acc") or {}
        print(f"{'FAILED' if row['error'] else 'done'} {row['model']}/{row['dataset']} in "
              f"{row['unit_wall_seconds']} s: float {_pct(row.get('float_acc'))}, "
              f"PTQ {_pct(row.get('ptq_acc'))}, compact {_pct(acc.get('compact'))}"
              + (f"; {row['error']}" if row["error"] else ""), flush=True)

    if args.jobs == 1:
        for m, ds in units:
            record(run_unit(m, ds, str(args.work), args.toy))
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"),
                                 initializer=_die_with_parent) as pool:
            futures = {pool.submit(run_unit, m, ds, str(args.work), args.toy): (m, ds) for m, ds in units}
            for fut in as_completed(futures):
                record(fut.result())
    if args.results.is_file():
        print(f"table: {write_markdown(args.results)}", flush=True)
    return 1 if failed else 0
