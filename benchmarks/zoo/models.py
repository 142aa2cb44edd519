"""The zoo: eight small architectures of the kinds shipped to edge devices, written in plain PyTorch as a user
would (issue 16, item 7). Each factory is ``NAME(num_classes=10)`` and takes a ``[N, 1, H, W]`` image batch;
usable as ``sgsc compress --model benchmarks/zoo/models.py:NAME``.

Every model works at both sizes of the zoo's data sets (digits 8×8, MNIST 28×28) without knowing which: the
convolutional ones end in global average pooling, and the three that need a fixed feature size (the MLP, the
GRU's rows, the transformer's tokens) reach it with ``nn.AdaptiveAvgPool*`` to a fixed grid, so the same
factory serves both. Nothing here is shaped for SGSC.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MODELS", "conv1d_net", "densenet_small", "gru_rows", "mlp_ln", "mobilenetv2_small",
           "resnet_small", "resnext_dw", "vit_tiny"]


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


# ---------------------------------------------------------------- (1) residual CNN, ResNet basic blocks


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 conv + BN, identity (or 1×1 conv + BN) shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = (nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class ResNetSmall(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(*_conv_bn(1, w1), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(w1, w1), BasicBlock(w1, w1))
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2))
        self.layer3 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_small(num_classes: int = 10) -> nn.Module:
    """ResNet-style CNN: stem, three stages of two basic blocks (16, 32, 64 channels), global pool, Linear."""
    return ResNetSmall(num_classes)


# ---------------------------------------------------------------- (2) inverted residuals, MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand + BN + ReLU6, 3×3 depthwise + BN + ReLU6, 1×1 project + BN (linear);
    residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(),
                   *_conv_bn(hidden, cout, 1)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Small(nn.Module):
    # (expand t, channels c, repeats n, first stride s), as in the MobileNetV2 paper's table, scaled down
    SETTING = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1))

    def __init__(self, num_classes: int = 10, last: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(1, 16), nn.ReLU6()]
        cin = 16
        for t, c, n, s in self.SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [*_conv_bn(cin, last, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenetv2_small(num_classes: int = 10) -> nn.Module:
    """MobileNetV2-style CNN: seven inverted-residual blocks (16 → 64 channels), 1×1 to 256, pool, Linear."""
    return MobileNetV2Small(num_classes)


# ---------------------------------------------------------------- (3) MLP with LayerNorm and GELU


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, grid: int = 8, hidden: int = 256, depth: int = 3) -> None:
        super().__init__()
        # the same input width on every data set: 28×28 is averaged in 2×2 windows, 8×8 repeated
        self.pool = nn.AdaptiveAvgPool2d(grid)
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(grid * grid, hidden), nn.LayerNorm(hidden),
                                   nn.GELU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(0.1)]
        layers.append(nn.Linear(hidden, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.pool(x))


def mlp_ln(num_classes: int = 10) -> nn.Module:
    """MLP on a 14×14 average-pooled image (digits' 8×8 is upsampled by repetition): three Linear(256) +
    LayerNorm + GELU, Linear head."""
    return MLP(num_classes, grid=14)


# ---------------------------------------------------------------- (4) 1-D conv net on the image as a signal


class Conv1dNet(nn.Module):
    """The image read row by row as one 1-D signal ([N, 1, H·W]); Conv1d + BN + ReLU + MaxPool stages, an
    adaptive pool to 4 positions, Linear."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, w in enumerate(widths):
            layers += [nn.Conv1d(cin, w, 5, padding=2, bias=False), nn.BatchNorm1d(w), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool1d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(4)  # 64 / 4 = 16 and 784 / 4 = 196 positions: even windows
        self.fc = nn.Linear(cin * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1).unsqueeze(1)
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def conv1d_net(num_classes: int = 10) -> nn.Module:
    """1-D CNN on the flattened image: three Conv1d(k=5) stages (32, 64, 64), pool to 4, Linear."""
    return Conv1dNet(num_classes)


# ---------------------------------------------------------------- (5) a small vision transformer


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: LayerNorm → nn.MultiheadAttention → residual; LayerNorm → MLP (GELU) →
    residual."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViTTiny(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 64, depth: int = 3, heads: int = 4,
                 mlp: int = 128, grid: int = 4) -> None:
        super().__init__()
        # patch embedding: a 4×4 grid of patches whatever the image size (2×2 pixels on digits, 7×7 on MNIST,
        # the patch ViTs commonly use there), as a pool then a 1×1 projection of a small conv stem
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(grid))
        self.proj = nn.Conv2d(16, dim, 1)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, grid * grid + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(self.stem(x)).flatten(2).transpose(1, 2)           # [N, tokens, dim]
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0])


def vit_tiny(num_classes: int = 10) -> nn.Module:
    """ViT: 16 patch tokens + class token, dim 64, three pre-LN blocks of 4-head nn.MultiheadAttention and a
    GELU MLP (128), LayerNorm, Linear head on the class token."""
    return ViTTiny(num_classes)


# ---------------------------------------------------------------- (6) DenseNet-style, torch.cat


class DenseLayer(nn.Module):
    """DenseNet-B bottleneck: BN-ReLU-Conv1×1(4k)-BN-ReLU-Conv3×3(k), concatenated to its input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                  nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                  nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class DenseNetSmall(nn.Module):
    def __init__(self, num_classes: int = 10, growth: int = 12, layers: tuple[int, ...] = (4, 4),
                 stem: int = 24) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(1, stem, 3, padding=1, bias=False)]
        c = stem
        for i, n in enumerate(layers):
            for _ in range(n):
                mods.append(DenseLayer(c, growth))
                c += growth
            if i < len(layers) - 1:  # transition: BN-ReLU-Conv1×1 (halve channels)-AvgPool 2
                mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
                c //= 2
        mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*mods)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def densenet_small(num_classes: int = 10) -> nn.Module:
    """DenseNet-BC-style CNN: two dense blocks of four bottleneck layers (growth 12) joined by torch.cat, one
    transition, global pool, Linear."""
    return DenseNetSmall(num_classes)


# ---------------------------------------------------------------- (7) GRU over the rows


class GRURows(nn.Module):
    """A CRNN: a 3×3 conv front end, its feature map's width pooled to 4, then each image row is one time step
    of a GRU; the last hidden state goes to a Linear head."""

    def __init__(self, num_classes: int = 10, channels: int = 8, hidden: int = 64, width: int = 4) -> None:
        super().__init__()
        self.front = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
                                   nn.AdaptiveAvgPool2d((None, width)))
        self.gru = nn.GRU(channels * width, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.front(x)                                   # [N, C, H, width]
        seq = f.permute(0, 2, 1, 3).flatten(2)              # [N, H, C·width]: rows are time steps
        out, _ = self.gru(seq)
        return self.fc(out[:, -1])


def gru_rows(num_classes: int = 10) -> nn.Module:
    """GRU (hidden 64) over the image rows after a small conv front end; Linear on the last step."""
    return GRURows(num_classes)


# ---------------------------------------------------------------- (8) residual CNN, depthwise + grouped


class GroupedBlock(nn.Module):
    """ResNeXt-style bottleneck: 1×1 + BN + ReLU, 3×3 grouped (cardinality 4) + BN + ReLU, 1×1 + BN, plus a
    depthwise 3×3 + BN on the shortcut when the stride is 2 (and a 1×1 when the width changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 4) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(*_conv_bn(cin, mid, 1), nn.ReLU(),
                                  *_conv_bn(mid, mid, 3, stride, groups=groups), nn.ReLU(),
                                  *_conv_bn(mid, cout, 1))
        short: list[nn.Module] = []
        if stride != 1:
            short += _conv_bn(cin, cin, 3, stride, groups=cin)
        if cin != cout:
            short += _conv_bn(cin, cout, 1)
        self.shortcut = nn.Sequential(*short) if short else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNeXtDW(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        # stem: 3×3 conv, then a depthwise-separable pair (depthwise 3×3, pointwise 1×1)
        self.stem = nn.Sequential(*_conv_bn(1, 32), nn.ReLU(),
                                  *_conv_bn(32, 32, 3, groups=32), nn.ReLU(), *_conv_bn(32, 32, 1), nn.ReLU())
        self.blocks = nn.Sequential(GroupedBlock(32, 64), GroupedBlock(64, 64, 2), GroupedBlock(64, 128, 2),
                                    GroupedBlock(128, 128))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def resnext_dw(num_classes: int = 10) -> nn.Module:
    """Residual CNN of grouped (cardinality 4) bottlenecks with depthwise convs in the stem and the strided
    shortcuts, 32 → 128 channels, global pool, Linear."""
    return ResNeXtDW(num_classes)


MODELS = {f.__name__: f for f in (resnet_small, mobilenetv2_small, mlp_ln, conv1d_net, vit_tiny,
                                  densenet_small, gru_rows, resnext_dw)}
