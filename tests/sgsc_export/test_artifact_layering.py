"""The artifact contract without training code: exporting an artifact loads neither the method, the
preservation selectors, the training loop nor click, and the artifact's format module loads no torch."""

from __future__ import annotations

import json
import subprocess
import sys

TRAINING_WINGS = ("sgsc_export.method", "sgsc_export.preservation", "sgsc_export.train")


def _modules_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The sorted modules whose names start with ``prefixes`` that a fresh interpreter holds after
    ``code``."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_export_of_a_real_artifact_loads_no_training_code(digits_artifact, tmp_path):
    out = tmp_path / "model.onnx"
    loaded = _modules_after(
        "import converters\nfrom sgsc_export import CompressedModel\n"
        f"converters.export(CompressedModel.load({str(digits_artifact)!r}), {str(out)!r})",
        ("sgsc_export", "click"))
    print(loaded)  # the list, for the record (pytest -s)
    assert out.stat().st_size > 0
    assert "sgsc_export.artifact.compressed" in loaded and "sgsc_export.artifact.rebuild" in loaded
    assert [m for m in loaded if any(_in(m, w) for w in (*TRAINING_WINGS, "click"))] == []


def test_artifact_format_loads_no_torch():
    loaded = _modules_after("import sgsc_export.artifact.format", ("torch", "sgsc_export"))
    assert "sgsc_export.artifact.format" in loaded
    assert [m for m in loaded if _in(m, "torch")] == []
