"""The public names import, and importing the packages stays lean."""

import subprocess
import sys

import sgsc_export


def test_public_names_resolve():
    for name in sgsc_export.__all__:
        assert getattr(sgsc_export, name) is not None, name


def _imported_after(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print(','.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.strip().split(","))


def test_import_sgsc_export_is_lean():
    mods = _imported_after("import sgsc_export, sgsc_export.errors")
    assert not {"torch", "onnx", "onnxruntime"} & mods


def test_cli_help_does_not_import_onnx():
    mods = _imported_after("from sgsc_export.cli import main")
    assert not {"onnx", "onnxruntime", "torch"} & mods
