"""The preservation set of a language model: training sequences chosen by the float reference model.

Three criteria, each with its own budget, over the **training split only** (one sequence = one item):

* loss — the highest mean per-token cross-entropy: the sequences the model finds hardest;
* uncertainty — the smallest mean top-2 margin ``p_top1 − p_top2`` of the next-token distribution over the
  sequence's real positions;
* diversity — scikit-learn k-means on PCA-reduced, mean-pooled final hidden states (the head's input, averaged
  over real positions); the sequence nearest each centroid.

The union is de-duplicated by index exactly as
:class:`~sgsc_export.preservation.images.PreservationSetSelector` does: both share one base class
(:mod:`sgsc_export.preservation.base`) and its scikit-learn conventions (``fit`` returns self;
``selected_indices_``, ``criteria_``, ``scores_``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgsc_export.preservation.base import _PreservationSelector, head_of
from sgsc_export.tasks import PAD

__all__ = ["CRITERIA", "TextPreservationSelector"]

CRITERIA = ("loss", "uncertainty", "diversity")


class TextPreservationSelector(_PreservationSelector):
    """Choose the preservation sequences of a language model (scikit-learn style); see the module docstring.

    The parameters are the base class's (``batch_size`` defaults to 512 sequences). ``scores_`` is ``[n, 3]``:
    mean token loss, mean top-2 margin, distance to the nearest centroid.
    """

    CRITERIA = CRITERIA
    _smallest_first = (False, True)  # highest loss first, smallest margin first
    _x_dtype = np.int64
    _mismatch = "one target row per sequence; got {n} inputs, {m} targets"

    def __init__(self, size: int | None = None, budget: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
                 n_components: int = 32, batch_size: int = 512, random_state: int = 0) -> None:
        super().__init__(size, budget, n_components, batch_size, random_state)

    @torch.no_grad()
    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        head = head_of(model)
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
