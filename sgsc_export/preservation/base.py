"""The selectors' shared private base class and the steps they share.

A selector scores every training item with the float reference model by two criteria and an embedding, then
takes its budget from each criterion in turn:

* ``quotas``: ``size`` (default min(10 %, 1000)) split by ``budget``, the remainder to the largest share;
* ``diversity``: scikit-learn k-means on PCA-reduced embeddings, the item nearest each centroid first;
* ``take_union``: the criteria's orders, de-duplicated by index (an item picked by an earlier criterion leaves
  its place to the next best of the later one), so the set has exactly the requested size.

The subclass gives ``_scores(model, x, y) → (first, second, embeddings)``, the criteria's names
(``CRITERIA``) and which criterion prefers small scores (``_smallest_first``); ``fit`` is the same for both
(scikit-learn style: ``__init__`` stores the parameters, ``fit`` returns ``self``, learned attributes end in
``_``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sgsc_export.errors import ConfigError, DataError

__all__ = ["default_size", "diversity", "head_of", "last_module", "quotas", "take_union"]


def default_size(n_train: int) -> int:
    """min(10 % of the training split, 1000), at least 1."""
    return max(1, min(n_train // 10, 1000))


def quotas(size: int | None, budget: tuple[float, ...], n: int) -> np.ndarray:
    """Samples per criterion: ``size`` (default min(10 %, 1000)) shared by ``budget``, remainder to the
    largest."""
    size = default_size(n) if size is None else int(size)
    if not 0 < size <= n:
        raise ConfigError(f"preservation size={size} is out of range; allowed [1, {n}] for this training "
                          "split")
    shares = np.asarray(budget, dtype=float)
    quota = np.floor(shares / shares.sum() * size).astype(int)
    quota[np.argmax(shares)] += size - quota.sum()
    return quota


def _pca(x: np.ndarray, n_components: int) -> np.ndarray:
    """``x`` centred and projected on its first ``n_components`` principal axes (SVD; each axis's sign fixed
    so that its largest-magnitude loading is positive, so the result does not depend on the LAPACK build)."""
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:n_components]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    return x @ (vt * np.where(signs == 0, 1.0, signs)[:, None]).T


def _sq_distances(z: np.ndarray, centres: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``[n, k]`` squared Euclidean distances, computed in row chunks (memory ~ chunk × k)."""
    cc = (centres**2).sum(1)
    out = np.empty((len(z), len(centres)), dtype=np.float64)
    for s in range(0, len(z), chunk):
        zs = z[s : s + chunk]
        out[s : s + chunk] = np.maximum((zs**2).sum(1)[:, None] - 2.0 * zs @ centres.T + cc[None, :], 0.0)
    return out


def kmeans(z: np.ndarray, k: int, random_state: int, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding from ``random_state`` (numpy only: importing scikit-learn's
    would cost a compression run seconds); returns the ``k`` centres. An emptied cluster keeps its centre."""
    rng = np.random.default_rng(random_state)
    centres = [z[int(rng.integers(len(z)))]]
    nearest = _sq_distances(z, np.asarray(centres))[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        i = int(rng.choice(len(z), p=nearest / total)) if total > 0 else int(rng.integers(len(z)))
        centres.append(z[i])
        nearest = np.minimum(nearest, _sq_distances(z, z[i : i + 1])[:, 0])
    c = np.asarray(centres, dtype=np.float64)
    for _ in range(iterations):
        label = _sq_distances(z, c).argmin(1)
        counts = np.bincount(label, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, label, z)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
        if np.allclose(new, c, rtol=0.0, atol=1e-10):
            break
        c = new
    return c


def diversity(emb: np.ndarray, k: int, n_components: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k clusters) on PCA-reduced embeddings: each sample's distance to its nearest centroid, and the
    order "nearest sample to each centroid first, then the next nearest" (so de-duplication can refill)."""
    n = len(emb)
    if k <= 0:
        return np.zeros(n, dtype=np.float32), np.array([], dtype=np.int64)
    ncomp = int(min(n_components, emb.shape[1], n))
    z = _pca(emb.astype(np.float64), ncomp)
    d_all = np.sqrt(_sq_distances(z, kmeans(z, min(k, n), random_state)))  # [n, k]
    return d_all.min(1).astype(np.float32), np.argsort(d_all, axis=0, kind="stable").T.reshape(-1)


def take_union(orders: list[np.ndarray], quota: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Take ``quota[c]`` indices from each criterion's ``orders[c]`` in turn, skipping indices already taken.
    Returns the indices (int64) and the criterion of each (int8)."""
    chosen: list[int] = []
    crit: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for c, (order, q) in enumerate(zip(orders, quota)):
        got = 0
        for i in order:
            if got == q:
                break
            if not taken[i]:
                taken[i] = True
                chosen.append(int(i))
                crit.append(c)
                got += 1
    return np.asarray(chosen, dtype=np.int64), np.asarray(crit, dtype=np.int8)


def last_module(model: nn.Module, kinds: tuple[type, ...]) -> nn.Module | None:
    """The last module of ``model`` (in ``modules()`` order) that is an instance of ``kinds``."""
    found = None
    for m in model.modules():
        if isinstance(m, kinds):
            found = m
    return found


def head_of(model: nn.Module) -> nn.Module:
    """The model's last Linear layer, whose input is the embedding the diversity criterion clusters."""
    head = last_module(model, (nn.Linear,))
    if head is None:
        raise ConfigError("the preservation selector needs a model that ends in a Linear layer (for "
                          "embeddings)")
    return head


class _PreservationSelector:
    """The selectors' base (see the module docstring): a subclass scores, this class selects.

    The parameters (``size``, ``budget``, ``n_components``, ``batch_size``, ``random_state``) and the learned
    attributes (``selected_indices_``, ``criteria_``, ``scores_``, ``size_``) are documented on
    :class:`~sgsc_export.preservation.images.PreservationSetSelector`.
    """

    CRITERIA: tuple[str, str, str]
    _smallest_first: tuple[bool, bool]  # per scored criterion: True → the smallest score is picked first
    _x_dtype: type = np.float32
    _mismatch = "one label per sample; got {n} inputs, {m} labels"

    def __init__(self, size: int | None = None, budget: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
                 n_components: int = 32, batch_size: int = 256, random_state: int = 0) -> None:
        self.size = size
        self.budget = budget
        self.n_components = n_components
        self.batch_size = batch_size
        self.random_state = random_state

    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def fit(self, model: nn.Module, dataset: tuple[np.ndarray, np.ndarray]) -> _PreservationSelector:
        """Score every item of ``dataset = (x_train, y_train)`` and select the set. Returns ``self``."""
        x_np, y_np = dataset
        n = len(x_np)
        if n == 0 or len(y_np) != n:
            raise DataError("the preservation selector needs a non-empty split with "
                            + self._mismatch.format(n=n, m=len(y_np)))
        quota = quotas(self.size, self.budget, n)
        was_training = model.training
        model.eval()
        try:
            x = torch.as_tensor(np.ascontiguousarray(x_np, self._x_dtype))
            first, second, emb = self._scores(model, x, torch.as_tensor(np.asarray(y_np, np.int64)))
        finally:
            model.train(was_training)
        dist, div_order = diversity(emb, int(quota[2]), self.n_components, self.random_state)
        orders = [np.argsort(s if smallest else -s, kind="stable")
                  for s, smallest in zip((first, second), self._smallest_first)]
        self.selected_indices_, self.criteria_ = take_union([*orders, div_order], quota, n)
        self.scores_ = np.stack([first, second, dist], axis=1).astype(np.float32)
        self.size_ = len(self.selected_indices_)
        return self

    def labels(self, y: np.ndarray) -> np.ndarray:
        """Labels (a language model: target rows) of the selected items, by the same index."""
        return np.asarray(y, np.int64)[self.selected_indices_]
