"""Language-model benchmark (issue 5): SGSC on the paper's names data, plain self-compression (λ = 0) beside
it, and the exported ``portable`` model in onnxruntime CPU against PyTorch.

    python -m benchmarks.lm_bench                  # needs ../shared/data/names; about 15 minutes on 2 cores
    python -m benchmarks.lm_bench --steps 200      # a quick look (not the acceptance numbers)
    python -m benchmarks.lm_bench --only sgsc & python -m benchmarks.lm_bench --only lambda0; \
        python -m benchmarks.lm_bench --merge      # the two runs in two processes
                                                   # (each trains the same reference)

Acceptance (issue 5): compressed validation loss ≤ float validation loss + 0.03 nats at ``ratio`` ≤ 0.12 of
the fp32 bits; the exported ``portable`` model's next-token agreement with PyTorch ≥ 99.9 % on the validation
split and its loss equal to PyTorch's within 1e-3. Both runs share one float reference, trained once with the
preset's seed (its time is reported separately). Raw output: ``benchmarks/results/lm_names.json`` (+ ``.md``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from sgsc_export import compress, load_dataset
from sgsc_export.models import build_model, default_factory, default_kwargs
from sgsc_export.presets import preset
from sgsc_export.tasks import LANGUAGE_MODEL
from sgsc_export.train.loop import train_float

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAMES = ROOT.parent / "shared" / "data" / "names"


def _onnx_parity(art, out_dir: Path) -> dict:
    """Export ``portable`` and compare onnxruntime CPU (all optimisations, safe options) with PyTorch."""
    import onnxruntime as ort

    from converters import export

    path = out_dir / "model.onnx"
    res = export(art, path, "portable")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    disabled = ["QDQSelectorActionTransformer"] if any(int(k) == 2 for r in res.table.rows
                                                       for k in r.bits_histogram
                                                       if r.container == "INT2") else []
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                **({"disabled_optimizers": disabled} if disabled else {}))
    x, y, ref = art.eval["x_test"], art.eval["y_test"], art.eval["logits_test"]
    out = np.concatenate([sess.run(None, {"input": x[s : s + 512]})[0] for s in range(0, len(x), 512)])
    real = y != -1
    agree = float((out.argmax(-1) == ref.argmax(-1))[real].mean())
    loss_ort, loss_pt = LANGUAGE_MODEL.mean_loss(out, y), LANGUAGE_MODEL.mean_loss(ref, y)
    return {"file_bytes": res.file_bytes, "float_onnx_bytes": res.float_onnx_bytes, "opset": res.opset,
            "next_token_agreement": agree, "loss_onnxruntime": loss_ort, "loss_pytorch": loss_pt,
            "abs_loss_diff": abs(loss_ort - loss_pt),
            "max_abs_logit_diff": float(np.abs(out - ref)[real].max()),
            "passed": agree >= 0.999 and abs(loss_ort - loss_pt) <= 1e-3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=NAMES)
    ap.add_argument("--steps", type=int, help="override the preset's compression steps (quick looks only)")
    ap.add_argument("--float-epochs", type=int)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--only", choices=("sgsc", "lambda0"), help="run one of the two (then --merge)")
    ap.add_argument("--lam", type=float, help="override the preset's λ of the SGSC run")
    ap.add_argument("--merge", action="store_true", help="merge lm_names.sgsc.json and lm_names.lambda0.json")
    args = ap.parse_args()
    if args.merge:
        parts = [json.loads((RESULTS / f"lm_names.{k}.json").read_text()) for k in ("sgsc", "lambda0")]
        result = dict(parts[0], runs=[r for p in parts for r in p["runs"]], processes=[
            {k: p[k] for k in ("wall_seconds", "cpu_seconds", "float_training_seconds", "load_average")}
            for p in parts])
        result["wall_seconds"] = max(p["wall_seconds"] for p in parts)  # run side by side
        result["cpu_seconds"] = sum(p["cpu_seconds"] for p in parts)
        _write(result, "", args.threads)
        return
    torch.set_num_threads(args.threads)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    data = load_dataset("names", args.data_dir)
    cfg = preset("names")
    if args.steps is not None:
        cfg = cfg.replace(steps=args.steps)
    if args.float_epochs is not None:
        cfg = cfg.replace(float_epochs=args.float_epochs)
    if args.lam is not None:
        cfg = cfg.replace(lam=args.lam)
    spec = {"factory": default_factory("names"), "kwargs": default_kwargs(data)}
    torch.manual_seed(cfg.seed)
    reference = build_model(spec["factory"], spec["kwargs"])[0]
    t = time.perf_counter()
    train_float(reference, data.x_train, data.y_train, cfg, task=LANGUAGE_MODEL)
    float_seconds = time.perf_counter() - t
    rows = []
    for label, lam in (("sgsc", cfg.lam), ("lambda0", 0.0)):
        if args.only and label != args.only:
            continue
        t, c = time.perf_counter(), time.process_time()
        art = compress(copy.deepcopy(reference), data, cfg.replace(lam=lam), model_spec=spec, pretrained=True)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        f, q = art.manifest["metrics"]["float"], art.manifest["metrics"]["compressed"]
        with tempfile.TemporaryDirectory() as tmp:
            parity = _onnx_parity(art, Path(tmp))
        row = {"run": label, "lam": lam, "gamma": cfg.gamma, "steps": cfg.steps,
               "finetune_steps": cfg.finetune_steps,
               "ratio": art.manifest["totals"]["ratio"],
               "quantized_bits": art.manifest["totals"]["quantized_bits"],
               "fp32_bits": art.manifest["totals"]["fp32_bits"], "float": f, "compressed": q,
               "loss_increase": q["test_loss"] - f["test_loss"],
               "heads_removed": art.manifest["language_model"]["heads_removed"],
               "channels_removed": {layer["name"]: layer["channels_removed"] for layer in art.layers
                                    if layer["channels_removed"]},
               "restores": len(art.manifest["restores"]), "seconds": seconds, "cpu_seconds": cpu,
               "accepted": (q["test_loss"] <= f["test_loss"] + 0.03
                            and art.manifest["totals"]["ratio"] <= 0.12),
               "onnx_portable": parity}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"suite": "names", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "config": cfg.to_dict(), "float_training_seconds": float_seconds,
              "wall_seconds": time.perf_counter() - wall0, "cpu_seconds": time.process_time() - cpu0,
              "torch_threads": args.threads, "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
              "python": platform.python_version(), "torch": torch.__version__, "runs": rows}
    suffix = ("" if args.steps is None and args.float_epochs is None else "_quick") \
        + (f".{args.only}" if args.only else "") + (f"-lam{args.lam:g}" if args.lam is not None else "")
    _write(result, suffix, args.threads)


def _write(result: dict, suffix: str, threads: int) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, float_seconds = result["runs"], result["float_training_seconds"]
    (RESULTS / f"lm_names{suffix}.json").write_text(json.dumps(result, indent=1))
    lines = ["| run | λ | ratio | float val loss | compressed val loss | Δ nats | ppl | next-token acc | ORT "
             "agreement | ORT |Δloss| | accepted |", "|" + "---|" * 11]
    for r in rows:
        p = r["onnx_portable"]
        lines.append(f"| {r['run']} | {r['lam']} | {r['ratio']:.4f} | {r['float']['test_loss']:.4f} | "
                     f"{r['compressed']['test_loss']:.4f} | {r['loss_increase']:+.4f} | "
                     f"{r['compressed']['test_perplexity']:.3f} | {r['compressed']['test_accuracy']:.4f} | "
                     f"{p['next_token_agreement']:.5f} | {p['abs_loss_diff']:.2e} "
                     f"| {r['accepted'] and p['passed']} |")
    lines.append(f"\nwall {result['wall_seconds']:.0f} s, CPU {result['cpu_seconds']:.0f} s "
                 f"(float reference {float_seconds:.0f} s), torch threads {threads}, load average "
                 f"{result['load_average'][0]:.1f} on {result['cpus']} CPUs")
    (RESULTS / f"lm_names{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
