"""Issue 14, items 1, 7, 8, 9 (artifact parts): an artifact never causes code to run, and is checked before it
is believed. Hostile manifests are driven through the real `sgsc export` (a subprocess) and CliRunner; a
marker file proves that no payload ran."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgsc_export import ArtifactError, CompressedModel, ModelError
from sgsc_export.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _copy(digits_artifact: Path, tmp_path: Path, name: str = "run") -> Path:
    run = tmp_path / name
    shutil.copytree(digits_artifact, run)
    return run


def _edit(run: Path, change) -> dict:
    m = json.loads((run / "manifest.json").read_text())
    change(m)
    (run / "manifest.json").write_text(json.dumps(m, indent=2))
    return m


def _sgsc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "sgsc_export.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(stderr: str, *needles: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _payload_file(path: Path, marker: Path) -> str:
    """A model file that, if it ever runs, leaves ``marker`` behind (and returns the built-in CNN)."""
    path.write_text(f"open({str(marker)!r}, 'w').close()\n"
                    "from sgsc_export.models import digits_cnn\n\n"
                    "def make(num_classes=10):\n    return digits_cnn(num_classes)\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the marker-file test: no payload runs -------------------------------------------------------------------
def _os_system(m, marker, tmp):
    m["model"].update(factory="os:system", kwargs={"command": f"touch {marker}"})


def _builtins_exec(m, marker, tmp):
    m["model"].update(factory="builtins:exec", kwargs={"source": f"open({str(marker)!r}, 'w')"})


def _subprocess(m, marker, tmp):
    m["model"].update(factory="subprocess:getoutput", kwargs={"cmd": f"touch {marker}"})


def _package_function_not_allowed(m, marker, tmp):
    m["model"].update(factory="sgsc_export.models:load_weights", kwargs={"path": str(marker)})


def _py_null_sha(m, marker, tmp):
    _payload_file(tmp / "evil.py", marker)
    m["model"].update(factory=f"{tmp / 'evil.py'}:make", kwargs={}, source_sha256=None)


def _py_missing_sha(m, marker, tmp):
    _payload_file(tmp / "evil.py", marker)
    m["model"].update(factory=f"{tmp / 'evil.py'}:make", kwargs={})
    m["model"].pop("source_sha256", None)


def _py_other_sha(m, marker, tmp):
    _payload_file(tmp / "evil.py", marker)
    m["model"].update(factory=f"{tmp / 'evil.py'}:make", kwargs={}, source_sha256="ab" * 32)


def _py_right_sha_not_named(m, marker, tmp):
    digest = _payload_file(tmp / "evil.py", marker)
    m["model"].update(factory=f"{tmp / 'evil.py'}:make", kwargs={}, source_sha256=digest)


HOSTILE = {  # name → (manifest edit, extra export arguments, first words of the error)
    "os:system": (_os_system, [], "manifest.json names the model factory 'os:system'"),
    "builtins:exec": (_builtins_exec, [], "manifest.json names the model factory 'builtins:exec'"),
    "subprocess:getoutput": (_subprocess, [], "is neither a built-in model"),
    "package function not in the allow-list": (_package_function_not_allowed, [],
                                                "is neither a built-in model"),
    ".py with null sha": (_py_null_sha, [], "records no SHA-256 of the model file"),
    ".py with null sha, trusted": (_py_null_sha, ["--trust-model-code"],
                                   "records no SHA-256 of the model file"),
    ".py without sha": (_py_missing_sha, ["--trust-model-code"], "records no SHA-256 of the model file"),
    ".py whose sha differs, trusted": (_py_other_sha, ["--trust-model-code"], "recorded at compression"),
    ".py with the right sha, not named": (_py_right_sha_not_named, [], "runs only if you name it"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_manifest_runs_no_code(case, digits_artifact, tmp_path):
    change, extra, words = HOSTILE[case]
    run, marker, out = _copy(digits_artifact, tmp_path), tmp_path / "MARKER", tmp_path / "m.onnx"
    _edit(run, lambda m: change(m, marker, tmp_path))
    r = _sgsc("export", run, "-o", out, *extra, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    _one_error_line(r.stderr, words)
    assert not marker.exists(), f"{case}: the payload ran"
    assert not out.exists() and not list(tmp_path.glob(".m.onnx.*"))


def test_the_marker_would_show_a_payload_that_ran(digits_artifact, tmp_path):
    """The positive control: a model file the user names (right SHA-256) does run, so the test
    above can see it."""
    run, marker, out = _copy(digits_artifact, tmp_path), tmp_path / "MARKER", tmp_path / "m.onnx"
    _edit(run, lambda m: _py_right_sha_not_named(m, marker, tmp_path))
    r = _sgsc("export", run, "-o", out, "--model", f"{tmp_path / 'evil.py'}:make", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert marker.exists() and out.is_file()


def test_named_model_file_with_another_sha_is_refused_before_it_runs(digits_artifact, tmp_path):
    run, marker, out = _copy(digits_artifact, tmp_path), tmp_path / "MARKER", tmp_path / "m.onnx"
    _edit(run, lambda m: _py_right_sha_not_named(m, marker, tmp_path))
    _payload_file(tmp_path / "edited.py", marker)
    (tmp_path / "edited.py").write_text((tmp_path / "edited.py").read_text() + "# edited after compression\n")
    r = CliRunner().invoke(main, ["export", str(run), "-o", str(out),
                                  "--model", f"{tmp_path / 'edited.py'}:make"])
    assert r.exit_code == 2
    _one_error_line(r.stderr, "edited.py has SHA-256", "recorded at compression")
    assert not marker.exists() and not out.exists()
    r = CliRunner().invoke(main, ["export", str(run), "-o", str(out),
                                  "--model", "sgsc_export.models:digits_cnn"])
    assert r.exit_code == 2
    _one_error_line(r.stderr, "must look like path/to/file.py:factory")


# -- user models: named or trusted, checked, and then they work ----------------------------------------------
@pytest.fixture
def user_run(digits_artifact, tmp_path) -> tuple[Path, Path]:
    """The digits artifact as if compressed with ``--model um.py:make`` (the same architecture,
    a user's file)."""
    run = _copy(digits_artifact, tmp_path)
    um = tmp_path / "um.py"
    um.write_text("from sgsc_export.models import digits_cnn\n\ndef make(num_classes=10):\n"
                  "    return digits_cnn(num_classes)\n")
    digest = hashlib.sha256(um.read_bytes()).hexdigest()
    _edit(run, lambda m: m["model"].update(factory=f"{um}:make", kwargs={}, source_sha256=digest))
    return run, um


def test_user_model_exports_when_named_or_trusted(user_run, tmp_path):
    run, um = user_run
    r = CliRunner().invoke(main, ["export", str(run), "-o", str(tmp_path / "a.onnx")])
    assert r.exit_code == 2
    _one_error_line(r.stderr, "runs only if you name it", "--model FILE.py:make", "--trust-model-code")
    r = CliRunner().invoke(main, ["export", str(run), "-o", str(tmp_path / "a.onnx"),
                                  "--model", f"{um}:make"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["export", str(run), "-o", str(tmp_path / "b.onnx"), "--trust-model-code"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_python_api_load_is_safe_and_rebuild_needs_the_model(user_run, tmp_path):
    import converters

    run, um = user_run
    cm = CompressedModel.load(run)  # reads and checks, runs nothing
    with pytest.raises(ModelError, match="runs only if you name it"):
        cm.to_module()
    assert CompressedModel.load(run, model=f"{um}:make").to_module() is not None
    assert CompressedModel.load(run, trust_model_code=True).to_module() is not None
    assert cm.to_module(model=f"{um}:make") is not None
    a = converters.export(run, tmp_path / "a.onnx", "compact", model=f"{um}:make")
    b = converters.export(CompressedModel.load(run), tmp_path / "b.onnx", "compact", trust_model_code=True)
    assert a.sha256 == b.sha256
    with pytest.raises(ModelError, match="runs only if you name it"):
        converters.export(run, tmp_path / "c.onnx", "compact")
    assert not (tmp_path / "c.onnx").exists()


def test_builtin_artifact_exports_with_no_flag_and_refuses_a_model_file(digits_artifact, tmp_path):
    r = CliRunner().invoke(main, ["export", str(digits_artifact), "-o", str(tmp_path / "a.onnx")])
    assert r.exit_code == 0, r.output
    other = tmp_path / "x.py"
    other.write_text("def make():\n    raise SystemExit('ran')\n")
    r = CliRunner().invoke(main, ["export", str(digits_artifact), "-o", str(tmp_path / "b.onnx"), "--model",
                                  f"{other}:make"])
    assert r.exit_code == 2
    _one_error_line(r.stderr, "built-in model sgsc_export.models:digits_cnn", "drop --model")


@pytest.mark.parametrize("kwargs, words", [
    ({"num_classes": 10, "width": 10**6}, "'width'"),
    ({"num_classes": 10**12}, "'num_classes'"),
    ({"num_classes": True}, "'num_classes'"),
    ({"num_classes": 10.0}, "'num_classes'"),
    ({"num_classes": "10"}, "'num_classes'"),
    ({"num_classes": 10, "device": "cuda"}, "takes no argument 'device'"),
])
def test_builtin_factory_arguments_are_checked(digits_artifact, tmp_path, kwargs, words):
    run = _copy(digits_artifact, tmp_path)
    _edit(run, lambda m: m["model"].update(kwargs=kwargs))
    r = CliRunner().invoke(main, ["export", str(run), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2, r.output
    _one_error_line(r.stderr, words)
    assert not (tmp_path / "m.onnx").exists()


def test_allow_list_holds_exactly_the_builtin_defaults():
    from sgsc_export.models import _DEFAULTS, BUILTIN_FACTORIES

    assert set(_DEFAULTS.values()) == set(BUILTIN_FACTORIES) == {
        "sgsc_export.models:digits_cnn", "sgsc_export.models:mnist_cnn",
        "sgsc_export.charlm:char_transformer"}


# -- the manifest schema, history.json, validate --run -------------------------------------------------------
def _set(path: tuple, value):
    def change(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


@pytest.mark.parametrize("path, value, words", [
    (("layers",), [], "lists no compressed layers"),
    (("layers", 0, "bits", 0), 9, "layers[0].bits[0] must be an integer in [0, 8]"),
    (("layers", 0, "bits", 0), -1, "layers[0].bits[0]"),
    (("layers", 0, "bits", 0), 2.5, "layers[0].bits[0]"),
    (("layers", 0, "bits"), [4], "one bit-width per output channel"),
    (("layers", 0, "weight_shape", 0), 3, "one bit-width per output channel"),
    (("layers", 0, "channels_kept"), 1, "channels_kept is 1"),
    (("layers", 0, "name"), 7, "layers[0].name"),
    (("model", "kwargs"), {"num_classes": [10]}, "JSON scalar"),
    (("model", "input_shape"), [1, 1, 8, 10**7], "input_shape[3]"),
    (("model", "task"), "rm -rf", "model.task"),
    (("model", "source_sha256"), "x", "source_sha256"),
    (("folded_batchnorm",), [["2", "no.such.module"]], "folded_batchnorm names 'no.such.module'"),
    (("folded_batchnorm",), "2", "folded_batchnorm"),
    (("preservation", "sha256"), None, "preservation.sha256"),
    (("format_version",), 2, "format_version 2"),
])
def test_manifest_schema_is_checked_before_it_is_believed(digits_artifact, tmp_path, path, value, words):
    run = _copy(digits_artifact, tmp_path)
    _edit(run, _set(path, value))
    r = CliRunner().invoke(main, ["export", str(run), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2, r.output
    _one_error_line(r.stderr, words)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]", b"[" * 100_000])
def test_corrupt_history_json_is_one_line(digits_artifact, tmp_path, content):
    run = _copy(digits_artifact, tmp_path)
    (run / "history.json").write_bytes(content)
    with pytest.raises(ArtifactError, match="history"):
        CompressedModel.load(run)
    r = CliRunner().invoke(main, ["export", str(run), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2
    _one_error_line(r.stderr, "history.json")


def test_artifact_file_symlinked_outside_is_refused(digits_artifact, tmp_path):
    run = _copy(digits_artifact, tmp_path)
    outside = tmp_path / "elsewhere.npz"
    shutil.move(run / "eval.npz", outside)
    (run / "eval.npz").symlink_to(outside)
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        CompressedModel.load(run)


def test_validate_run_checks_the_artifact_hashes(digits_artifact, tmp_path):
    from runtime_checks import EvalData
    from sgsc_export.errors import ValidationError

    run = _copy(digits_artifact, tmp_path)
    EvalData.from_run_dir(run)  # the honest artifact
    (run / "quant.safetensors").unlink()
    with pytest.raises(ValidationError, match="quant.safetensors is missing"):
        EvalData.from_run_dir(run)
    shutil.copy(digits_artifact / "quant.safetensors", run / "quant.safetensors")
    with open(run / "model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\x07")
    with pytest.raises(ValidationError, match="model.safetensors does not match the manifest"):
        EvalData.from_run_dir(run)


def test_validate_cli_with_deleted_quant_file_is_exit_2(digits_artifact, tmp_path):
    import converters

    onnx_path = tmp_path / "m.onnx"
    converters.export(digits_artifact, onnx_path, "portable")
    run = _copy(digits_artifact, tmp_path)
    (run / "quant.safetensors").unlink()
    r = CliRunner().invoke(main, ["validate", str(onnx_path), "--run", str(run), "--no-latency",
                                  "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 2, r.output
    assert "quant.safetensors is missing" in r.stderr


def test_compress_resume_never_imports_what_the_manifest_names(digits_artifact, tmp_path):
    """--resume rebuilds from its own command line; a hostile manifest in OUT is not imported."""
    run, marker = _copy(digits_artifact, tmp_path), tmp_path / "MARKER"
    _edit(run, lambda m: _os_system(m, marker, tmp_path))
    r = CliRunner().invoke(main, ["compress", "--dataset", "digits", "--out", str(run), "--resume", "--quiet",
                                  "--steps", "150", "--float-epochs", "3", "--finetune-steps", "20"])
    assert r.exit_code in (0, 2), r.output
    assert "Traceback" not in r.output and not marker.exists()


# -- hypothesis: random corruptions of manifest fields -------------------------------------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.integers(-3, 40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["os:system", "builtins:exec", "sgsc_export.models:digits_cnn", "x.py:make", "2", "3"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
_PATHS = [("model",), ("model", "factory"), ("model", "kwargs"), ("model", "kwargs", "num_classes"),
          ("model", "source_sha256"), ("model", "input_shape"), ("model", "input_shape", 2),
          ("model", "task"), ("model", "input_dtype"), ("folded_batchnorm",), ("folded_batchnorm", 0),
          ("folded_batchnorm", 0, 1),
          ("layers",), ("layers", 0), ("layers", 0, "name"), ("layers", 1, "bits"), ("layers", 1, "bits", 0),
          ("layers", 2, "weight_shape"), ("layers", 2, "weight_shape", 1), ("layers", 0, "kind"),
          ("layers", 3, "exponents"), ("preservation",), ("preservation", "sha256"), ("format_version",),
          ("files",), ("files", "eval.npz"), ("language_model",)]


@pytest.fixture(scope="module")
def fuzz_dir(digits_artifact, tmp_path_factory) -> Path:
    return _copy(digits_artifact, tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(_PATHS), value=_JSON, delete=st.booleans())
def test_random_manifest_corruption_is_exit_2_or_a_valid_export(fuzz_dir, digits_artifact, path, value,
                                                                  delete):
    original = json.loads((digits_artifact / "manifest.json").read_text())
    m = copy.deepcopy(original)
    node = m
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    (fuzz_dir / "manifest.json").write_text(json.dumps(m))
    out = fuzz_dir.parent / "fuzz.onnx"
    out.unlink(missing_ok=True)
    marker = Path("MARKER")
    r = CliRunner().invoke(main, ["export", str(fuzz_dir), "-o", str(out)])
    assert r.exit_code in (0, 2), (path, value, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), (path, value, r.exception)
    assert "Traceback" not in r.output
    if r.exit_code == 2:
        _one_error_line(r.stderr)
        assert not out.exists()
    else:
        assert out.is_file()
    assert not marker.exists()
