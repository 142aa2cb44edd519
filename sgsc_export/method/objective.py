r"""The SGSC objective.

.. math::

    \Lambda = \mathcal{L}_{task}(x, y) + \gamma\, Q + \lambda\, \mathcal{L}_{task}(x_P, y_P)

``Q`` is the average number of bits per weight of the starting network (Cséfalvay & Imber, eq. 4):
``Q = Σ_layers Σ_c relu(b_c) · n_c / N``, where ``n_c`` counts channel c's weights that read a live input
(eq. 5) and ``N`` is the number of quantisable weights before compression. ``(x_P, y_P)`` is a batch of the
preservation set; λ = 0 is plain self-compression.

Optionally (``distill`` = κ > 0) the task loss on the training batch also pulls the compressed model towards
the float reference's predictions (Hinton et al.'s distillation): κ·T²·KL(p_float^T ‖ p_q^T).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sgsc_export.method import core
from sgsc_export.method.nn import quantized_layers
from sgsc_export.tasks import CLASSIFICATION, Task

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
        bits = core.stored_bits(layer.b).reshape(-1).to(torch.float64)
        total += int((bits * layer.weights_per_channel().double()).sum())
    return total


def task_loss(logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None = None,
              kappa: float = 0.0, temperature: float = 2.0, task: Task = CLASSIFICATION) -> torch.Tensor:
    """The task's loss (cross-entropy), plus κ·T²·KL(teacher ‖ student) at temperature T when a float
    teacher's logits are given (per predicted position for a language model)."""
    loss = task.loss(logits, y)
    if teacher is not None and kappa > 0:
        t = temperature
        logits, teacher = task.flatten(logits), task.flatten(teacher)
        kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                      reduction="batchmean")
        loss = loss + kappa * t * t * kl
    return loss


def sgsc_loss(logits: torch.Tensor, y: torch.Tensor, q: torch.Tensor, gamma: float, lam: float,
              pres_logits: torch.Tensor | None = None, pres_y: torch.Tensor | None = None,
              teacher: torch.Tensor | None = None, kappa: float = 0.0, temperature: float = 2.0,
              task: Task = CLASSIFICATION) -> LossParts:
    main = task_loss(logits, y, teacher, kappa, temperature, task)
    total = main + gamma * q
    pres = torch.zeros((), dtype=main.dtype)
    if lam > 0 and pres_logits is not None:
        pres = task.loss(pres_logits, pres_y)
        total = total + lam * pres
    return LossParts(total, float(main.detach()), float(q.detach()), float(pres.detach()))
