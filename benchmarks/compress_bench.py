"""Compression benchmark (issue 2): SGSC at its defaults, plain self-compression (λ = 0) beside it, a γ sweep.

    python -m benchmarks.compress_bench --suite digits     # about 2 minutes on 2 cores
    python -m benchmarks.compress_bench --suite mnist      # needs ../shared/data/mnist-t10k; about 40 minutes

Each run is one JSON line in ``benchmarks/results/compress_<suite>_<part>.jsonl`` (parts: default, lambda0,
sweep — they can run as separate processes); the Markdown table ``compress_<suite>.md`` joins them.
The default runs are timed end to end (float training included), as `sgsc compress` runs them. The γ-sweep
runs share one float reference, trained once with the same seed, so they differ only in γ (their time excludes
the float training, and says so). The default run's artifact is kept in ``runs/bench_<suite>`` for
``benchmarks/export_parity.py`` and ``sgsc validate``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from sgsc_export import CompressConfig, compress, load_dataset
from sgsc_export.models import build_model, default_factory
from sgsc_export.presets import preset
from sgsc_export.train.compress import train_reference

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"
SWEEP = {"digits": (0.1, 0.2, 0.3, 0.5, 1.0), "mnist": (0.1, 0.2, 0.3, 0.5)}


def _model(dataset: str, num_classes: int):
    return build_model(default_factory(dataset), {"num_classes": num_classes})[0]


def _row(dataset: str, label: str, cfg: CompressConfig, art, seconds: float, includes_float: bool) -> dict:
    m = art.manifest
    f, c = m["metrics"]["float"], m["metrics"]["compressed"]
    return {
        "dataset": dataset, "run": label, "gamma": cfg.gamma, "lam": cfg.lam, "seed": cfg.seed,
        "steps": cfg.steps,
        "float_test_accuracy": f["test_accuracy"], "compressed_test_accuracy": c["test_accuracy"],
        "drop_pp": 100 * (f["test_accuracy"] - c["test_accuracy"]),
        "float_preservation_accuracy": f["preservation_accuracy"],
        "compressed_preservation_accuracy": c["preservation_accuracy"],
        "ratio": m["totals"]["ratio"], "quantized_bits": m["totals"]["quantized_bits"],
        "fp32_bits": m["totals"]["fp32_bits"], "restores": len(m["restores"]),
        "channels": {layer["name"]: [layer["channels_kept"], layer["channels_before"]]
                     for layer in m["layers"]},
        "seconds": round(seconds, 1), "seconds_include_float_training": includes_float,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_suite(dataset: str, seed: int, parts: set[str],
              gammas: tuple[float, ...] | None = None) -> list[dict]:
    data = load_dataset(dataset, MNIST if dataset == "mnist" else None, seed=0)
    base = preset(dataset).replace(seed=seed)
    rows = []

    def one(label: str, cfg: CompressConfig, model, pretrained: bool, out_dir: Path | None = None) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        spec = {"factory": default_factory(dataset), "kwargs": {"num_classes": data.num_classes}}
        art = compress(model, data, cfg, pretrained=pretrained, out_dir=out_dir, model_spec=spec)
        rows.append(_row(dataset, label, cfg, art, time.perf_counter() - t0, not pretrained))
        # what a quiet machine's wall time approaches
        rows[-1]["cpu_seconds"] = round(time.process_time() - c0, 1)
        print(json.dumps({k: rows[-1][k] for k in ("run", "gamma", "lam", "float_test_accuracy",
                                                   "compressed_test_accuracy", "ratio", "seconds",
                                                   "cpu_seconds")}), flush=True)

    if "default" in parts:
        # the default run's artifact is kept for the export and validation benchmarks
        one("sgsc-default", base, _model(dataset, data.num_classes), pretrained=False,
            out_dir=ROOT / "runs" / f"bench_{dataset}")
    if not parts & {"lambda0", "sweep"}:
        return rows
    # λ = 0 and the γ sweep share one float reference, trained exactly as the default run trains it
    ref = train_reference(_model(dataset, data.num_classes), data, base)
    state = {k: v.clone() for k, v in ref.state_dict().items()}

    def from_ref():
        m = _model(dataset, data.num_classes)
        m.load_state_dict(state)
        return m

    if "lambda0" in parts:
        one("unsafe-lambda0", base.replace(lam=0.0), from_ref(), pretrained=True)
    if "sweep" in parts:
        for g in gammas or SWEEP[dataset]:
            if g != base.gamma:
                one(f"sgsc-gamma{g}", base.replace(gamma=g), from_ref(), pretrained=True)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| data | run | γ | λ | float acc | compressed acc | drop (pp) | ratio | restores | seconds | "
            "CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['dataset']} | {r['run']} | {r['gamma']} | {r['lam']} | {r['float_test_accuracy']:.4f} | "
        f"{r['compressed_test_accuracy']:.4f} | {r['drop_pp']:+.2f} | {r['ratio']:.4f} | {r['restores']} | "
        f"{r['seconds']}{'' if r['seconds_include_float_training'] else ' (float shared)'} "
        f"| {r.get('cpu_seconds', '')} |\n"
        for r in rows)
    return head + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=("digits", "mnist"), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gammas", help="comma list of γ for the sweep part (default: the suite's)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, as `sgsc compress` and `sgsc pipeline` use")
    ap.add_argument("--parts", default="default,lambda0,sweep",
                    help="comma list of default, lambda0, sweep; each part writes its own JSONL, "
                         "the table joins them")
    args = ap.parse_args()
    if args.suite == "mnist" and not MNIST.is_dir():
        raise SystemExit(f"skipped: {MNIST} is absent (the MNIST IDX files live in ../shared/data)")
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for part in args.parts.split(","):
        gammas = tuple(float(g) for g in args.gammas.split(",")) if args.gammas else None
        rows = run_suite(args.suite, args.seed, {part}, gammas)
        name = f"{part}-{args.gammas}" if part == "sweep" and args.gammas else part
        (RESULTS / f"compress_{args.suite}_{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    files = sorted(RESULTS.glob(f"compress_{args.suite}_*.jsonl"), key=lambda p: (
        ["default", "lambda0"].index(p.stem.split("_")[-1])
        if p.stem.split("_")[-1] in ("default", "lambda0") else 2,
        p.name))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    cmd = f"python -m benchmarks.compress_bench --suite {args.suite} --parts default,lambda0,sweep"
    (RESULTS / f"compress_{args.suite}.md").write_text(
        f"Command: `{cmd}` (parts may run as separate processes)\n\n" + markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
