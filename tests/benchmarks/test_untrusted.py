"""The untrusted-input harness itself (benchmarks/untrusted.py): fast, no compression.

One test runs three cheap cases against the real ``sgsc`` and checks they are recorded; the other runs a fake
``sgsc`` that misbehaves on purpose, so every broken promise the harness must see (wrong exit code, traceback,
marker file, temp file, overwritten input, extra stderr lines, memory over the cap, a hang) is seen.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import untrusted
from benchmarks.untrusted_cases import Case, Proc

FIELDS = {"id", "category", "command", "exit", "first_line", "traceback", "new_files", "changed_inputs",
          "temp_files", "marker", "peak_mib", "wall_s", "verdict", "kept"}

FAKE_SGSC = r'''
import os, sys, time
mode = sys.argv[1]
if mode == "good":
    sys.stderr.write("error: x.onnx is not an ONNX file; pass an .onnx file\n"); sys.exit(2)
if mode == "traceback":
    raise RuntimeError("boom")
if mode == "marker":
    open("MARKER", "w").write("ran"); sys.stderr.write("error: refused\n"); sys.exit(2)
if mode == "tmp":
    open(".out.onnx.abc.tmp", "w").write("half"); sys.stderr.write("error: failed\n"); sys.exit(2)
if mode == "overwrite":
    open("input.bin", "w").write("gone"); sys.stderr.write("error: failed\n"); sys.exit(2)
if mode == "noisy":
    sys.stderr.write("warning: something\nerror: failed\n"); sys.exit(2)
if mode == "exit0":
    sys.exit(0)
if mode == "oom":
    b = bytearray(8 << 30)
if mode == "hang":
    time.sleep(60)
'''


def test_three_cheap_cases_are_recorded(tmp_path: Path) -> None:
    out = tmp_path / "u.jsonl"
    ids = ["x09_onnx_missing", "x09_onnx_text_inspect", "c01_fake_artifact_os_system"]
    code = untrusted.main(["--only", ",".join(ids), "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(ids)  # in the order of CASES
    assert all(FIELDS <= set(r) for r in rows)
    by_id = {r["id"]: r for r in rows}
    missing = by_id["x09_onnx_missing"]
    assert missing["exit"] == 2 and missing["kept"], missing
    assert by_id["x09_onnx_text_inspect"]["kept"], by_id["x09_onnx_text_inspect"]
    fake = by_id["c01_fake_artifact_os_system"]
    assert isinstance(fake["marker"], bool) and isinstance(fake["exit"], int)
    assert fake["kept"] == (not fake["marker"] and fake["exit"] == 2 and not fake["traceback"])
    assert code == (0 if all(r["kept"] for r in rows) else 1)
    md = out.with_suffix(".md").read_text()
    assert md.splitlines()[0].startswith("| case | command | exit | first line | traceback |")
    assert f"{len(ids)} cases, {sum(not r['kept'] for r in rows)} broken, worst peak memory" in md


def test_every_broken_promise_is_seen(tmp_path: Path) -> None:
    fake = tmp_path / "fake_sgsc.py"
    fake.write_text(FAKE_SGSC)
    sgsc = [sys.executable, str(fake)]

    def case(mode: str, **kw) -> Case:
        def build(ctx):
            ctx.write("input.bin", "precious")
            return [mode]
        return Case(f"fake_{mode}", 9, mode, build, needs_base=False, **kw)

    expect = {"good": None, "traceback": "traceback", "marker": "marker file", "tmp": "temp files left",
              "overwrite": "inputs changed: input.bin", "noisy": "other line(s) on stderr",
              "exit0": "exit 0, expected 2", "oom": "memory cap", "hang": "timed out"}
    for mode, reason in expect.items():
        row = untrusted.run_case(case(mode, timeout=3 if mode == "hang" else 30, marker=mode == "marker"),
                                 None, tmp_path / "work", sgsc, 1 << 30)
        if reason is None:
            assert row["kept"], row["verdict"]
        else:
            assert not row["kept"] and reason in row["verdict"], (mode, row["verdict"])
    two = Case("fake_two", 5, "two processes", lambda c: [Proc(["exit0"]), Proc(["good"], start=0.2)],
               needs_base=False, check=lambda c, r: None if r["other_exit_codes"] == [0] else "other")
    assert untrusted.run_case(two, None, tmp_path / "work", sgsc, 1 << 30)["kept"]
