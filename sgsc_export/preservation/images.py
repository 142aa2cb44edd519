"""The preservation set: training samples that must survive compression, chosen by a float reference model.

Three criteria, each with its own budget, over the **training split only**:

* uncertainty — the smallest margin between the two most probable classes (p_top1 − p_top2);
* saliency — Grad-CAM (Selvaraju et al.) on the last convolution for the true class: the samples whose
  prediction rests on the strongest class-discriminative evidence, i.e. features compression must keep. Models
  without a convolution fall back to input-gradient saliency ‖∂z_y/∂x‖₁;
* diversity — scikit-learn k-means on PCA-reduced penultimate-layer embeddings (the input of the last Linear);
  the sample nearest each centroid.

The union is de-duplicated by index (a sample picked by an earlier criterion leaves its place to the next best
of the later one), so the set has exactly the requested size when the training split is large enough
(:mod:`sgsc_export.preservation.base`). Labels are always ``y[selected_indices_]``, taken from the same index.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgsc_export.preservation.base import _PreservationSelector, default_size, head_of, last_module

__all__ = ["CRITERIA", "PreservationSetSelector", "default_size"]

CRITERIA = ("uncertainty", "saliency", "diversity")


class PreservationSetSelector(_PreservationSelector):
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

    CRITERIA = CRITERIA
    _smallest_first = (True, False)  # smallest margin first, strongest evidence first

    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        conv = last_module(model, (nn.Conv1d, nn.Conv2d))
        head = head_of(model)
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
