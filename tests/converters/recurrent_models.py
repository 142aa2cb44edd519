"""Tiny recurrent and attention models on 8×8 digits, rebuilt by the export as a user's model file
(``tests/converters/recurrent_models.py:gru``)."""

from __future__ import annotations

import torch
from torch import nn


class Recurrent(nn.Module):
    """The rows of a digit as a sequence of 8 steps of 8 features; the last step's output classifies."""

    def __init__(self, kind: str = "gru", num_layers: int = 1, bidirectional: bool = False,
                 batch_first: bool = True, hidden: int = 10, num_classes: int = 10) -> None:
        super().__init__()
        cls = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.batch_first = batch_first
        self.rnn = cls(8, hidden, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1, 2)  # [N, 8, 8]
        if not self.batch_first:
            s = s.transpose(0, 1)
        y, _ = self.rnn(s)
        return self.fc(y[:, -1] if self.batch_first else y[-1])


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyViT(nn.Module):
    """2×2 patches (Conv2d patch embedding), learned positions, two encoder blocks, mean pool."""

    def __init__(self, d: int = 16, heads: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, d, 2, stride=2)
        self.pos = nn.Parameter(torch.zeros(1, 16, d))
        self.blocks = nn.Sequential(Block(d, heads), Block(d, heads))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.ln(self.blocks(x)).mean(1))


def gru(num_classes: int = 10) -> nn.Module:
    return Recurrent("gru", num_classes=num_classes)


def gru_bi2(num_classes: int = 10) -> nn.Module:
    return Recurrent("gru", num_layers=2, bidirectional=True, batch_first=False, num_classes=num_classes)


def lstm2(num_classes: int = 10) -> nn.Module:
    return Recurrent("lstm", num_layers=2, num_classes=num_classes)


def lstm_bi(num_classes: int = 10) -> nn.Module:
    return Recurrent("lstm", bidirectional=True, batch_first=False, num_classes=num_classes)


def vit(num_classes: int = 10) -> nn.Module:
    return TinyViT(num_classes=num_classes)
