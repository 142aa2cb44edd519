"""The digits default run, all three profiles: its SHA-256s (the check that a refactor changed no byte) and
what it produced (test accuracy, file bytes, the accuracy target's result).

    python -m benchmarks.pipeline_hashes [--label NAME] [--repo DIR]

Runs ``sgsc pipeline --profiles portable,compact,ort-int8`` (the README's first command, all profiles) from
the checkout ``--repo`` (default: this one) into a scratch directory, and appends one JSON row (label, the
repo's commit, the four SHA-256s of manifest.json and the .onnx files, the manifest's float / compressed
metrics, the bytes of each .onnx file, the manifest's ``target`` without its γ trajectory when it has one,
wall seconds) to ``benchmarks/results/pipeline_hashes.jsonl``. Two rows with the same hashes mean
byte-identical outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import RESULTS

FILES = ("manifest.json", "onnx/portable.onnx", "onnx/compact.onnx", "onnx/ort-int8.onnx")


def hashes(repo: Path) -> dict:
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        start = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(repo)}
        r = subprocess.run([sys.executable, "-m", "sgsc_export.cli", "pipeline", "--profiles",
                            "portable,compact,ort-int8", "--out", str(out)], cwd=repo, env=env,
                           capture_output=True, text=True)
        wall = time.monotonic() - start
        if r.returncode not in (0, 1):
            raise SystemExit(f"error: sgsc pipeline exited {r.returncode}: {r.stderr.strip()[-300:]}")
        sha = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in FILES}
        size = {name: (out / name).stat().st_size for name in FILES if name.endswith(".onnx")}
        manifest = json.loads((out / "manifest.json").read_text())
    target = {k: v for k, v in (manifest.get("target") or {}).items() if k != "gamma_trajectory"} or None
    return {"commit": commit, "exit": r.returncode, "sha256": sha, "bytes": size,
            "metrics": manifest["metrics"], "target": target, "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="", help="A name for the row (e.g. before, after).")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    row = {"label": args.label, **hashes(args.repo.resolve())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "pipeline_hashes.jsonl", "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
