"""The preservation set of a language model: training sequences chosen by the float reference model.

Three criteria, each with its own budget, over the **training split only** (one sequence = one item):

* loss — the highest mean per-token cross-entropy: the sequences the model finds hardest;
* uncertainty — the smallest mean top-2 margin ``p_top1 − p_top2`` of the next-token distribution over the
  sequence's real positions;
* diversity — scikit-learn k-means on PCA-reduced, mean-pooled final hidden states (the head's input, averaged
  over real positions); the sequence nearest each centroid.

The union is de-duplicated by index exactly as :class:`~sgsc_export.preservation.images.PreservationSetSelector` does,
and follows its scikit-learn conventions (``fit`` returns self; ``selected_indices_``, ``criteria_``, ``scores_``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgsc_export.errors import ConfigError, DataError
from sgsc_export.preservation.images import _last, diversity, quotas, take_union
from sgsc_export.tasks import PAD

__all__ = ["CRITERIA", "TextPreservationSelector"]

CRITERIA = ("loss", "uncertainty", "diversity")


class TextPreservationSelector:
    """Choose the preservation sequences of a language model (scikit-learn style); see the module docstring.

    ``scores_`` is ``[n, 3]``: mean token loss, mean top-2 margin, distance to the nearest centroid.
    """

    def __init__(self, size: int | None = None, budget: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
                 n_components: int = 32, batch_size: int = 512, random_state: int = 0) -> None:
        self.size = size
        self.budget = budget
        self.n_components = n_components
        self.batch_size = batch_size
        self.random_state = random_state

    @torch.no_grad()
    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, ...]:
        head = _last(model, (nn.Linear,))
        if head is None:
            raise ConfigError("the preservation selector needs a model that ends in a Linear layer (for embeddings)")
        store: dict[str, torch.Tensor] = {}
        hook = head.register_forward_hook(lambda m, i, o: store.__setitem__("h", i[0].detach()))
        losses, margins, embeds = [], [], []
        try:
            for s in range(0, len(x), self.batch_size):
                xb, yb = x[s : s + self.batch_size], y[s : s + self.batch_size]
                logits = model(xb)
                real = (yb != PAD).to(logits.dtype)
                n = real.sum(1).clamp_min(1)
                nll = F.cross_entropy(logits.transpose(1, 2), yb.clamp_min(0), reduction="none") * real
                top2 = F.softmax(logits, -1).topk(min(2, logits.shape[-1]), -1).values
                margin = (top2[..., 0] - top2[..., -1]) * real
                losses.append((nll.sum(1) / n).numpy())
                margins.append((margin.sum(1) / n).numpy())
                embeds.append(((store["h"] * real[..., None]).sum(1) / n[:, None]).numpy())
        finally:
            hook.remove()
        return np.concatenate(losses), np.concatenate(margins), np.concatenate(embeds)

    def fit(self, model: nn.Module, dataset: tuple[np.ndarray, np.ndarray]) -> TextPreservationSelector:
        """Score every sequence of ``dataset = (x_train, y_train)`` and select the set. Returns ``self``."""
        x_np, y_np = dataset
        n = len(x_np)
        if n == 0 or len(y_np) != n:
            raise DataError(f"the preservation selector needs a non-empty split with one target row per sequence; "
                            f"got {n} inputs, {len(y_np)} targets")
        quota = quotas(self.size, self.budget, n)
        was_training = model.training
        model.eval()
        try:
            loss, margin, emb = self._scores(model, torch.as_tensor(np.asarray(x_np, np.int64)),
                                             torch.as_tensor(np.asarray(y_np, np.int64)))
        finally:
            model.train(was_training)
        dist, div_order = diversity(emb, int(quota[2]), self.n_components, self.random_state)
        orders = [np.argsort(-loss, kind="stable"), np.argsort(margin, kind="stable"), div_order]
        self.selected_indices_, self.criteria_ = take_union(orders, quota, n)
        self.scores_ = np.stack([loss, margin, dist], axis=1).astype(np.float32)
        self.size_ = len(self.selected_indices_)
        return self

    def labels(self, y: np.ndarray) -> np.ndarray:
        """Targets of the selected sequences, by the same index."""
        return np.asarray(y, np.int64)[self.selected_indices_]
