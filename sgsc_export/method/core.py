r"""The quantiser of self-compression, as pure functions.

Each output channel c of a Conv/Linear weight has a learned bit-depth :math:`b_c` and exponent :math:`e_c`:

.. math::

    q(w, b, e) = 2^{e}\,\operatorname{round}\bigl(
        \operatorname{clamp}(2^{-e} w,\; -2^{b-1},\; 2^{b-1}-1)\bigr)

``round`` is round-half-to-even, passed through with the straight-through estimator (identity gradient), so
gradients reach ``w`` inside the clamp range and reach ``b`` through the clamp bounds (Cséfalvay & Imber,
arXiv 2301.13142, eq. 2). ``b`` is used through ``relu`` so it never goes negative; at ``b = 0`` both bounds
are ``-1/2`` and the channel rounds to exactly zero. For any real ``b`` the integers lie in the signed range
of ``ceil(b)`` bits, which is the width a channel is stored with at deploy time.

Q, the size term, is the average number of bits per weight of the starting network (eq. 4); a weight counts
only while the input channel it reads is alive (eq. 5), which ``fan_in_alive`` carries.
"""

from __future__ import annotations

import torch

__all__ = ["channel_bits", "quantize", "quantize_int", "round_ste", "size_bits", "stored_bits"]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _bounds(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = torch.relu(b)
    return -torch.exp2(b - 1), torch.exp2(b - 1) - 1


def quantize_int(w: torch.Tensor, b: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Integer part round(clamp(2^-e w, -2^(b-1), 2^(b-1)-1)), as float, with straight-through rounding.

    ``b`` and ``e`` broadcast against ``w`` (shape ``[C, 1, ...]`` for per-output-channel parameters).
    """
    lo, hi = _bounds(b)  # lo <= hi for every b >= 0, so clamp is min(max(x, lo), hi), in one autograd node
    return round_ste(torch.clamp(torch.exp2(-e) * w, lo, hi))


def quantize(w: torch.Tensor, b: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """q(w, b, e) = 2^e · round(clamp(2^-e·w, -2^(b-1), 2^(b-1)-1))."""
    return torch.exp2(e) * quantize_int(w, b, e)


def stored_bits(b: torch.Tensor) -> torch.Tensor:
    """Deploy-time width of each channel: ceil(relu(b)) as int64; 0 means the channel is pruned."""
    return torch.ceil(torch.relu(b.detach())).to(torch.int64)


def channel_bits(b: torch.Tensor) -> torch.Tensor:
    """Differentiable bit-depth per channel (relu(b)), flattened to ``[C]``."""
    return torch.relu(b).reshape(-1)


def size_bits(b: torch.Tensor, weights_per_channel: torch.Tensor | float) -> torch.Tensor:
    """Σ_c relu(b_c) · n_c, the differentiable bit count of one layer (eq. 4, one summand)."""
    return (channel_bits(b) * weights_per_channel).sum()
