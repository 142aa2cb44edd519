"""EvalData loaders and the preservation-set hash."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from runtime_checks import EvalData, preservation_sha256
from sgsc_export.errors import ValidationError
from tests.runtime_checks.conftest import write_run


def test_hash_is_the_contract_formula():
    x, y = np.arange(8, dtype=np.float64).reshape(2, 4), np.array([1, 0], np.int32)
    expected = hashlib.sha256(x.astype(np.float32).tobytes() + y.astype(np.int64).tobytes()).hexdigest()
    assert preservation_sha256(x, y) == expected


def test_from_npz_splits_by_indices(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    y = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, preservation_indices=np.array([7, 2]))
    data = EvalData.from_npz(tmp_path / "d.npz")
    assert len(data.x_test) == 10 and data.y_preservation.tolist() == [1, 2]
    assert data.preservation_sha256 == preservation_sha256(x[[7, 2]], y[[7, 2]])
    assert data.ref_test is None and data.float_test_accuracy is None


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 2), np.float32)}, "missing array 'y'"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(3), "preservation_indices": np.array([5])}, "out of range"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(2)}, "x_test has 3 samples but y_test has 2"),
])
def test_from_npz_rejects_bad_files(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValidationError, match=message):
        EvalData.from_npz(tmp_path / "d.npz")


def test_from_run_dir_reads_references_and_float_accuracy(tmp_path, tiny_model, data):
    run, _ = write_run(tmp_path, tiny_model, data, float_acc=0.9)
    loaded = EvalData.from_run_dir(run)
    assert loaded.float_test_accuracy == 0.9 and loaded.ref_test.shape == (300, 10)
    assert loaded.run_dir == run


def test_from_run_dir_checks_the_manifest_hash(tmp_path, tiny_model, data):
    run, _ = write_run(tmp_path, tiny_model, data, tamper=True)
    with pytest.raises(ValidationError, match="does not match the manifest"):
        EvalData.from_run_dir(run)


def test_from_run_dir_rejects_incomplete_directory(tmp_path):
    with pytest.raises(ValidationError, match="no manifest.json"):
        EvalData.from_run_dir(tmp_path)
