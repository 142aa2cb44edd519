"""Quantised twins of Conv1d/Conv2d/Linear/Embedding, and ``prepare_`` that swaps them in place.

A twin is its float layer plus two per-output-channel parameters, ``b`` (bit-depth) and ``e`` (exponent), and
a buffer ``in_alive`` that marks which input slots still read a live channel (set by the pruning planner; it
only changes the size term Q). Its forward pass uses ``q(w, b, e)`` from :mod:`sgsc_export.method.core`; a
channel at zero bits also has its bias masked to exactly zero, so that the channel outputs 0 and can later be
removed without changing the network's output. An embedding's "channels" are its rows (one per token): each
row has its own b and e, and a zero-bit row embeds its token as the zero vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sgsc_export.config import CompressConfig
from sgsc_export.method import core

__all__ = ["QUANTISABLE", "QConv1d", "QConv2d", "QEmbedding", "QLinear", "is_quantized", "prepare_",
           "quantized_layers"]


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


class QConv1d(_QMixin, nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.qweight(), self.qbias())


class QConv2d(_QMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.qweight(), self.qbias())


class QLinear(_QMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qweight(), self.qbias())


class QEmbedding(_QMixin, nn.Embedding):
    """Per-row quantised embedding: row r (token r) has its own bit-depth and exponent."""

    bias = None  # an embedding has no bias; the mixin's qbias() then returns None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.qweight(), self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)


QUANTISABLE: dict[type[nn.Module], type[nn.Module]] = {nn.Conv1d: QConv1d, nn.Conv2d: QConv2d,
                                                       nn.Linear: QLinear, nn.Embedding: QEmbedding}


def is_quantized(m: nn.Module) -> bool:
    return isinstance(m, _QMixin)


def quantized_layers(model: nn.Module) -> dict[str, _QMixin]:
    """Name → quantised layer, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _QMixin)}


def _twin(m: nn.Module, init_bits: float) -> nn.Module:
    cls = QUANTISABLE[type(m)]
    q = cls.__new__(cls)
    q.__dict__ = m.__dict__.copy()  # same parameters, hooks and attributes; no re-initialisation
    q._parameters = dict(m._parameters)
    q._buffers = dict(m._buffers)
    q._modules = dict(m._modules)
    q._init_q(init_bits)
    return q


def prepare_(
    model: nn.Module,
    config: CompressConfig | None = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[str]:
    """Swap every Conv1d/Conv2d/Linear/Embedding of ``model`` for its quantised twin, in place.

    A layer is skipped when its name is in ``config.exclude`` or ``filter_fn(module, name)`` is false. Returns
    the names of the modules that stay float although they hold parameters (unsupported layer types and
    excluded layers), for the manifest.
    """
    config = config or CompressConfig()
    left_float: list[str] = []
    for name, module in list(model.named_modules()):
        if name == "" or is_quantized(module):
            continue
        own_params = any(True for _ in module.parameters(recurse=False))
        if (type(module) in QUANTISABLE and name not in config.exclude
                and (filter_fn is None or filter_fn(module, name))):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, _twin(module, config.init_bits))
        elif own_params:
            left_float.append(name)
    return left_float
