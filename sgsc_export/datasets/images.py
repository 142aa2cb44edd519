"""Data sets: scikit-learn's bundled digits (the embedded default), MNIST in IDX files, and a user's ``.npz``.

Every loader returns a :class:`Split` of float32 inputs in the model's layout and int64 class indices. The
preservation set is later chosen from ``x_train`` only; the test split is never looked at before evaluation.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgsc_export._io import open_regular, read_bounded
from sgsc_export._limits import input_limit_message, max_input_bytes
from sgsc_export.errors import DataError

__all__ = ["DATASETS", "MAX_CLASSES", "Split", "load_dataset", "load_digits", "load_mnist", "load_npz",
           "read_idx"]

DATASETS = ("digits", "mnist", "npz:PATH", "names", "text:PATH")
MAX_CLASSES = 2**20  # a label at or above it is refused before any model is built with that many outputs


@dataclass
class Split:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # the user's validation split (npz ``x_val``/``y_val``: samples the float weights never saw); the accuracy
    # target is measured on it. Absent: a split is held out of the training split (``train.target``)
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    def _parts(self) -> tuple[str, ...]:
        return ("train", "test") if self.x_val is None else ("train", "test", "val")

    def __post_init__(self) -> None:
        if (self.x_val is None) != (self.y_val is None):
            raise DataError(f"{self.name}: x_val and y_val come together; give both (the validation split) "
                            "or neither")
        for part in self._parts():
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
                raise DataError(f"{self.name}: x_{part} and y_{part} must be numpy arrays, got "
                                f"{type(x).__name__} and {type(y).__name__}")
            if x.ndim < 2:
                raise DataError(f"{self.name}: x_{part} has shape {x.shape}; it must be [samples, "
                                "*input_shape] (at least 2 dimensions)")
            if y.ndim != 1:
                raise DataError(f"{self.name}: y_{part} has shape {y.shape}; it must be one class index per "
                                "sample")
            if len(x) == 0:
                raise DataError(f"{self.name}: the {part} split is empty; provide at least one sample")
            if len(x) != len(y):
                raise DataError(f"{self.name}: x_{part} has {len(x)} samples but y_{part} has {len(y)}; they "
                                "must match")
            real = np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
            if x.dtype == np.bool_ or not real:
                raise DataError(f"{self.name}: x_{part} has dtype {x.dtype}; it must hold real numbers "
                                "(float32)")
            # labels are class indices: integers only. A float array is refused even when its values are whole
            # (2.0): casting would silently truncate 2.7 to 2, and "whole-valued" cannot be told from
            # "rounded"
            if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"{self.name}: y_{part} must hold integer class indices, got {y.dtype}; "
                                "convert the labels to int64 (y.astype('int64')) if they are whole numbers")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0:
                raise DataError(f"{self.name}: y_{part} holds {lo}; labels must be class indices >= 0")
            if hi >= MAX_CLASSES:
                raise DataError(f"{self.name}: y_{part} holds {hi}; labels must be class indices below "
                                f"MAX_CLASSES = {MAX_CLASSES} (2^20), one output of the model per class")
        for part in self._parts()[1:]:
            if getattr(self, f"x_{part}").shape[1:] != self.x_train.shape[1:]:
                raise DataError(f"{self.name}: train inputs {self.x_train.shape[1:]} and {part} inputs "
                                f"{getattr(self, f'x_{part}').shape[1:]} differ in shape; they must match")
        for part in self._parts():
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused below
                setattr(self, f"x_{part}", np.ascontiguousarray(getattr(self, f"x_{part}"), np.float32))
            setattr(self, f"y_{part}", np.ascontiguousarray(getattr(self, f"y_{part}"), np.int64))
        for part in self._parts():  # after the cast: float64 values beyond float32's range became inf
            x = getattr(self, f"x_{part}")
            if not np.isfinite(x).all():
                bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))[0])
                raise DataError(f"{self.name}: x_{part} holds NaN or infinite values (first in sample {bad}, "
                                "or beyond float32's range); clean or drop those samples")

    @property
    def num_classes(self) -> int:
        return int(max(getattr(self, f"y_{part}").max() for part in self._parts())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _stratified(x: np.ndarray, y: np.ndarray, test_size: float, seed: int, name: str) -> Split:
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    return Split(name, xtr, ytr, xte, yte)


def load_digits(seed: int = 0) -> Split:
    """scikit-learn's 1,797 8×8 digits, scaled to [0, 1], split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    return _stratified(x, d.target, 0.2, seed, "digits")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed), the format of LeCun's MNIST distribution.

    The header's declared size is checked against ``SGSC_MAX_INPUT_BYTES`` before the data is read, and no
    more than the declared size is decompressed (a gzip bomb costs nothing).
    """
    with open_regular(path, "IDX file", gzipped=path.suffix == ".gz") as f:
        head = read_bounded(f, 4, str(path))
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
            raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
        ndim = head[3]
        raw_dims = read_bounded(f, 4 * ndim, str(path))
        if len(raw_dims) < 4 * ndim:
            raise DataError(f"{path} is truncated: its header declares {ndim} dimensions")
        dims = struct.unpack(">" + "I" * ndim, raw_dims)
        size = math.prod(dims)
        if size > max_input_bytes():
            raise DataError(input_limit_message(f"IDX file {path}, header {dims},", size))
        raw = read_bounded(f, size + 1, str(path))
    if len(raw) < size:
        raise DataError(f"{path} is truncated: header says {dims}, found {len(raw)} values")
    if len(raw) > size:
        raise DataError(f"{path} has more data than its header {dims} declares; it is not an IDX file")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def _find(d: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (d / name).is_file():
            return d / name
    return None


def load_mnist(data_dir: str | Path, seed: int = 0) -> Split:
    """MNIST from IDX files in ``data_dir``.

    With the 60k training files present, the standard split is used. With only the 10k test files (as in
    ``../shared/data/mnist-t10k``) they are split 8,000 train / 2,000 test, stratified, with a fixed seed.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"MNIST directory {d} does not exist; pass --data-dir with the IDX files")
    te_x, te_y = _find(d, "t10k-images-idx3-ubyte"), _find(d, "t10k-labels-idx1-ubyte")
    tr_x, tr_y = _find(d, "train-images-idx3-ubyte"), _find(d, "train-labels-idx1-ubyte")
    if te_x is None or te_y is None:
        raise DataError(f"no t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz] in {d}; "
                        "point --data-dir at the MNIST IDX files")

    def images(p: Path) -> np.ndarray:
        return (read_idx(p).astype(np.float32) / 255.0)[:, None]

    if tr_x is not None and tr_y is not None:
        return Split("mnist", images(tr_x), read_idx(tr_y), images(te_x), read_idx(te_y))
    return _stratified(images(te_x), read_idx(te_y), 2000, seed, "mnist")


def load_npz(path: str | Path) -> Split:
    """A user's arrays ``x_train, y_train, x_test, y_test`` (x float32 in the model's layout, y class
    indices), and optionally ``x_val, y_val``: a validation split the accuracy target is measured on."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"npz file {p} does not exist")
    from sgsc_export._io import load_npz_bounded

    keys = ("x_train", "y_train", "x_test", "y_test")
    arrays = load_npz_bounded(p, allowed_keys=keys + ("x_val", "y_val"), error=DataError)
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{p} lacks array(s) {missing}; it needs x_train, y_train, x_test, y_test")
    if not np.issubdtype(arrays["y_train"].dtype, np.integer):
        raise DataError(f"{p}: y_train must hold integer class indices, got {arrays['y_train'].dtype}")
    return Split(f"npz:{p.name}", **arrays)


def load_dataset(spec: str, data_dir: str | Path | None = None, seed: int = 0):
    """``digits`` | ``mnist`` (with ``data_dir``) | ``npz:PATH`` → :class:`Split`;
    ``names`` (with ``data_dir``) | ``text:PATH`` → :class:`sgsc_export.datasets.text.TextSplit`."""
    if spec == "names" or spec.startswith("text:"):
        from sgsc_export.datasets.text import load_names, load_text

        return load_names(data_dir, seed) if spec == "names" else load_text(spec[5:], seed)
    if spec == "digits":
        return load_digits(seed)
    if spec == "mnist":
        if data_dir is None:
            raise DataError("--dataset mnist needs --data-dir DIR holding the MNIST IDX files")
        return load_mnist(data_dir, seed)
    if spec.startswith("npz:"):
        return load_npz(spec[4:])
    raise DataError(f"unknown dataset {spec!r}; choose one of {', '.join(DATASETS)}")
