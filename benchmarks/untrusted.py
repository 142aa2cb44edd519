"""``python -m benchmarks.untrusted``: hostile inputs against the ``sgsc`` CLI, one subprocess per case
(issue 14).

Each case (``benchmarks/untrusted_cases.py``) writes its hostile files into a fresh directory, runs ``sgsc``
there under a memory cap, and is judged against the promise: the expected exit code (2 bad input, 1 a gate
that must fail, 130 Ctrl-C, 0 a control), for exit 2 exactly one stderr line ``error: …`` (click's usage error
also counts), no traceback, no new, temp or changed files outside the case's declared outputs (SHA-256 of
every file before and after), no marker file from a payload, memory under the cap, and the case's own check
where it has one.

The cap is RLIMIT_AS, set in the child just before it execs ``sgsc`` (torch and onnxruntime run under 4 GiB);
peak memory is the child's ``ru_maxrss`` from ``os.wait4`` in a small wrapper process (no dependency), and a
run whose output names an allocation failure is recorded as "hit the memory cap". The base artifact (a toy
digits compression and its three exports) is built once per harness run with the same ``sgsc``; then the cases
run in a pool of 2.

    python -m benchmarks.untrusted [--sgsc CMD] [--only ID,GLOB,…] [--out benchmarks/results/untrusted.jsonl]

Exit code 0: every promise kept; 1: some broken; 2: the harness itself could not run (the base did not build).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.untrusted_cases import (
    CASES,
    PROFILES,
    TOY,
    Base,
    Case,
    Ctx,
    Proc,
    find_tamper,
    sha,
    write_bomb,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "untrusted.jsonl"
# -P: the working directory is not put on sys.path, as with
# the installed `sgsc` script (a case dir holds .py files)
DEFAULT_SGSC = [sys.executable, "-P", "-m", "sgsc_export.cli"]
# The child that execs sgsc is forked from this small wrapper, not from the harness: a vforked child's
# ru_maxrss starts at its parent's high-water mark, which would report the harness's RSS as every case's peak.
# The wrapper sets the cap in the child, passes on SIGINT (Ctrl-C reaches the whole process group), and writes
# the child's ru_maxrss (KiB) to a file; its exit status is the child's.
_WRAPPER = """
import os, resource, signal, sys
cap, rss_file, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
signal.signal(signal.SIGINT, lambda *a: None)
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
open(rss_file, "w").write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""
_OOM = re.compile(r"MemoryError|Unable to allocate|bad_alloc|[Cc]annot allocate memory|can't allocate memory|"
                  r"[Ff]ailed to allocate|out of memory")
_TRACEBACK = "Traceback (most recent call last)"


# -------------------------------------------------------------------------------------------- running
def snapshot(root: Path) -> dict[str, str]:
    """Every file, link and special file under ``root`` → its SHA-256, ``link:target`` or ``special``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = sha(p)
            elif not p.is_dir():
                out[rel] = "special"
    return out


def run_procs(procs: list[Proc], cwd: Path, logs: Path, sgsc: list[str], cap: int,
              timeout: float) -> list[dict]:
    """Start each Proc at its time under the cap; signal, time out and reap them; per process: exit code, peak
    RSS (MiB), wall time, stdout and stderr."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    t0, pending, running, done = time.monotonic(), list(enumerate(procs)), {}, {}
    timed_out = False
    while pending or running:
        now = time.monotonic() - t0
        while pending and (not running if pending[0][1].after_previous else now >= pending[0][1].start):
            i, p = pending.pop(0)
            out, err = open(logs / f"{i}.out", "wb"), open(logs / f"{i}.err", "wb")
            child = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(cap), str(logs / f"{i}.rss"), *sgsc,
                                      *p.argv], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            running[i] = (child, time.monotonic(), out, err, [False])
        for i, (child, started, out, err, signalled) in list(running.items()):
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            age = time.monotonic() - started
            if pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                out.close()
                err.close()
                rss = logs / f"{i}.rss"  # absent when the wrapper was killed too (a timeout): then its own
                kib = int(rss.read_text()) if rss.is_file() else usage.ru_maxrss
                done[i] = {"exit": child.returncode, "peak_mib": kib / 1024, "wall_s": age,
                           "stdout": (logs / f"{i}.out").read_text(errors="replace"),
                           "stderr": (logs / f"{i}.err").read_text(errors="replace")}
                del running[i]
                continue
            p = procs[i]
            if p.signal is not None and not signalled[0] and age >= p.signal_after:
                os.killpg(child.pid, p.signal)
                signalled[0] = True
            if time.monotonic() - t0 > timeout:
                timed_out = True
                os.killpg(child.pid, signal.SIGKILL)
        time.sleep(0.05)
    rows = [done[i] for i in range(len(procs))]
    rows[-1]["timed_out"] = timed_out
    return rows


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _stderr_problem(stderr: str) -> str | None:
    """For exit 2: exactly one ``error:`` line (or click's usage error: Usage/Try lines and one
    ``Error:``)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")]
    other = [line for line in lines if not line.lower().startswith("error:")
             and not line.startswith(("Usage:", "Try '"))]
    if len(errors) != 1:
        return f"{len(errors)} error: lines on stderr"
    if other:
        return f"{len(other)} other line(s) on stderr ({other[0][:60]!r})"
    return None


def _matches(rel: str, outputs: tuple[str, ...]) -> bool:
    return any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in outputs)


def judge(case: Case, ctx: Ctx, argv: list[str], before: dict, after: dict, procs: list[dict],
          cap: int) -> dict:
    main = procs[-1]
    text = main["stdout"] + main["stderr"]
    tmp = sorted(r for r in after if Path(r).name.startswith(".") and Path(r).name.endswith(".tmp"))
    new = sorted(r for r in after if r not in before and r != "MARKER" and not _matches(r, case.outputs))
    changed = sorted(r for r in before if after.get(r) != before[r] and not _matches(r, case.outputs))
    row = {"id": case.id, "category": case.category, "description": case.desc,
           "command": "sgsc " + " ".join(shlex.quote(a) for a in argv),
           "expected_exit": list(case.expect), "exit": main["exit"],
           "first_line": _first_line(main["stderr"]),
           "traceback": any(_TRACEBACK in p["stdout"] + p["stderr"] for p in procs),
           "new_files": new, "changed_inputs": changed, "temp_files": tmp,
           "marker": (ctx.dir / "MARKER").exists(),
           "peak_mib": round(max(p["peak_mib"] for p in procs), 1), "cap_mib": cap >> 20,
           "hit_cap": bool(_OOM.search(text)) or max(p["peak_mib"] for p in procs) > 0.95 * (cap >> 20),
           "wall_s": round(max(p["wall_s"] for p in procs), 2), "timed_out": main["timed_out"],
           "other_exit_codes": [p["exit"] for p in procs[:-1]],
           "stdout_tail": main["stdout"][-2000:], "stderr_tail": main["stderr"][-2000:]}
    reasons = []
    if row["timed_out"]:
        reasons.append(f"timed out after {case.timeout:.0f} s")
    elif row["exit"] not in case.expect:
        reasons.append(f"exit {row['exit']}, expected {'/'.join(map(str, case.expect))}")
    elif row["exit"] == 2 and (problem := _stderr_problem(main["stderr"])):
        reasons.append(problem)
    if row["traceback"]:
        reasons.append("traceback")
    if row["marker"]:
        reasons.append("payload ran (marker file created)")
    if row["hit_cap"]:
        reasons.append(f"hit the memory cap ({cap >> 20} MiB)")
    if tmp:
        reasons.append(f"temp files left: {', '.join(tmp[:3])}")
    if new:
        reasons.append(f"files left: {', '.join(new[:3])}")
    if changed:
        reasons.append(f"inputs changed: {', '.join(changed[:3])}")
    if case.check is not None and not row["timed_out"] and (why := case.check(ctx, row)):
        reasons.append(why)
    row["kept"] = not reasons
    row["verdict"] = "kept" if not reasons else "BROKEN: " + "; ".join(reasons)
    return row


def run_case(case: Case, base: Base | None, work: Path, sgsc: list[str], cap: int) -> dict:
    case_dir, logs = work / case.id, work / "_logs" / case.id
    case_dir.mkdir(parents=True)
    logs.mkdir(parents=True)
    ctx = Ctx(case_dir, base, cap)
    try:
        built = case.build(ctx)
    except Exception as exc:  # noqa: BLE001 - a builder bug is recorded as such, not as the product's fault
        return {"id": case.id, "category": case.category, "description": case.desc, "kept": False,
                "exit": None,
                "verdict": f"BROKEN: the harness could not build the case ({type(exc).__name__}: {exc})",
                "command": "", "first_line": "", "traceback": False, "peak_mib": 0.0, "wall_s": 0.0}
    procs = built if built and isinstance(built[0], Proc) else [Proc(list(built))]
    before = snapshot(case_dir)
    results = run_procs(procs, case_dir, logs, sgsc, cap, case.timeout)
    return judge(case, ctx, procs[-1].argv, before, snapshot(case_dir), results, cap)


def build_base(root: Path, sgsc: list[str], cap: int, need_bomb: bool) -> Base:
    """The toy digits artifact and its three exports, built with the ``sgsc`` under test; the tamper
    channels."""
    base = Base(root)
    root.mkdir(parents=True)
    bomb = threading.Thread(target=write_bomb, args=(root / "bomb.npz", cap + (512 << 20)))
    if need_bomb:
        base.bomb = root / "bomb.npz"
        bomb.start()
    logs = root / "_logs"
    logs.mkdir()
    steps = [Proc(["compress", "--out", "art", *TOY])]
    steps += [Proc(["export", "art", "--profile", p, "-o", f"{p}.onnx"], after_previous=True)
              for p in PROFILES]
    for r, p in zip(run_procs(steps, root, logs, sgsc, cap, 600), steps):
        if r["exit"] != 0:
            raise SystemExit(f"error: the base step `sgsc {' '.join(p.argv)}` failed (exit {r['exit']}): "
                             f"{_first_line(r['stderr'][-500:])}")
    base.tamper = {p: find_tamper(base, p) for p in PROFILES}
    if need_bomb:
        bomb.join()
    return base


# -------------------------------------------------------------------------------------------- report
def _cell(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", "\\|")


def _files(row: dict) -> str:
    parts = [f"{k.split('_')[0]}: {', '.join(row[k][:2])}"
             for k in ("new_files", "changed_inputs", "temp_files")
             if row.get(k)]
    return "; ".join(parts) or "—"


def markdown(rows: list[dict]) -> str:
    lines = ["| case | command | exit | first line | traceback "
             "| files left / overwritten | peak MiB | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['id']} | `{_cell(r['command'], 60)}` | {r['exit']} | {_cell(r['first_line'])} | "
                     f"{'yes' if r['traceback'] else 'no'} | {_cell(_files(r), 40)} | {r['peak_mib']:.0f} | "
                     f"{_cell(r['verdict'], 90)} |")
    worst = max(rows, key=lambda r: r.get("peak_mib") or 0.0)
    lines.append("")
    lines.append(f"{len(rows)} cases, {sum(not r['kept'] for r in rows)} broken, worst peak memory "
                 f"{worst['peak_mib']:.0f} MiB (case {worst['id']})")
    return "\n".join(lines) + "\n"


def _write(out: Path, rows: list[dict], meta: dict) -> str:
    """The JSON lines and the Markdown table, each written atomically; returns the table."""
    from sgsc_export._io import write_atomic

    table = markdown(rows)
    write_atomic(out, "".join(json.dumps({**r, "run": meta}, ensure_ascii=False) + "\n" for r in rows))
    write_atomic(out.with_suffix(".md"), table)
    return table


def select(only: str | None) -> list[Case]:
    if not only:
        return list(CASES)
    pats = [p.strip() for p in only.split(",") if p.strip()]
    chosen = [c for c in CASES if any(fnmatch.fnmatch(c.id, p) for p in pats)]
    if not chosen:
        raise SystemExit(f"error: --only {only!r} matches no case; ids look like c01_factory_os_system")
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.untrusted", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sgsc", help="the sgsc command (default: this Python -P -m sgsc_export.cli)")
    ap.add_argument("--only", help="comma list of case ids or globs (e.g. c01_*,x09_onnx_missing)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results, one JSON object a line")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--cap-gib", type=float, default=4.0, help="memory cap of each sgsc process (RLIMIT_AS)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (printed at the end)")
    args = ap.parse_args(argv)
    sgsc = shlex.split(args.sgsc) if args.sgsc else DEFAULT_SGSC
    cap = int(args.cap_gib * (1 << 30))
    cases = select(args.only)
    work = Path(tempfile.mkdtemp(prefix="sgsc-untrusted-"))
    t0 = time.monotonic()
    meta = {"sgsc": sgsc, "cap_mib": cap >> 20, "jobs": args.jobs}
    try:
        base = None
        if any(c.needs_base for c in cases):
            base = build_base(work / "_base", sgsc, cap, any("bomb" in c.id for c in cases))
            print(f"base built in {time.monotonic() - t0:.0f} s; tamper channels: "
                  + ", ".join(f"{p} {t.get('layer')}[{t.get('channel')}] diff {t.get('max_diff', 0):.2f}"
                              for p, t in base.tamper.items()), file=sys.stderr)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(run_case, c, base, work, sgsc, cap) for c in cases]
            rows = []
            for c, f in zip(cases, futures):
                rows.append(f.result())
                print(f"{c.id}: {rows[-1]['verdict']} ({rows[-1]['wall_s']:.1f} s)", file=sys.stderr)
                # a killed run keeps its rows
                _write(args.out, rows, {**meta, "complete": len(rows) == len(cases)})
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta["wall_s"] = round(time.monotonic() - t0, 1)
    table = _write(args.out, rows, {**meta, "complete": True})
    print(table)
    print(f"total {meta['wall_s']:.0f} s" + (f"; work directory kept: {work}" if args.keep else ""),
          file=sys.stderr)
    return 0 if all(r["kept"] for r in rows) else 1


__all__ = ["build_base", "judge", "main", "markdown", "run_case", "snapshot"]

if __name__ == "__main__":
    sys.exit(main())
