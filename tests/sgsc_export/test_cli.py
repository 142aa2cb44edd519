"""The `sgsc` command line: help, version, one-line errors with exit code 2, nothing written on bad input."""

import pytest
from click.testing import CliRunner

from sgsc_export import __version__
from sgsc_export.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def test_version_and_help(runner):
    r = runner.invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = runner.invoke(main, ["--help"])
    assert r.exit_code == 0 and "compress" in r.output
    r = runner.invoke(main, ["compress", "--help"])
    assert r.exit_code == 0
    for flag in ("--dataset", "--data-dir", "--model", "--weights", "--out", "--steps", "--gamma", "--lam",
                 "--seed", "--resume"):
        assert flag in r.output


def _one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for n in needles:
        assert n in lines[0]


def test_bad_dataset(runner, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(main, ["compress", "--dataset", "cifar", "--out", str(out)])
    _one_line_error(r, "unknown dataset", "digits")
    assert not out.exists()


def test_missing_data_dir(runner, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(main, ["compress", "--dataset", "mnist", "--data-dir", str(tmp_path / "nope"), "--out",
                             str(out)])
    _one_line_error(r, "does not exist")
    assert not out.exists()
    r = runner.invoke(main, ["compress", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out",
                             str(out)])
    _one_line_error(r, "t10k-images")
    assert not out.exists()


def test_model_file_that_does_not_load(runner, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nraise RuntimeError('boom')\n")
    r = runner.invoke(main, ["compress", "--model", f"{bad}:make", "--out", str(out)])
    _one_line_error(r, "cannot load model file", "boom")
    r = runner.invoke(main, ["compress", "--model", f"{tmp_path / 'missing.py'}:make", "--out", str(out)])
    _one_line_error(r, "does not exist")
    ok = tmp_path / "ok.py"
    ok.write_text("def make():\n    return 3\n")
    r = runner.invoke(main, ["compress", "--model", f"{ok}:make", "--out", str(out)])
    _one_line_error(r, "not a torch.nn.Module")
    r = runner.invoke(main, ["compress", "--model", f"{ok}:nothere", "--out", str(out)])
    _one_line_error(r, "no callable")
    assert not out.exists()


def test_weights_file_errors_and_weights_only(runner, tmp_path):
    import torch

    out = tmp_path / "out"
    model = tmp_path / "m.py"
    model.write_text("from sgsc_export.models import digits_cnn\ndef make():\n    return digits_cnn()\n")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    r = runner.invoke(main, ["compress", "--model", f"{model}:make", "--weights", str(tmp_path / "evil.pt"),
                             "--out", str(out)])
    _one_line_error(r, "cannot load weights")
    assert "pwned" not in r.output
    r = runner.invoke(main, ["compress", "--model", f"{model}:make", "--weights", str(tmp_path / "no.pt"),
                             "--out", str(out)])
    _one_line_error(r, "does not exist")
    assert not out.exists()


def test_bad_config_value_and_npz(runner, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(main, ["compress", "--gamma", "-1", "--out", str(out)])
    _one_line_error(r, "gamma")
    r = runner.invoke(main, ["compress", "--dataset", f"npz:{tmp_path / 'x.npz'}", "--out", str(out)])
    _one_line_error(r, "does not exist")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    r = runner.invoke(main, ["compress", "--dataset", f"npz:{tmp_path / 'corrupt.npz'}", "--model", "x.py:f",
                             "--out", str(out)])
    _one_line_error(r, "cannot read")
    assert not out.exists()


def test_resume_without_checkpoint_is_a_usage_error(runner, tmp_path):
    r = runner.invoke(main, ["compress", "--out", str(tmp_path / "o"), "--resume"])
    assert r.exit_code == 2 and "no checkpoint" in r.output


def test_compress_end_to_end_prints_table(runner, tmp_path):
    out = tmp_path / "art"
    r = runner.invoke(main, ["compress", "--out", str(out), "--steps", "40", "--float-epochs", "1",
                             "--quiet", "--max-drop", "100"])  # a toy run is not meant to meet the target
    assert r.exit_code == 0, r.output
    assert (out / "manifest.json").is_file()
    assert "total" in r.output and "ratio" in r.output and "test accuracy" in r.output


def test_compress_options_are_made_from_the_config_fields(runner):
    import dataclasses

    from sgsc_export.config import CompressConfig

    text = " ".join(runner.invoke(main, ["compress", "--help"]).output.split())
    for f in dataclasses.fields(CompressConfig):
        if f.name in ("steps", "finetune_steps", "float_epochs", "gamma", "lam", "distill", "seed"):
            assert f.metadata["help"] in text, f.name


def test_help_imports_neither_torch_nor_onnxruntime():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from sgsc_export.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(main, ['validate', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted({'torch', 'onnx', 'onnx_ir', 'onnxruntime'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_one_handler_turns_every_exception_into_one_line_and_a_code():
    import click

    from sgsc_export.cli import Command, Failure, Interrupted, Terminated
    from sgsc_export.errors import DataError

    def command(exc: BaseException) -> click.Command:
        @click.command("demo", cls=Command)
        def demo() -> None:
            raise exc

        return demo

    cases = [(DataError("no data\nat all"), 2, "error: no data at all"),
             (SystemExit(3), 2, "error: the model code called sys.exit(3) during demo; a model factory or "
                                "forward must return or raise, not exit the process"),
             (KeyError("k"), 2, "error: KeyError: 'k'"),
             (KeyboardInterrupt(), 130, "interrupted (Ctrl-C): stopped; no half-written file is left"),
             (Terminated(), 143, "terminated (SIGTERM): stopped; no half-written file is left"),
             (Interrupted("interrupted: resume with --resume"), 130, "interrupted: resume with --resume"),
             (Failure(None, 1), 1, None), (click.UsageError("bad value"), 2,
                                           "error: bad value (see `demo --help`)")]
    for exc, code, line in cases:
        result = CliRunner().invoke(command(exc), [])
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == code, (exc, result.output)
        assert lines == ([line] if line else []), (exc, result.output)
