"""The preservation set: training samples that must survive compression, chosen by a float reference model.

Three criteria, each with its own budget, over the **training split only**:

* uncertainty — the smallest margin between the two most probable classes (p_top1 − p_top2);
* saliency — Grad-CAM (Selvaraju et al.) on the last convolution for the true class: the samples whose
  prediction rests on the strongest class-discriminative evidence, i.e. features compression must keep. Models
  without a convolution fall back to input-gradient saliency ‖∂z_y/∂x‖₁;
* diversity — scikit-learn k-means on PCA-reduced penultimate-layer embeddings (the input of the last Linear);
  the sample nearest each centroid.

The union is de-duplicated by index (a sample picked by an earlier criterion leaves its place to the next best
of the later one), so the set has exactly the requested size when the training split is large enough.
Labels are always ``y[selected_indices_]``, taken from the same index.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgsc_export.errors import ConfigError, DataError

__all__ = ["PreservationSetSelector", "default_size", "preservation_sha256"]

CRITERIA = ("uncertainty", "saliency", "diversity")


def default_size(n_train: int) -> int:
    """min(10 % of the training split, 1000), at least 1."""
    return max(1, min(n_train // 10, 1000))


def preservation_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of the preservation samples, as every stage computes it (see docs/ARTIFACT.md)."""
    h = hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes())
    h.update(np.ascontiguousarray(y, np.int64).tobytes())
    return h.hexdigest()


def quotas(size: int | None, budget: tuple[float, ...], n: int) -> np.ndarray:
    """Samples per criterion: ``size`` (default min(10 %, 1000)) shared by ``budget``, remainder to the largest."""
    size = default_size(n) if size is None else int(size)
    if not 0 < size <= n:
        raise ConfigError(f"preservation size={size} is out of range; allowed [1, {n}] for this training split")
    shares = np.asarray(budget, dtype=float)
    quota = np.floor(shares / shares.sum() * size).astype(int)
    quota[np.argmax(shares)] += size - quota.sum()
    return quota


def diversity(emb: np.ndarray, k: int, n_components: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k clusters) on PCA-reduced embeddings: each sample's distance to its nearest centroid, and the
    order "nearest sample to each centroid first, then the next nearest" (so de-duplication can refill)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n = len(emb)
    if k <= 0:
        return np.zeros(n, dtype=np.float32), np.array([], dtype=np.int64)
    ncomp = int(min(n_components, emb.shape[1], n))
    z = PCA(n_components=ncomp, random_state=random_state).fit_transform(emb.astype(np.float64))
    km = KMeans(n_clusters=min(k, n), n_init=1, random_state=random_state).fit(z)
    d_all = km.transform(z)  # [n, k]
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


def _last(model: nn.Module, kinds: tuple[type, ...]) -> nn.Module | None:
    found = None
    for m in model.modules():
        if isinstance(m, kinds):
            found = m
    return found


class PreservationSetSelector:
    """Choose the preservation set from a training split with a float reference model (scikit-learn style).

    Parameters
    ----------
    size: total number of samples; ``None`` → min(10 % of the data, 1000).
    budget: shares of ``size`` for (uncertainty, saliency, diversity).
    n_components: PCA dimensions before k-means.
    batch_size: inference batch size.
    random_state: seed of PCA and k-means.

    Attributes after ``fit``: ``selected_indices_`` (int64, sorted by criterion then score), ``criteria_``
    (criterion of each selected index), ``scores_`` (``[n, 3]``: margin, saliency, distance to the nearest
    centroid), ``size_``.
    """

    def __init__(self, size: int | None = None, budget: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
                 n_components: int = 32, batch_size: int = 256, random_state: int = 0) -> None:
        self.size = size
        self.budget = budget
        self.n_components = n_components
        self.batch_size = batch_size
        self.random_state = random_state

    # -- scores ---------------------------------------------------------------------------------------
    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        conv = _last(model, (nn.Conv1d, nn.Conv2d))
        head = _last(model, (nn.Linear,))
        if head is None:
            raise ConfigError("the preservation selector needs a model that ends in a Linear layer (for embeddings)")
        margins, saliency, embeds = [], [], []
        store: dict[str, torch.Tensor] = {}
        hooks = [head.register_forward_hook(lambda m, i, o: store.__setitem__("emb", i[0].detach()))]
        def keep_activation(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            output.retain_grad()
            store["act"] = output

        if conv is not None:
            hooks.append(conv.register_forward_hook(keep_activation))
        try:
            for s in range(0, len(x), self.batch_size):
                xb = x[s : s + self.batch_size].clone().requires_grad_(conv is None)
                yb = y[s : s + self.batch_size]
                logits = model(xb)
                p = F.softmax(logits.detach(), dim=1)
                top2 = p.topk(min(2, p.shape[1]), dim=1).values
                margins.append((top2[:, 0] - top2[:, -1]).numpy())
                embeds.append(store["emb"].reshape(len(xb), -1).numpy())
                model.zero_grad(set_to_none=True)
                logits.gather(1, yb[:, None]).sum().backward()
                if conv is not None:
                    act, grad = store["act"].detach(), store["act"].grad
                    dims = tuple(range(2, act.dim()))
                    alpha = grad.mean(dim=dims, keepdim=True)
                    cam = torch.relu((alpha * act).sum(1))
                    saliency.append(cam.reshape(len(xb), -1).mean(1).numpy())
                else:
                    saliency.append(xb.grad.reshape(len(xb), -1).abs().sum(1).numpy())
        finally:
            for h in hooks:
                h.remove()
            model.zero_grad(set_to_none=True)
        return np.concatenate(margins), np.concatenate(saliency), np.concatenate(embeds)

    # -- fit ------------------------------------------------------------------------------------------
    def fit(self, model: nn.Module, dataset: tuple[np.ndarray, np.ndarray]) -> PreservationSetSelector:
        """Score every sample of ``dataset = (x_train, y_train)`` and select the set. Returns ``self``."""
        x_np, y_np = dataset
        n = len(x_np)
        if n == 0 or len(y_np) != n:
            raise DataError(f"the preservation selector needs a non-empty split with one label per sample; got {n} inputs, {len(y_np)} labels")
        quota = quotas(self.size, self.budget, n)

        was_training = model.training
        model.eval()
        try:
            x = torch.as_tensor(np.ascontiguousarray(x_np, np.float32))
            y = torch.as_tensor(np.asarray(y_np, np.int64))
            margin, saliency, emb = self._scores(model, x, y)
        finally:
            model.train(was_training)

        dist, div_order = diversity(emb, int(quota[2]), self.n_components, self.random_state)

        orders = [
            np.argsort(margin, kind="stable"),  # smallest margin first
            np.argsort(-saliency, kind="stable"),  # strongest evidence first
            div_order,
        ]
        self.selected_indices_, self.criteria_ = take_union(orders, quota, n)
        self.scores_ = np.stack([margin, saliency, dist], axis=1).astype(np.float32)
        self.size_ = len(self.selected_indices_)
        return self

    def labels(self, y: np.ndarray) -> np.ndarray:
        """Labels of the selected samples, by the same index."""
        return np.asarray(y, np.int64)[self.selected_indices_]
