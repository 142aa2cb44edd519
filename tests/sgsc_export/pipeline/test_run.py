"""A toy pipeline end to end: outputs, the summary, reuse by content hash, --force, Ctrl-C and --resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tests.sgsc_export.conftest import TOY_ARGS, run_cli


def test_outputs_and_summary(toy_run):
    out, result = toy_run
    for rel in ("manifest.json", "checkpoints/last.pt", "onnx/portable.onnx", "onnx/compact.onnx",
                "onnx/portable.json", "validation/portable.json", "validation/compact.junit.xml",
                "report.html", "report.md", "figures/bits_heatmap.png", "pipeline.json"):
        assert (out / rel).is_file(), rel
    text = result.output
    assert text.startswith("sgsc pipeline: ") and "test accuracy" in text and "bits per weight" in text
    assert "ONNX file, portable" in text and "portable/cpu" in text and str(out / "report.html") in text
    status = json.loads((out / "validation" / "portable.json").read_text())["status"]
    assert result.exit_code == {"passed": 0, "failed": 1}[status]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def _copy(toy_run, tmp_path) -> Path:
    """The shared toy run, copied: a test that reruns into it must not change what other tests read."""
    out = tmp_path / "run"
    shutil.copytree(toy_run[0], out, copy_function=shutil.copy2)
    return out


def test_rerun_reuses_every_stage_and_force_redoes(toy_run, tmp_path):
    out, first = _copy(toy_run, tmp_path), toy_run[1]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "onnx" / "portable.onnx", out / "manifest.json")}
    again = run_cli("pipeline", *TOY_ARGS, "--out", out)
    assert again.exit_code == first.exit_code
    for stage in ("compress", "export:portable", "export:compact", "validate:portable", "report"):
        assert f"{stage}: reused (inputs and config unchanged; --force redoes it)" in again.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a changed validation option redoes validation and the report only
    changed = run_cli("pipeline", *TOY_ARGS, "--out", out, "--min-agreement", "0.5")
    assert "compress: reused" in changed.output and "export:compact: reused" in changed.output
    assert "validate:portable: reused" not in changed.output and "report: reused" not in changed.output
    # an output edited by hand is not reused
    (out / "onnx" / "compact.onnx").write_bytes(b"tampered")
    fixed = run_cli("pipeline", *TOY_ARGS, "--out", out, "--min-agreement", "0.5", "--profiles", "compact")
    assert "export:compact: reused" not in fixed.output and "compress: reused" in fixed.output


def test_force_redoes_everything(toy_run, tmp_path):
    out = _copy(toy_run, tmp_path)
    result = run_cli("pipeline", *TOY_ARGS, "--out", out, "--profiles", "portable", "--force", "--no-report")
    assert "reused" not in result.output and result.exit_code in (0, 1), result.output


def test_ctrl_c_keeps_the_last_checkpoint_and_resume_continues(tmp_path, monkeypatch):
    import sgsc_export.train.compress as api

    real, calls = api.save_checkpoint, []

    def interrupted(path, payload):
        calls.append(payload["train_state"]["step"])
        if len(calls) == 2:  # killed in the middle of writing the second checkpoint
            path.with_name(path.name + ".tmp").write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt
        real(path, payload)

    monkeypatch.setattr(api, "save_checkpoint", interrupted)
    out = tmp_path / "run"
    result = run_cli("pipeline", *TOY_ARGS, "--out", out, "--profiles", "portable", "--no-report")
    assert result.exit_code == 130, result.output
    assert "interrupted: the last complete checkpoint is" in result.output and "--resume" in result.output
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["train_state"]["step"] == calls[0] < 30
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not (out / "manifest.json").exists()

    monkeypatch.setattr(api, "save_checkpoint", real)
    other = run_cli("pipeline", *TOY_ARGS, "--out", out, "--profiles", "portable", "--resume", "--seed", "1")
    assert other.exit_code == 2 and "made with other inputs or config" in other.output
    resumed = run_cli("pipeline", *TOY_ARGS, "--out", out, "--profiles", "portable", "--no-report",
                      "--resume")
    assert resumed.exit_code in (0, 1), resumed.output
    assert f"compress: resuming from {out / 'checkpoints' / 'last.pt'}" in resumed.output
    steps = [r["step"] for r in json.loads((out / "history.json").read_text())["records"]]
    assert steps and steps[-1] == 30 and (out / "onnx" / "portable.onnx").is_file()


def test_ctrl_c_before_the_first_checkpoint(tmp_path, monkeypatch):
    import sgsc_export.train.compress as api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train_float", interrupted)
    out = tmp_path / "run"
    result = run_cli("pipeline", *TOY_ARGS, "--out", out)
    assert result.exit_code == 130
    assert "no checkpoint was written yet; run the same command again to start over" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.json"]


def test_a_real_sigint_leaves_a_loadable_checkpoint_and_no_temp_file(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGSC_")}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.Popen([sys.executable, "-m", "sgsc_export.cli", "pipeline", "--out", str(out),
                             "--steps", "5000",
                             "--float-epochs", "1", "--checkpoint-every", "5", "--quiet", "--no-report"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # somewhere in the loop, possibly inside a checkpoint write
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted: the last complete checkpoint is" in output
    assert torch.load(ckpt, weights_only=True)["train_state"]["step"] % 5 == 0
    assert not [p for p in out.rglob("*") if ".tmp" in p.name] and not (out / "manifest.json").exists()
