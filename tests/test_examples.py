"""examples/ run at toy size: sampling names from the exported model needs onnxruntime and numpy only."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sample_names_runs_without_torch(lm_portable):
    path = lm_portable
    code = ("import runpy, sys; sys.argv = ['sample_names', sys.argv[1], '-n', '4'];"
            "runpy.run_path(sys.argv[0] if False else %r, run_name='__main__');"
            "assert 'torch' not in sys.modules, 'the example imported torch'"
            % str(ROOT / "examples" / "sample_names.py"))
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    names = res.stdout.split("\n")[:4]
    assert len(names) == 4 and all(set(n) <= set("abcdefghijklmnopqrstuvwxyz") for n in names)
