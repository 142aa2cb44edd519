"""`sgsc validate --data npz:…` and `sgsc inspect` on bad data: one line, exit 2, before any session runs.

Cases found by ``python -m benchmarks.untrusted`` after the first fixes of issue 14: labels the model has no
output for, complex inputs, inputs of the wrong rank (one onnxruntime error per optimisation level before), an
empty ``.onnx`` file that ``inspect`` read as an empty model, and a pickled ``--weights`` file whose torch
warning reached the user's screen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from sgsc_export.cli import main
from tests.runtime_checks.conftest import make_data, make_model, run_onnx


def sgsc(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def one_error(code: int, out: str, needle: str) -> None:
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and needle in errors[0], out
    assert "Traceback" not in out


@pytest.fixture()
def model_and_data(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    model = make_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = make_data()["x_test"]
    return path, {"x": x, "y": run_onnx(model, x).argmax(1).astype(np.int64)}


def _validate(tmp_path: Path, model: Path, arrays: dict[str, np.ndarray]) -> tuple[int, str]:
    np.savez(tmp_path / "d.npz", **arrays)
    return sgsc("validate", model, "--data", f"npz:{tmp_path / 'd.npz'}", "--no-latency")


def test_honest_data_passes(model_and_data, tmp_path):
    model, arrays = model_and_data
    assert _validate(tmp_path, model, arrays)[0] == 0


@pytest.mark.parametrize("label", [10, 10**12, -3])
def test_labels_outside_the_model_outputs_are_refused(model_and_data, tmp_path, label):
    model, arrays = model_and_data
    arrays["y"][5] = label
    one_error(*_validate(tmp_path, model, arrays), "but the model has 10 outputs")


def test_float_labels_are_refused_not_truncated(model_and_data, tmp_path):
    model, arrays = model_and_data
    one_error(*_validate(tmp_path, model, {**arrays, "y": arrays["y"] + 0.7}), "labels must be integer class")


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_])
def test_inputs_that_are_not_real_numbers_are_refused(model_and_data, tmp_path, dtype):
    model, arrays = model_and_data
    one_error(*_validate(tmp_path, model, {**arrays, "x": arrays["x"].astype(dtype)}),
              "must hold real numbers")


def test_nan_inputs_are_refused(model_and_data, tmp_path):
    model, arrays = model_and_data
    arrays["x"][3, 0, 0, 0] = np.nan
    one_error(*_validate(tmp_path, model, arrays), "NaN or infinite")


@pytest.mark.parametrize("shape", [(300, 64), (300, 1, 8, 9), (300, 1, 1, 8, 8)])
def test_inputs_of_another_shape_are_one_line_before_any_session(model_and_data, tmp_path, shape):
    model, arrays = model_and_data
    x = np.zeros(shape, np.float32)
    one_error(*_validate(tmp_path, model, {"x": x, "y": arrays["y"]}), "do not fit the model's input")


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"not a model"])
def test_inspect_refuses_a_file_that_is_not_a_model(tmp_path, content):
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    code, out = sgsc("inspect", path)
    assert code == 2 and out.startswith("error: ") and len(out.strip().splitlines()) == 1, out


def test_a_pickled_weights_file_is_one_line_and_runs_nothing(tmp_path):
    import pickle

    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "w.pt").write_bytes(pickle.dumps({"0.weight": Payload()}, protocol=4))
    (tmp_path / "m.py").write_text("import torch\ndef make():\n    return "
                                   "torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n")
    code, out = sgsc("compress", "--dataset", "digits", "--model", f"{tmp_path / 'm.py'}:make", "--weights",
                     tmp_path / "w.pt", "--out", tmp_path / "out", "--quiet")
    one_error(code, out, "weights_only=True refuses to unpickle")
    assert "weights_only` set to `False`" not in out and "UserWarning" not in out
    assert not marker.exists() and not (tmp_path / "out").exists()
