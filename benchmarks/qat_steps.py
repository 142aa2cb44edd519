"""Was uniform QAT given enough steps? The full suite trains it for ``QAT_STEPS`` (1,000); this reruns it on seed 0
with as many steps as SGSC gets (its compression plus fine-tune steps), from the same float reference.

    python -m benchmarks.qat_steps            # after `python -m benchmarks.run --suite full`; about 10 minutes

Raw output: ``benchmarks/results/qat_steps.jsonl`` (one line per run, beside the 1,000-step run of the suite).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from .units import ROOT, Unit, _timed, config_for, run_compress

RESULTS = ROOT / "benchmarks" / "results"
RUNS = (("mnist", 2), ("names", 4), ("names", 2), ("digits", 4), ("digits", 2))  # longest first


def one(dataset: str, bits: int) -> dict:
    import logging

    import torch

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    unit = Unit(dataset, 0, "qat", bits=bits)
    sgsc = config_for(Unit(dataset, 0, "sgsc", gamma=0.0))
    cfg = config_for(unit).replace(steps=sgsc.steps + sgsc.finetune_steps)
    out = ROOT / "runs" / "bench" / "qat_steps" / unit.key
    out.mkdir(parents=True, exist_ok=True)
    rec, wall, _ = _timed(run_compress, "full", unit, out, cfg)
    short = [json.loads(x) for x in (RESULTS / "bench_full.jsonl").read_text().splitlines()]
    base = next((r for r in short if r["key"] == unit.key and "onnx" in r), None)
    metric = "test_loss" if dataset == "names" else "test_accuracy"
    return {"key": unit.key, "steps": cfg.steps, "metric": metric, "value": rec["onnx"]["portable"][metric],
            "steps_in_suite": base["config"]["steps"] if base else None,
            "value_in_suite": base["onnx"]["portable"][metric] if base else None, "seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(one, *zip(*RUNS)))
    (RESULTS / "qat_steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
