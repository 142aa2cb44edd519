"""What the distillation teacher's logit table (``sgsc_export.train.loop.teacher_table``) saves, measured A/B.

    python -m benchmarks.teacher_table      # after `--suite full` has trained MNIST's seed-0 float reference

Runs the full suite's ``mnist/s0/qat4`` unit twice at the same time, one per core (so both see the same
machine): once with the table, once with the teacher run on every batch (``TEACHER_TABLE_BYTES = 0``), each in
its own scratch suite directory. Writes both records to ``benchmarks/results/teacher_table.jsonl`` and says
whether the two runs wrote byte-identical ``.onnx`` files.
"""

from __future__ import annotations

import json
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from benchmarks.run import RESULTS
from benchmarks.units import Unit, run_unit, workdir
from sgsc_export._io import write_atomic

UNIT = Unit("mnist", 0, "qat", bits=4)
VARIANTS = ("table", "per-step")


def _run(variant: str) -> dict:
    from sgsc_export.train import loop as train

    if variant == "per-step":
        train.TEACHER_TABLE_BYTES = 0
    suite = f"teacher-{variant}"
    shutil.rmtree(workdir(suite, UNIT).parent, ignore_errors=True)
    shutil.copytree(workdir("full", Unit(UNIT.dataset, UNIT.seed, "float")),
                    workdir(suite, Unit(UNIT.dataset, UNIT.seed, "float")))
    rec = run_unit(suite, UNIT, 0.0)
    return {"variant": variant, "key": rec["key"], "cpu_seconds": rec["cpu_seconds"],
            "seconds": rec["seconds"],
            "onnx": rec["onnx"]}


def main() -> int:
    ref = workdir("full", Unit(UNIT.dataset, UNIT.seed, "float")) / "float.pt"
    if not ref.is_file():
        print(f"error: {ref} absent; run `python -m benchmarks.run --suite full --datasets mnist` first",
              file=sys.stderr)
        return 2
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        recs = list(pool.map(_run, VARIANTS))
    files = [(workdir(f"teacher-{v}", UNIT) / "portable.onnx").read_bytes() for v in VARIANTS]
    lines = [json.dumps(rec | {"identical_onnx": files[0] == files[1]}) for rec in recs]
    write_atomic(RESULTS / "teacher_table.jsonl", "".join(line + "\n" for line in lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
