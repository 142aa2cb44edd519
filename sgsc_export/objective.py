r"""The SGSC objective.

.. math::

    \Lambda = \mathcal{L}_{task}(x, y) + \gamma\, Q + \lambda\, \mathcal{L}_{task}(x_P, y_P)

``Q`` is the average number of bits per weight of the starting network (Cséfalvay & Imber, eq. 4):
``Q = Σ_layers Σ_c relu(b_c) · n_c / N``, where ``n_c`` counts channel c's weights that read a live input
(eq. 5) and ``N`` is the number of quantisable weights before compression. ``(x_P, y_P)`` is a batch of the
preservation set; λ = 0 is plain self-compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import core
from .nn import quantized_layers

__all__ = ["LossParts", "sgsc_loss", "size_term", "stored_size_bits"]


@dataclass
class LossParts:
    total: torch.Tensor
    task: float
    q: float
    preservation: float


def size_term(model: nn.Module, n_start: int) -> torch.Tensor:
    """Q: differentiable average bits per weight of the starting network."""
    return sum(layer.size_bits() for layer in quantized_layers(model).values()) / n_start


@torch.no_grad()
def stored_size_bits(model: nn.Module) -> int:
    """Bits the weights take when stored: Σ_c ceil(b_c) · n_c over the weights physically present."""
    total = 0
    for layer in quantized_layers(model).values():
        total += int((core.stored_bits(layer.b).reshape(-1).to(torch.float64) * layer.weights_per_channel().double()).sum())
    return total


def sgsc_loss(logits: torch.Tensor, y: torch.Tensor, q: torch.Tensor, gamma: float, lam: float,
              pres_logits: torch.Tensor | None = None, pres_y: torch.Tensor | None = None) -> LossParts:
    task = F.cross_entropy(logits, y)
    total = task + gamma * q
    pres = torch.zeros((), dtype=task.dtype)
    if lam > 0 and pres_logits is not None:
        pres = F.cross_entropy(pres_logits, pres_y)
        total = total + lam * pres
    return LossParts(total, float(task.detach()), float(q.detach()), float(pres.detach()))
