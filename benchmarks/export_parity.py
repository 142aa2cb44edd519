"""Export parity, size and speed of every profile, on real artifacts (issue 3's acceptance).

    .venv/bin/python benchmarks/export_parity.py ARTIFACT_DIR [ARTIFACT_DIR ...]
        [--out benchmarks/results/...]

For each artifact: exports portable / compact / ort-int8 (twice, to check byte-identical files), then

* parity: onnxruntime CPU, optimisations disabled and ORT_ENABLE_ALL with the safe options, against the
  compressed PyTorch logits stored in eval.npz, on 100% of the test and preservation samples: same top-1 and
  max|Δlogit| ≤ 1e-4·max|logit| (portable, compact); top-1 agreement ≥ 99.5% and accuracy within 0.3 pp
  (ort-int8);
* size: compact ≤ 1.10 × (Σ learned bits / 8 + scale bytes) + 8 KiB; every file against the float ONNX files —
  the model as defined by its factory (unpruned, BatchNorm kept: what the user exports today) and the
  deployable module in float (pruned, folded);
* latency: batch 64, 2 intra-op threads, all models in one process, timed round-robin (median per batch).

Raw JSON goes to benchmarks/results/export_parity.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from converters import PROFILE_NAMES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import export  # noqa: E402
from converters._torch_export import export_float  # noqa: E402
from sgsc_export.artifact.compressed import CompressedModel  # noqa: E402

PROFILES = PROFILE_NAMES
LEVELS = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def session(data: bytes, level: str, threads: int = 2) -> ort.InferenceSession:
    """A CPU session with the safe options: exact MatMulNBits; no QDQ selector rewrites of INT2 weights."""
    model = onnx.load_from_string(data)
    int2 = any(t.data_type == onnx.TensorProto.INT2 for t in model.graph.initializer)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[level]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    disabled = ["QDQSelectorActionTransformer"] if int2 else None
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def run(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate([sess.run(None, {"input": x[i : i + 512]})[0] for i in range(0, len(x), 512)])


def float_models(cm: CompressedModel) -> dict[str, bytes]:
    """Float ONNX of the factory's model (unpruned; sizes do not depend on values) and of the deployable
    module."""
    import onnx_ir as ir

    from sgsc_export.artifact.rebuild import resolve_rebuild_factory
    from sgsc_export.models import build_model

    factory, kwargs, digest = resolve_rebuild_factory(cm.manifest)  # the trust rule: built-in models only
    original, _ = build_model(factory, kwargs, digest)
    out = {}
    for name, module in (("float_original", original.eval()), ("float_deployable", cm.to_module())):
        out[name] = ir.serde.serialize_model(export_float(module, cm.example_input(2),
                                                          21)).SerializeToString()
    return out


def latency(models: dict[str, bytes], x: np.ndarray, rounds: int, runs: int) -> dict[str, dict]:
    sessions = {k: session(v, "all", threads=2) for k, v in models.items()}
    for s in sessions.values():
        for _ in range(10):
            s.run(None, {"input": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            for _ in range(runs):
                s.run(None, {"input": x})
            times[k].append((time.perf_counter() - t0) / runs)
    return {k: {"median_ms": 1e3 * statistics.median(v), "min_ms": 1e3 * min(v),
                "samples_ms": [1e3 * t for t in v]}
            for k, v in times.items()}


def bench(directory: Path, rounds: int, runs: int) -> dict:
    cm = CompressedModel.load(directory)
    ev = cm.eval
    x = np.concatenate([ev["x_test"], ev["x_preservation"]]).astype(np.float32)
    y = np.concatenate([ev["y_test"], ev["y_preservation"]])
    ref = np.concatenate([ev["logits_test"], ev["logits_preservation"]])
    n_test = len(ev["x_test"])
    tol = 1e-4 * float(np.abs(ref).max())
    learned_bits = sum(sum(la["bits"]) * int(np.prod(la["weight_shape"][1:])) for la in cm.layers)
    scale_bytes = 4 * sum(len(la["bits"]) for la in cm.layers)
    out: dict = {"artifact": str(directory), "dataset": cm.manifest["dataset"], "samples": int(len(x)),
                 "n_test": n_test, "learned_bits": int(learned_bits), "scale_bytes": scale_bytes,
                 "tolerance": tol, "profiles": {}}
    models = float_models(cm)
    out["float_onnx_bytes"] = {k: len(v) for k, v in models.items()}
    ref_top1 = ref.argmax(1)
    with tempfile.TemporaryDirectory() as tmp:
        for profile in PROFILES:
            t0 = time.perf_counter()
            result = export(directory, Path(tmp) / f"{profile}.onnx", profile=profile)
            export_s = time.perf_counter() - t0
            again = export(directory, Path(tmp) / f"{profile}_again.onnx", profile=profile)
            data = result.path.read_bytes()
            models[profile] = data
            rec: dict = {"file_bytes": len(data), "opset": result.opset,
                         "sha256": hashlib.sha256(data).hexdigest(),
                         "byte_identical_reexport": data == again.path.read_bytes(),
                         "export_seconds": export_s,
                         "containers": sorted({r.container for r in result.table.rows}),
                         "fused": result.fused,
                         "ratio_to_float": {k: len(data) / v for k, v in out["float_onnx_bytes"].items()},
                         "levels": {}}
            for level in LEVELS:
                logits = run(session(data, level, threads=2), x)
                top1 = logits.argmax(1)
                rec["levels"][level] = {
                    "max_abs_dlogit": float(np.abs(logits - ref).max()),
                    "top1_agreement": float((top1 == ref_top1).mean()),
                    "accuracy_test": float((top1[:n_test] == y[:n_test]).mean()),
                    "accuracy_all": float((top1 == y).mean()),
                }
            ref_acc_test = float((ref_top1[:n_test] == y[:n_test]).mean())
            if profile == "ort-int8":
                rec["passed_parity"] = all(lv["top1_agreement"] >= 0.995 and
                                           abs(lv["accuracy_test"] - ref_acc_test) <= 0.003
                                           for lv in rec["levels"].values())
            else:
                rec["passed_parity"] = all(lv["top1_agreement"] == 1.0 and lv["max_abs_dlogit"] <= tol
                                           for lv in rec["levels"].values())
            if profile == "compact":
                budget = 1.10 * (learned_bits / 8 + scale_bytes) + 8192
                rec["size_budget_bytes"] = budget
                rec["passed_size"] = len(data) <= budget
            out["profiles"][profile] = rec
        out["pytorch_accuracy_test"] = float((ref_top1[:n_test] == y[:n_test]).mean())
        xb = np.resize(ev["x_test"].astype(np.float32), (64,) + ev["x_test"].shape[1:])
        out["latency_batch64_threads2"] = latency(models, xb, rounds, runs)
    lat = out["latency_batch64_threads2"]
    out["speed_ratio_ort_int8"] = {k: lat["ort-int8"]["median_ms"] / lat[k]["median_ms"]
                                   for k in ("float_original", "float_deployable")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export_parity.json")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    results = {"host": {"machine": platform.machine(), "python": platform.python_version(),
                        "onnxruntime": ort.__version__, "onnx": onnx.__version__},
               "runs": [bench(d, args.rounds, args.runs) for d in args.artifacts]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True))
    for r in results["runs"]:
        print(f"== {r['artifact']} ({r['dataset']['name']}, {r['samples']} samples, "
              f"tol {r['tolerance']:.2e})")
        print(f"   float ONNX bytes {r['float_onnx_bytes']}")
        for p, rec in r["profiles"].items():
            lv = rec["levels"]
            print(f"   {p:9s} {rec['file_bytes']:7d} B  ratio {rec['ratio_to_float']['float_original']:.4f} "
                  f"(deployable {rec['ratio_to_float']['float_deployable']:.4f})  "
                  f"Δmax {lv['disabled']['max_abs_dlogit']:.2e}/{lv['all']['max_abs_dlogit']:.2e}  "
                  f"top1 {lv['disabled']['top1_agreement']:.4f}/{lv['all']['top1_agreement']:.4f}  "
                  f"acc {lv['all']['accuracy_test']:.4f}  parity {'ok' if rec['passed_parity'] else 'FAIL'}"
                  + (f"  size {'ok' if rec['passed_size'] else 'FAIL'} (≤ {rec['size_budget_bytes']:.0f})"
                     if "passed_size" in rec else "")
                  + f"  identical re-export {rec['byte_identical_reexport']}")
        print("   latency batch 64, 2 threads (median ms): " +
              ", ".join(f"{k} {v['median_ms']:.3f}" for k, v in r["latency_batch64_threads2"].items()))
        print(f"   ort-int8 / float: {r['speed_ratio_ort_int8']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
