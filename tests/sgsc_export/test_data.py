import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from sgsc_export import DataError, load_dataset
from sgsc_export.datasets.images import load_mnist, read_idx

MNIST_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist-t10k"


def _idx(path, arr, gz=False):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_idx_round_trip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _idx(tmp_path / "a.idx", a)
    _idx(tmp_path / "b.idx.gz", a, gz=True)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)
    assert np.array_equal(read_idx(tmp_path / "b.idx.gz"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "a.idx").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_mnist_layout_with_train_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    s = load_mnist(tmp_path)
    assert s.x_train.shape == (30, 1, 28, 28) and s.x_test.shape == (10, 1, 28, 28)
    assert s.x_train.max() <= 1.0 and s.x_train.dtype == np.float32


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST not found at {MNIST_DIR} (../shared/data)")
def test_real_mnist_10k_is_split_8000_2000_stratified_and_fixed():
    a, b = load_mnist(MNIST_DIR), load_mnist(MNIST_DIR)
    assert a.x_train.shape == (8000, 1, 28, 28) and a.x_test.shape == (2000, 1, 28, 28)
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_train[:5], b.x_train[:5])
    share_train = np.bincount(a.y_train, minlength=10) / 8000
    share_test = np.bincount(a.y_test, minlength=10) / 2000
    assert np.abs(share_train - share_test).max() < 0.002


def test_digits_split_is_disjoint_and_fixed():
    s = load_dataset("digits")
    assert s.x_train.shape == (1437, 1, 8, 8) and s.x_test.shape == (360, 1, 8, 8)
    train_rows = {x.tobytes() for x in s.x_train}
    # digits has a handful of exact duplicate images; the split itself never puts the same index twice
    assert sum(x.tobytes() in train_rows for x in s.x_test) < 5
    assert np.array_equal(load_dataset("digits").y_test, s.y_test)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "missing.npz", x_train=np.zeros((2, 3)), y_train=np.zeros(2, int))
    with pytest.raises(DataError, match="x_test"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    np.savez(tmp_path / "empty.npz", x_train=np.zeros((0, 3)), y_train=np.zeros(0, int),
             x_test=np.zeros((1, 3)), y_test=np.zeros(1, int))
    with pytest.raises(DataError, match="empty"):
        load_dataset(f"npz:{tmp_path / 'empty.npz'}")
    np.savez(tmp_path / "shape.npz", x_train=np.zeros((2, 3)), y_train=np.zeros(2, int),
             x_test=np.zeros((1, 4)), y_test=np.zeros(1, int))
    with pytest.raises(DataError, match="shape"):
        load_dataset(f"npz:{tmp_path / 'shape.npz'}")
    np.savez(tmp_path / "ok.npz", x_train=np.ones((4, 3)), y_train=np.array([0, 1, 0, 1]),
             x_test=np.ones((2, 3)), y_test=np.array([1, 0]))
    s = load_dataset(f"npz:{tmp_path / 'ok.npz'}")
    assert s.num_classes == 2 and s.x_train.dtype == np.float32
