"""The ``export`` and ``inspect`` commands: help, output, and one-line errors that write nothing."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from sgsc_export.cli.export import export_cmd
from sgsc_export.cli.inspect import inspect_cmd


@pytest.mark.parametrize("cmd", [export_cmd, inspect_cmd])
def test_help(cmd):
    result = CliRunner().invoke(cmd, ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_export_prints_table(artifact_dir, tmp_path):
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(export_cmd, [str(artifact_dir), "--profile", "portable", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    for word in ("fp32 bytes", "learned bits", "stored bytes", "container", "total", "ratio"):
        assert word in result.output
    shown = CliRunner().invoke(inspect_cmd, [str(out), "--json"])
    assert shown.exit_code == 0
    assert json.loads(shown.output)["profile"] == "portable"


def _fails(args, tmp_path, match):
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir(exist_ok=True)
    result = CliRunner().invoke(export_cmd, [*args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and match in err, err
    assert list(out.parent.iterdir()) == []


def test_missing_dir(tmp_path):
    _fails([str(tmp_path / "nope")], tmp_path, "does not exist")


def test_corrupt_manifest(artifact_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(artifact_dir, bad)
    (bad / "manifest.json").write_text("{not json")
    _fails([str(bad)], tmp_path, "manifest.json")


def test_state_does_not_match_manifest(artifact_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(artifact_dir, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    layer = next(la for la in manifest["layers"] if max(la["bits"]) < 8)
    layer["bits"][0] = layer["bits"][0] + 1
    (bad / "manifest.json").write_text(json.dumps(manifest, indent=2))
    _fails([str(bad)], tmp_path, "manifest")


def test_tampered_tensor_file(artifact_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(artifact_dir, bad)
    with open(bad / "quant.safetensors", "ab") as f:
        f.write(b"x")
    _fails([str(bad)], tmp_path, "quant.safetensors")


def test_inspect_errors(tmp_path):
    result = CliRunner().invoke(inspect_cmd, [str(tmp_path / "none.onnx")])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    result = CliRunner().invoke(inspect_cmd, [str(junk)])
    assert result.exit_code == 2 and "not a readable ONNX" in result.stderr


def test_sgsc_group_has_the_commands():
    from sgsc_export.cli import main

    for name in ("export", "inspect"):
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_import_does_not_need_onnxruntime():
    import subprocess
    import sys

    code = (
        "import sys, converters, sgsc_export.cli.export; assert 'onnxruntime' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
