"""The zoo's data: ``.npz`` splits (``x_train, y_train, x_val, y_val, x_test, y_test``) that ``sgsc compress
--dataset npz:PATH`` reads, made once under the work directory. As a user splits their data: the float
weights train on ``x_train``; ``x_val`` (``VAL_FRACTION`` of the training samples, stratified, seed 0) is the
validation split they never saw, on which ``sgsc compress`` measures its accuracy target; ``x_test`` decides
nothing.

- ``digits``: scikit-learn's bundled 8×8 digits, split as ``sgsc`` splits it (1,437 / 360, stratified,
  seed 0);
- ``mnist``: the MNIST 10k test set (IDX files in ``/work/shared/data/mnist-t10k``, read there, never copied
  into the repository) split 8,000 / 2,000, stratified, seed 0 (``sgsc``'s own MNIST-10k split).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.units import DATA_DIRS

DATASETS = ("digits", "mnist")
VAL_FRACTION = 0.2


def unavailable(name: str) -> str | None:
    """Why ``name`` cannot be built here, or None."""
    if name not in DATASETS:
        return f"unknown data set {name!r} (the zoo has {', '.join(DATASETS)})"
    d = DATA_DIRS[name]
    if d is not None and not (Path(d).is_dir() and any(Path(d).glob("t10k-images*"))):
        return f"the MNIST IDX files are not in {d}; skipped (put t10k-images/labels-idx*-ubyte[.gz] there)"
    return None


def build_npz(name: str, work: Path) -> Path:
    """``work/data/NAME.npz`` (made if absent; atomic), float32 ``[N, 1, H, W]`` images in [0, 1], int64
    labels."""
    from sgsc_export import load_dataset

    path = work / "data" / f"{name}.npz"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    from sklearn.model_selection import train_test_split

    split = load_dataset(name, DATA_DIRS[name], seed=0)
    x_tr, x_val, y_tr, y_val = train_test_split(split.x_train, split.y_train, test_size=VAL_FRACTION,
                                                stratify=split.y_train, random_state=0)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, x_train=x_tr, y_train=y_tr, x_val=x_val, y_val=y_val, x_test=split.x_test,
             y_test=split.y_test)
    os.replace(tmp, path)
    return path


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
