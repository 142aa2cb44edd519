"""Attention heads: the size term's view of them, and removing a head for real.

An attention block is recognised by its shape, not its class (``is_attention``), so a user's block works as
the built-in one does. The protocol, all that this module reads:

* ``q``, ``k``, ``v``, ``out``: ``nn.Linear`` projections (or their quantised twins); ``q``, ``k`` and ``v``
  have ``n_head · head_dim`` outputs and ``out`` as many inputs;
* ``head_dim``: an int, the width of one head; ``n_head``: an int, the number of heads, which must follow the
  projections' width (e.g. a property ``q.out_features // head_dim``): removal shrinks the projections, and a
  block rebuilt from its factory and the smaller state must see the heads that are left;
* head h owns channels ``h·d … (h+1)·d − 1`` of q, k and v and the same input columns of ``out``, and the
  value channel c reaches ``out``'s input column c unchanged up to the attention weights (a convex mix over
  positions), as in multi-head attention that splits the last axis ``n_head · head_dim`` into
  ``[n_head, head_dim]``.

Then:

* a zero-bit value channel (weights and bias exactly 0) makes column c of the output projection read a
  constant 0, which ``in_alive`` records for Q (eq. 5);
* when every value channel of a head is at zero bits, the head outputs exactly 0 whatever its attention
  pattern, and the head is removed: its query/key/value rows and its output-projection columns leave the
  tensors. The output is unchanged (up to float summation order; ``compress`` checks it).

A head whose query/key channels are all at zero bits but whose value channels live is *not* removed: its
scores are all 0, so it attends uniformly to the causal prefix and still contributes; it stays as masked
channels. The last head of a block is never removed (an empty tensor would not export).

``nn.MultiheadAttention`` (its twin, :mod:`sgsc_export.method.packed`) follows the same rules with its own
layout: head h owns rows ``h·d … (h+1)·d − 1`` of the query, key and value blocks of ``in_proj_weight`` (or of
``q/k/v_proj_weight``) and the same input columns of ``out_proj``. Its value rows' liveness sets
``out_proj.in_alive``, and a head whose value rows are all at zero bits outputs exactly 0 whatever its
attention pattern, so its query and key rows are set to zero bits too: every row of the head is then stored as
nothing, which is what removing it buys. The tensors keep their shape, because torch ties the head width to
``embed_dim`` (``F.multi_head_attention_forward`` splits the query's own width into heads), so a block with
fewer heads would not be an ``nn.MultiheadAttention``. With ``add_bias_kv`` the learned ``bias_v`` is a value
position every head reads, so a head's output is not 0 when its value rows are: such a block keeps every head
and every ``in_alive`` column.
"""

from __future__ import annotations

import torch
from torch import nn

from sgsc_export.errors import ModelError
from sgsc_export.method.nn import is_quantized
from sgsc_export.method.packed import QMultiheadAttention

__all__ = ["attention_modules", "is_attention", "refresh_head_in_alive_", "remove_dead_heads_"]


def is_attention(m: nn.Module) -> bool:
    """Whether ``m`` follows the attention protocol of the module docstring (projections and their widths)."""
    if not all(isinstance(getattr(m, p, None), nn.Linear) for p in ("q", "k", "v", "out")):
        return False
    n_head, head_dim = getattr(m, "n_head", None), getattr(m, "head_dim", None)
    if not all(type(a) is int and a > 0 for a in (n_head, head_dim)):
        return False
    width = n_head * head_dim
    return all(getattr(m, p).out_features == width for p in ("q", "k", "v")) and m.out.in_features == width


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The attention blocks of ``model`` (``is_attention``), by qualified name."""
    return {n: m for n, m in model.named_modules() if is_attention(m)}


def _alive(layer: nn.Module) -> torch.Tensor:
    if is_quantized(layer):
        return layer.channel_alive()
    return torch.ones(layer.weight.shape[0], dtype=torch.bool)


def _torch_attention(model: nn.Module) -> dict[str, QMultiheadAttention]:
    """The ``nn.MultiheadAttention`` twins whose dead value rows reach ``out_proj`` as exact zeros (no
    ``bias_v``)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QMultiheadAttention) and m.bias_v is None}


def _value_alive(attn: QMultiheadAttention) -> torch.Tensor:
    return attn.row_alive()[2 * attn.embed_dim:]


@torch.no_grad()
def refresh_head_in_alive_(model: nn.Module) -> None:
    """Mark, in each output projection's ``in_alive``, the columns that read a live value channel."""
    for attn in attention_modules(model).values():
        if is_quantized(attn.out):
            attn.out.in_alive.copy_(_alive(attn.v).to(attn.out.in_alive.dtype))
    for mha in _torch_attention(model).values():
        if is_quantized(mha.out_proj):
            mha.out_proj.in_alive.copy_(_value_alive(mha).to(mha.out_proj.in_alive.dtype))


def _keep_rows(layer: nn.Module, keep: torch.Tensor) -> None:
    for p in ("weight", "bias", "b", "e"):
        t = getattr(layer, p, None)
        if t is not None:
            kept = t.detach().index_select(0, keep).clone()
            setattr(layer, p, nn.Parameter(kept, requires_grad=t.requires_grad))
    layer.out_features = len(keep)


@torch.no_grad()
def _mask_dead_heads_(model: nn.Module, removed: dict[str, int]) -> None:
    """``nn.MultiheadAttention``: the query and key rows of every head whose value rows are all at zero bits
    go to zero bits as well (the module docstring)."""
    for name, mha in _torch_attention(model).items():
        e, hd = mha.embed_dim, mha.head_dim
        dead = ~_value_alive(mha).reshape(mha.num_heads, hd).any(1)
        if not bool(dead.any()):
            continue
        rows = (torch.nonzero(dead).reshape(-1)[:, None] * hd + torch.arange(hd)).reshape(-1)
        rows = torch.cat([rows, rows + e])  # the dead heads' query rows, then their key rows
        start = 0
        for w in mha.qweights().values():  # in_proj_weight [3E], or q/k/v_proj_weight [E] each
            n = w.weight.shape[0]
            w.b.view(-1)[rows[(rows >= start) & (rows < start + n)] - start] = 0.0
            start += n
        removed[name] = int(dead.sum())


@torch.no_grad()
def remove_dead_heads_(model: nn.Module) -> dict[str, int]:
    """Remove every head whose value channels are all at zero bits. Returns attention module name → heads
    removed (for ``nn.MultiheadAttention``: set to zero bits in every row, the module docstring)."""
    removed: dict[str, int] = {}
    _mask_dead_heads_(model, removed)
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
        if attn.n_head != len(keep_heads):
            raise ModelError(f"{name}: {type(attn).__name__}.n_head is {attn.n_head} after removing heads, "
                             f"but {len(keep_heads)} are left; n_head must follow the projections' width "
                             "(e.g. a property q.out_features // head_dim, see sgsc_export.method.heads)")
        removed[name] = int(dead.sum())
    return removed
