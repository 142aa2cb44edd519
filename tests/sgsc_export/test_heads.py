"""Attention blocks are recognised by shape (the protocol of sgsc_export.method.heads), not by class: a user's
block with q/k/v/out projections, head_dim and n_head has its dead heads removed like the built-in one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgsc_export import CompressConfig, ModelError
from sgsc_export.method.heads import attention_modules, is_attention, remove_dead_heads_
from sgsc_export.method.nn import prepare_
from sgsc_export.method.pruning import refresh_in_alive_


class UserAttention(nn.Module):
    """Bidirectional multi-head attention written by a user (not sgsc_export.models.charlm)."""

    def __init__(self, width: int = 12, n_head: int = 3) -> None:
        super().__init__()
        self.head_dim = width // n_head
        self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))

    @property
    def n_head(self) -> int:
        return self.q.out_features // self.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b, t, self.n_head, self.head_dim).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class FixedHeads(UserAttention):
    """Breaks the protocol: n_head is a fixed number, not the projections' width."""

    n_head = 3  # type: ignore[assignment]


def _net(block: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), block, nn.Linear(12, 4))


def test_a_users_attention_block_loses_its_dead_head_and_keeps_its_output():
    net = _net(UserAttention())
    prepare_(net, CompressConfig())
    attn = net[1]
    assert is_attention(attn) and list(attention_modules(net)) == ["1"]
    with torch.no_grad():
        attn.v.b.view(-1)[4:8] = -1.0  # head 1: every value channel at zero bits
    refresh_in_alive_(net, {})
    assert float(attn.out.in_alive[4:8].sum()) == 0.0  # the size term sees those columns read nothing
    x = torch.randn(2, 6, 5)
    before = net(x)
    assert remove_dead_heads_(net) == {"1": 1}
    assert attn.n_head == 2 and attn.q.weight.shape == (8, 12) and attn.out.weight.shape == (12, 8)
    assert torch.allclose(before, net(x), atol=1e-5)


def test_a_block_of_another_shape_is_not_attention():
    block = UserAttention()
    block.out = nn.Linear(8, 12)  # out reads fewer columns than the heads produce
    assert not is_attention(block) and not is_attention(nn.Linear(3, 3))


def test_n_head_that_does_not_follow_the_projections_is_one_line():
    net = _net(FixedHeads())
    prepare_(net, CompressConfig())
    with torch.no_grad():
        net[1].v.b.view(-1)[0:4] = -1.0
    with pytest.raises(ModelError, match="n_head must follow the projections' width"):
        remove_dead_heads_(net)
