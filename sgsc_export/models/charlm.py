"""The paper's character-level language model: a decoder-only transformer (embedding 64, 4 heads, 4 layers,
context 32, dropout 0).

Written for compression and export: every projection is its own ``nn.Linear`` (query, key, value, output, the
two feed-forward layers, the head) so that :func:`sgsc_export.method.nn.prepare_` quantises each per output
channel; token and position embeddings are ``nn.Embedding`` (quantised per row); LayerNorm stays float.
Attention is plain matmul + causal mask + softmax, which ``torch.onnx.export`` lowers to standard ops with a
dynamic batch.

The number of heads is read from the query projection's width (``out_features // head_dim``), so a block whose
heads were removed (:mod:`sgsc_export.method.heads`) rebuilds from the factory and the smaller state alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Block", "CausalSelfAttention", "CharTransformer", "char_transformer"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q/k/v/out ``nn.Linear`` projections."""

    def __init__(self, n_embd: int, n_head: int, context: int) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be a multiple of n_head={n_head}")
        self.head_dim = n_embd // n_head
        self.q = nn.Linear(n_embd, n_embd)
        self.k = nn.Linear(n_embd, n_embd)
        self.v = nn.Linear(n_embd, n_embd)
        self.out = nn.Linear(n_embd, n_embd)
        causal = torch.tril(torch.ones(context, context, dtype=torch.bool))
        self.register_buffer("mask", causal, persistent=False)

    @property
    def n_head(self) -> int:
        return self.q.out_features // self.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        nh, hd = self.n_head, self.head_dim
        q = self.q(x).reshape(b, t, nh, hd).transpose(1, 2)
        k = self.k(x).reshape(b, t, nh, hd).transpose(1, 2)
        v = self.v(x).reshape(b, t, nh, hd).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        mask = torch.narrow(torch.narrow(self.mask, 0, 0, t), 1, 0, t)  # traceable by torch.fx (t is a proxy)
        att = att.masked_fill(~mask, float("-inf"))
        y = torch.matmul(F.softmax(att, dim=-1), v)
        return self.out(y.transpose(1, 2).reshape(b, t, nh * hd))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + fc2(gelu(fc1(ln2(x))))."""

    def __init__(self, n_embd: int, n_head: int, context: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, context)
        self.ln2 = nn.LayerNorm(n_embd)
        self.fc1 = nn.Linear(n_embd, 4 * n_embd)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class CharTransformer(nn.Module):
    """Token ids ``[B, T]`` (int64, T ≤ context) → next-token logits ``[B, T, vocab]``."""

    def __init__(self, vocab_size: int, context: int = 32, n_embd: int = 64, n_head: int = 4,
                 n_layer: int = 4) -> None:
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(context, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, context) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The final normalised hidden states ``[B, T, n_embd]`` (the head's input)."""
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.ln_f(self.blocks(x))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(idx))


def char_transformer(vocab_size: int, context: int = 32, n_embd: int = 64, n_head: int = 4,
                     n_layer: int = 4) -> CharTransformer:
    """The factory the artifact records (``sgsc_export.charlm:char_transformer``)."""
    return CharTransformer(vocab_size, context, n_embd, n_head, n_layer)
