"""The state and maths every quantised tensor shares: per-output-channel ``b`` and ``e``, the alive mask of
its inputs, q(w, b, e) and the integers and scales it is stored as (:mod:`sgsc_export.method.core`).

A layer twin (:mod:`sgsc_export.method.nn`) and a weight tensor of a recurrent or attention twin
(:mod:`sgsc_export.method.packed`) are both ``_QMixin``: what the loop, the size term, pruning and freezing
read of a quantised layer is this class.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sgsc_export.method import core

__all__ = ["_QMixin"]


class _QMixin:
    """Shared state and maths of the quantised layers. ``weight`` keeps the float master copy."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_q(self, init_bits: float) -> None:
        w = self.weight.detach()
        c = w.shape[0]
        shape = (c,) + (1,) * (w.dim() - 1)
        maxabs = w.abs().reshape(c, -1).amax(1).clamp_min(1e-8)
        levels = max(2.0 ** (init_bits - 1) - 1, 1.0)
        self.b = nn.Parameter(torch.full(shape, float(init_bits), dtype=w.dtype))
        self.e = nn.Parameter(torch.log2(maxabs / levels).reshape(shape).to(w.dtype))
        self.register_buffer("in_alive", torch.ones(w.shape[1] * self.groups_(), dtype=w.dtype))

    def groups_(self) -> int:
        return int(getattr(self, "groups", 1))

    # -- quantities -----------------------------------------------------------------------------------
    def channel_alive(self) -> torch.Tensor:
        """Bool ``[C]``: channels whose bit-depth is above zero."""
        return self.b.detach().reshape(-1) > 0

    def qweight(self) -> torch.Tensor:
        return core.quantize(self.weight, self.b, self.e)

    def qbias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return self.bias * self.channel_alive().to(self.bias.dtype)

    def weights_per_channel(self) -> torch.Tensor:
        """n_c: weights of channel c that read a live input (eq. 5), as float ``[C]``."""
        w = self.weight
        g = self.groups_()
        c, cin_g = w.shape[0], w.shape[1]
        k = math.prod(w.shape[2:]) if w.dim() > 2 else 1
        alive_per_group = self.in_alive.reshape(g, cin_g).sum(1)  # [g]
        per_out = alive_per_group.repeat_interleave(c // g)
        return per_out * k

    def size_bits(self) -> torch.Tensor:
        return core.size_bits(self.b, self.weights_per_channel())

    def integer_weight(self) -> torch.Tensor:
        """The stored integers, int8, shape of ``weight``."""
        with torch.no_grad():
            return core.quantize_int(self.weight, self.b, self.e).to(torch.int8)

    def scale(self) -> torch.Tensor:
        """Per-channel scale 2^e as float32 ``[C]``; weights = integers × scale exactly."""
        return torch.exp2(self.e.detach()).reshape(-1).to(torch.float32)
