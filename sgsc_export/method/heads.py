"""Attention heads: the size term's view of them, and removing a head for real.

Head h of a :class:`~sgsc_export.models.charlm.CausalSelfAttention` owns channels ``h·d … (h+1)·d − 1`` of the query,
key and value projections and the same input columns of the output projection. Channel c of the value
projection reaches the output projection's input column c unchanged up to the attention weights (a convex
mix over positions), so:

* a zero-bit value channel (weights and bias exactly 0) makes column c of the output projection read a
  constant 0, which ``in_alive`` records for Q (eq. 5);
* when every value channel of a head is at zero bits, the head outputs exactly 0 whatever its attention pattern,
  and the head is removed: its query/key/value rows and its output-projection columns leave the tensors. The
  output is unchanged (up to float summation order).

A head whose query/key channels are all at zero bits but whose value channels live is *not* removed: its scores
are all 0, so it attends uniformly to the causal prefix and still contributes; it stays as masked channels.
The last head of a block is never removed (an empty tensor would not export).
"""

from __future__ import annotations

import torch
from torch import nn

from sgsc_export.method.nn import is_quantized
from sgsc_export.models.charlm import CausalSelfAttention

__all__ = ["attention_modules", "refresh_head_in_alive_", "remove_dead_heads_"]


def attention_modules(model: nn.Module) -> dict[str, CausalSelfAttention]:
    return {n: m for n, m in model.named_modules() if isinstance(m, CausalSelfAttention)}


def _alive(layer: nn.Module) -> torch.Tensor:
    if is_quantized(layer):
        return layer.channel_alive()
    return torch.ones(layer.weight.shape[0], dtype=torch.bool)


@torch.no_grad()
def refresh_head_in_alive_(model: nn.Module) -> None:
    """Mark, in each output projection's ``in_alive``, the columns that read a live value channel."""
    for attn in attention_modules(model).values():
        if is_quantized(attn.out):
            attn.out.in_alive.copy_(_alive(attn.v).to(attn.out.in_alive.dtype))


def _keep_rows(layer: nn.Module, keep: torch.Tensor) -> None:
    for p in ("weight", "bias", "b", "e"):
        t = getattr(layer, p, None)
        if t is not None:
            setattr(layer, p, nn.Parameter(t.detach().index_select(0, keep).clone(), requires_grad=t.requires_grad))
    layer.out_features = len(keep)


@torch.no_grad()
def remove_dead_heads_(model: nn.Module) -> dict[str, int]:
    """Remove every head whose value channels are all at zero bits. Returns attention module name → heads removed."""
    removed: dict[str, int] = {}
    for name, attn in attention_modules(model).items():
        hd = attn.head_dim
        dead = ~_alive(attn.v).reshape(attn.n_head, hd).any(1)
        if not bool(dead.any()):
            continue
        if bool(dead.all()):
            dead[0] = False  # keep one head: a block with no heads would not export
        keep_heads = torch.nonzero(~dead).reshape(-1)
        keep = (keep_heads[:, None] * hd + torch.arange(hd)).reshape(-1)
        for layer in (attn.q, attn.k, attn.v):
            _keep_rows(layer, keep)
        out = attn.out
        out.weight = nn.Parameter(out.weight.detach().index_select(1, keep).clone(),
                                  requires_grad=out.weight.requires_grad)
        if is_quantized(out):
            out.register_buffer("in_alive", out.in_alive.index_select(0, keep).clone())
        out.in_features = len(keep)
        removed[name] = int(dead.sum())
    return removed
