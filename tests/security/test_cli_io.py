"""Issue 14, items 4-6 through the CLI: no output over an input, one sgsc run per directory, exit codes that
tell the truth (a user's sys.exit, Ctrl-C 130, SIGTERM 143), reports of one run written all or none.

Every case asserts the exit code, one ``error: …`` line, no traceback, and which files exist or are unchanged.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sgsc_export._outputs import lock_run_dir, write_atomic_many
from tests.runtime_checks.conftest import make_data, make_model, save_artifact_weights, write_run

ROOT = Path(__file__).resolve().parents[2]
TOY = ["--dataset", "digits", "--steps", "20", "--finetune-steps", "0", "--float-epochs", "1", "--quiet",
       "--max-drop", "100"]  # a toy run is not meant to meet the default accuracy target (exit 1)
USER_MODELS = '''
import sys
from torch import nn


class Net(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        if self.how == "exit":
            sys.exit(0)
        raise ValueError("the user's forward is broken")


def exits_in_factory():
    sys.exit(0)


def exits_in_forward():
    return Net("exit")


def raises_in_forward():
    return Net("raise")
'''


def sgsc(*args, env: dict | None = None):
    from sgsc_export.cli import main

    env = {k: None for k in os.environ if k.startswith("SGSC_")} | (env or {})
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def sgsc_process(*args, cwd: Path | None = None, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGSC_")} | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sgsc_export.cli", *map(str, args)], cwd=cwd or ROOT,
                            env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def one_error_line(output: str, *words: str) -> str:
    """The output has exactly one ``error:`` line, no traceback; return it (it contains every one of
    ``words``)."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    for word in words:
        assert word in errors[0], output
    return errors[0]


def digest(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (relative path → SHA-256): to prove that nothing changed."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if ".tmp" in p.name or p.name.startswith(".sgsc.lock")]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A real artifact of `sgsc compress` at toy size (a few seconds)."""
    out = tmp_path_factory.mktemp("artifact") / "run"
    result = sgsc("compress", *TOY, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def passing(tmp_path) -> tuple[Path, Path]:
    """(run directory, model.onnx) that `sgsc validate --run` passes (synthetic, well under a second)."""
    model = make_model()
    run, path = write_run(tmp_path, model, make_data())
    save_artifact_weights(run, model)
    return run, path


@pytest.fixture
def user_models(tmp_path) -> Path:
    path = tmp_path / "user_models.py"
    path.write_text(USER_MODELS)
    return path


# -- item 4: an output that is an input is refused before anything is written --------------------------------

@pytest.mark.parametrize("name", ["manifest.json", "model.safetensors", "quant.safetensors", "eval.npz",
                                  "history.json", "checkpoints/last.pt"])
def test_export_refuses_to_write_over_the_artifact(artifact, name):
    before = digest(artifact)
    result = sgsc("export", artifact, "-o", artifact / name)
    assert result.exit_code == 2
    one_error_line(result.output, f"-o {artifact / name}", "destroy an input")
    assert digest(artifact) == before


def test_export_refuses_a_link_to_the_artifact_and_writes_a_new_file_inside_it(artifact, tmp_path):
    before = digest(artifact)
    (tmp_path / "sym.onnx").symlink_to(artifact / "manifest.json")
    os.link(artifact / "quant.safetensors", tmp_path / "hard.onnx")
    for link in ("sym.onnx", "hard.onnx"):
        result = sgsc("export", artifact, "-o", tmp_path / link)
        assert result.exit_code == 2
        one_error_line(result.output, "destroy an input")
    assert digest(artifact) == before
    result = sgsc("export", artifact, "-o", artifact / "model.onnx")  # a new file inside RUN is fine
    assert result.exit_code == 0, result.output
    assert (artifact / "model.onnx").is_file()
    (artifact / "model.onnx").unlink()


@pytest.mark.parametrize("case",
                         ["report=model", "markdown=model", "junit=npz", "report=manifest", "markdown=eval",
                                  "report=layer-reference", "report=junit", "markdown=hardlink-of-model",
                                  "junit=symlink-to-manifest"])
def test_validate_refuses_reports_over_its_inputs(passing, tmp_path, case):
    run, model = passing
    npz = tmp_path / "data.npz"
    np.savez(npz, x=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(2, np.int64))
    reference = tmp_path / "reference.onnx"
    reference.write_bytes(model.read_bytes())
    os.link(model, tmp_path / "hard.md")
    (tmp_path / "sym.xml").symlink_to(run / "manifest.json")
    option, target = case.split("=")
    path = {"model": model, "npz": npz, "manifest": run / "manifest.json", "eval": run / "eval.npz",
            "layer-reference": reference, "junit": tmp_path / "same.xml",
            "hardlink-of-model": tmp_path / "hard.md",
            "symlink-to-manifest": tmp_path / "sym.xml"}[target]
    source = ["--data", f"npz:{npz}"] if target == "npz" else ["--run", run]
    extra = ["--layers", "--layer-reference", reference] if target == "layer-reference" else []
    extra += ["--junit", path] if target == "junit" else []
    before = digest(tmp_path)
    result = sgsc("validate", model, *source, *extra, f"--{option}", path, "--no-latency")
    assert result.exit_code == 2
    one_error_line(result.output, "same file" if target == "junit" else "destroy an input")
    assert digest(tmp_path) == before


def test_compress_and_pipeline_refuse_an_out_that_is_a_file(tmp_path):
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=np.zeros((4, 1, 8, 8), np.float32), y_train=np.zeros(4, np.int64))
    before = digest(tmp_path)
    for command in ("compress", "pipeline"):
        result = sgsc(command, "--dataset", f"npz:{npz}", "--out", npz)
        assert result.exit_code == 2, result.output
        one_error_line(result.output, f"--out {npz} exists and is not a directory")
    assert digest(tmp_path) == before


def test_compress_refuses_an_input_that_it_would_overwrite(artifact):
    before = digest(artifact)
    result = sgsc("compress", *TOY, "--out", artifact, "--weights", artifact / "model.safetensors")
    assert result.exit_code == 2
    one_error_line(result.output, "--weights", "destroy an input")
    assert digest(artifact) == before and not temp_files(artifact)


# -- item 6c: the reports of one run are written all or none -------------------------------------------------

def test_write_atomic_many_writes_all_or_none(tmp_path):
    (tmp_path / "old.json").write_text("passed")
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OSError):
        write_atomic_many([(tmp_path / "old.json", "new"), (tmp_path / "file" / "r.md", "new")])
    assert (tmp_path / "old.json").read_text() == "passed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "old.json"]
    write_atomic_many([(tmp_path / "old.json", "new"), (tmp_path / "sub" / "r.md", b"new")])
    assert (tmp_path / "old.json").read_text() == "new" and (tmp_path / "sub" / "r.md").read_text() == "new"


def test_an_unwritable_report_path_fails_before_validation_and_no_file_says_passed(passing, tmp_path,
                                                                                  monkeypatch):
    run, model = passing
    ok = tmp_path / "ok.json"
    first = sgsc("validate", model, "--run", run, "--no-latency", "--report", ok)
    assert first.exit_code == 0, first.output
    assert json.loads(ok.read_text())["status"] == "passed"

    import runtime_checks.runner as runner

    def never(*args, **kwargs):
        raise AssertionError("the validation ran although a report path cannot be written")

    monkeypatch.setattr(runner, "validate", never)
    (tmp_path / "file").write_text("a file, not a directory")
    for bad in (tmp_path / "file" / "r.md", tmp_path / "file" / "deeper" / "r.md", run):
        result = sgsc("validate", model, "--run", run, "--no-latency", "--report", ok, "--markdown", bad)
        assert result.exit_code == 2
        one_error_line(result.output, "--markdown")
        assert not ok.exists() or json.loads(ok.read_text())["status"] == "error"
    assert not temp_files(tmp_path)


def test_a_run_that_errors_replaces_the_earlier_passed_reports(passing, tmp_path):
    run, model = passing
    paths = {"--report": tmp_path / "r.json", "--markdown": tmp_path / "r.md", "--junit": tmp_path / "r.xml"}
    args = [a for option, path in paths.items() for a in (option, path)]
    assert sgsc("validate", model, "--run", run, "--no-latency", *args).exit_code == 0
    assert json.loads(paths["--report"].read_text())["passed"] is True
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    result = sgsc("validate", bad, "--run", run, "--no-latency", *args)
    assert result.exit_code == 2
    one_error_line(result.output)
    assert json.loads(paths["--report"].read_text())["status"] == "error"
    assert "ERROR" in paths["--markdown"].read_text() and "<error" in paths["--junit"].read_text()


def test_report_writing_that_fails_at_the_end_leaves_no_passed_report(passing, tmp_path, monkeypatch):
    run, model = passing
    ok, md = tmp_path / "ok.json", tmp_path / "ok.md"
    ok.write_text(json.dumps({"status": "passed", "passed": True}))  # an earlier run's verdict

    import sgsc_export.cli.validate as cli

    def disk_full(items):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "write_atomic_many", disk_full)
    result = sgsc("validate", model, "--run", run, "--no-latency", "--report", ok, "--markdown", md)
    assert result.exit_code == 2
    one_error_line(result.output, "cannot write the report", "No space left")
    assert not ok.exists() and not md.exists()


# -- item 5: one sgsc run at a time per run directory --------------------------------------------------------

def test_a_second_run_into_a_held_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    with lock_run_dir(out, "test"):
        before = digest(out)
        procs = [sgsc_process(command, *TOY, "--out", out) for command in ("pipeline", "compress")]
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 2, stdout + stderr
            one_error_line(stderr, f"{out} is in use by another sgsc run (pid {os.getpid()}",
                           "wait for it or use another --out")
        assert digest(out) == before
    assert not out.exists()  # the lock's directory was created for it and is empty: removed on release


def test_a_killed_run_is_detected_explained_and_cleaned(tmp_path):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys; from sgsc_export._outputs import lock_run_dir\n"
        f"with lock_run_dir({str(out)!r}, 'victim'):\n"
        f"    open({str(out / '.manifest.json.x.tmp')!r}, 'w').write('half a file')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert killed.returncode == -signal.SIGKILL
    assert {p.name for p in out.iterdir()} == {".sgsc.lock", ".sgsc.lock.json", ".manifest.json.x.tmp"}
    victim = json.loads((out / ".sgsc.lock.json").read_text())["pid"]
    # the next run takes the directory, says what happened
    # and removes the partial file (then fails on its data)
    result = sgsc("pipeline", "--dataset", f"npz:{tmp_path / 'missing.npz'}", "--out", out)
    assert result.exit_code == 2
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and f"a previous run (pid {victim}" in notes[0] and "was killed" in notes[0]
    assert "its partial files were removed" in notes[0]
    one_error_line(result.output)
    assert not temp_files(out)


# -- item 6a, 6e: a user's sys.exit or exception is an error, not exit 0 and not a traceback -----------------

@pytest.mark.parametrize("command", ["compress", "pipeline"])
@pytest.mark.parametrize("factory", ["exits_in_factory", "exits_in_forward"])
def test_sys_exit_in_user_code_is_an_error(tmp_path, user_models, command, factory):
    out = tmp_path / "out"
    result = sgsc(command, *TOY, "--model", f"{user_models}:{factory}", "--out", out, "--no-latency"
                  if command == "pipeline" else "--quiet")
    assert result.exit_code == 2, result.output
    one_error_line(result.output, "the model code called sys.exit(0)")
    assert not (out / "validation").exists() and not (out / "manifest.json").exists()


def test_an_exception_in_user_code_is_one_line_naming_its_type(tmp_path, user_models):
    result = sgsc("compress", *TOY, "--model", f"{user_models}:raises_in_forward", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    one_error_line(result.output, "ValueError")


def test_sys_exit_while_exporting_is_an_error(artifact, tmp_path, monkeypatch):
    # the module (the package re-exports its function)
    export = importlib.import_module("converters.exporter")

    def user_code_exits(*args, **kwargs):  # what a user's factory or forward does while the module is rebuilt
        sys.exit(0)

    monkeypatch.setattr(export, "export", user_code_exits)
    result = sgsc("export", artifact, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2
    one_error_line(result.output, "the model code called sys.exit(0) during export")
    assert not (tmp_path / "m.onnx").exists()


# -- item 6b: Ctrl-C is 130 and SIGTERM 143 for every command, one line, no temp file ------------------------

@pytest.mark.parametrize("command", ["export", "validate", "inspect"])
def test_ctrl_c_is_130_for_every_command(passing, artifact, tmp_path, monkeypatch, command):
    import converters.inspection as inspection
    import runtime_checks.runner as runner

    export = importlib.import_module("converters.exporter")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    for module, name in ((export, "export"), (runner, "validate"), (inspection, "inspect_model")):
        monkeypatch.setattr(module, name, ctrl_c)
    run, model = passing
    args = {"export": [artifact, "-o", tmp_path / "m.onnx"],
            "validate": [model, "--run", run, "--no-latency"],
            "inspect": [model]}[command]
    result = sgsc(command, *args)
    assert result.exit_code == 130, result.output
    assert "Aborted!" not in result.output and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "interrupted (Ctrl-C): stopped; no half-written file is left"]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_real_signal_during_compress(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = sgsc_process("compress", "--dataset", "digits", "--steps", "5000", "--finetune-steps", "0",
                        "--float-epochs", "1", "--quiet", "--out", out)
    deadline = time.monotonic() + 60
    while not (out / ".sgsc.lock.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the run holds its directory: it has started
    assert proc.poll() is None
    time.sleep(1.5)  # loading the data or training
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stdout + stderr
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("terminated (SIGTERM)" if code == 143
                                                   else "interrupted"), stderr
    assert not temp_files(tmp_path) and not (out / "manifest.json").exists()


# -- item 6d: a pipeline rerun that errors keeps no earlier report saying "passed" ---------------------------

def test_a_pipeline_rerun_that_errors_removes_the_reports_it_supersedes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = [*TOY, "--profiles", "portable", "--no-report", "--no-latency", "--out", out]
    first = sgsc("pipeline", *args)
    assert first.exit_code in (0, 1), first.output
    report = out / "validation" / "portable.json"
    assert report.is_file()

    import runtime_checks

    def broken(*a, **kw):
        raise RuntimeError("onnxruntime crashed")

    monkeypatch.setattr(runtime_checks, "validate", broken)
    again = sgsc("pipeline", *args, "--min-agreement", "0.5")  # redoes validation only
    assert again.exit_code == 2
    one_error_line(again.output, "RuntimeError")
    assert not list((out / "validation").iterdir())
    assert "validate:portable" not in json.loads((out / "pipeline.json").read_text())["stages"]
    monkeypatch.undo()

    assert sgsc("pipeline", *args).exit_code in (0, 1) and report.is_file()
    import sgsc_export.train.compress as api

    def user_code_exits(*a, **kw):
        sys.exit(0)

    monkeypatch.setattr(api, "compress", user_code_exits)
    rerun = sgsc("pipeline", *args, "--seed", "1")  # redoes compression, which supersedes everything after it
    assert rerun.exit_code == 2
    one_error_line(rerun.output, "sys.exit(0) during compress")
    assert not report.exists() and not (out / "onnx" / "portable.onnx").exists()
    assert not temp_files(out)
