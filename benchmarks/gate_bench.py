"""Export every profile of real artifacts and run the deployment gate on each (issues 3 and 4's acceptance).

    python -m benchmarks.gate_bench runs/bench_digits runs/bench_mnist

For each artifact and profile: `converters.export`, then `runtime_checks.validate` on CPU at optimisation
levels disabled and all, with the default thresholds (accuracy drop ≤ 1.0 pp against the float model,
agreement ≥ 0.99) and per-layer parity. Raw JSON lines go to ``benchmarks/results/gate.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from converters import PROFILE_NAMES, export
from runtime_checks import EvalData, validate

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PROFILES = PROFILE_NAMES


def run(artifact: Path) -> list[dict]:
    rows = []
    data = EvalData.from_run_dir(artifact)
    with tempfile.TemporaryDirectory() as tmp:
        for profile in PROFILES:
            path = Path(tmp) / f"{profile}.onnx"
            t0 = time.perf_counter()
            result = export(artifact, path, profile=profile)
            t_export = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = validate(path, data, layers=True, latency=True, threads=2)
            t_validate = time.perf_counter() - t0
            d = report.to_dict()
            cpu = d["providers"].get("CPUExecutionProvider") or next(iter(d["providers"].values()))
            rows.append({
                "artifact": str(artifact), "profile": profile, "file_bytes": result.file_bytes,
                "status": d["status"], "passed": d["passed"], "exit_code": report.exit_code,
                "test": cpu["test"], "preservation": cpu["preservation"],
                "failed_checks": [str(c) for c in report.failed_checks],
                "workarounds": d["workarounds"], "latency_ms": d["latency_ms"],
                "export_seconds": round(t_export, 2), "validate_seconds": round(t_validate, 2),
            })
            r = rows[-1]
            print(json.dumps({k: r[k] for k in ("artifact", "profile", "file_bytes", "status")}
                             | {"test_agreement": r["test"]["agreement"],
                                "pres_agreement": r["preservation"]["agreement"],
                                "test_accuracy": r["test"]["accuracy"]}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", type=Path)
    args = ap.parse_args()
    rows = [r for a in args.artifacts for r in run(a)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gate.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))


if __name__ == "__main__":
    main()
