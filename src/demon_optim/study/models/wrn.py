"""Wide Residual Networks (Zagoruyko & Komodakis, 2016).

WRN-d-k: a 3x3 convolution with 16 filters, three groups of ``n = (d - 4) / 6``
pre-activation basic blocks (BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3) of widths 16k,
32k, 64k (strides 1, 2, 2), a final BN-ReLU, global average pooling and a linear layer.
A block whose width or stride changes gets a 1x1 convolution on its shortcut.
Convolutions have no bias; He normal initialisation.

WRN-16-8 (n = 2, widths 128, 256, 512): 10,961,370 parameters with 10 classes (the
paper's 11.0M). On STL-10's 96x96 images the last group works at 24x24 before the global
pooling: about 9x the compute of a 32x32 image (~14 GMAC per image forward).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from demon_optim.study.models.layers import PixelStandardize


class WideBlock(nn.Module):
    """Pre-activation block: ``conv(relu(bn(drop(conv(relu(bn(x))))))) + shortcut``."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # the projection reads the pre-activated input, as in the authors' code
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.dropout:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``; takes uint8 or [0, 1] images of any size (global pooling).

    Args:
        depth: 6n + 4 (16, 22, 28, 40, ...).
        widen: width multiplier k.
        num_classes: width of the linear head.
        dropout: dropout probability between a block's convolutions (0: none).
        mean, std: per-channel pixel statistics for the input standardisation.
    """

    def __init__(
        self,
        depth: int = 16,
        widen: int = 8,
        num_classes: int = 10,
        dropout: float = 0.0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        self.standardize = PixelStandardize(mean, std)
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = 16
        for group, planes in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for index in range(n):
                stride = 2 if group > 0 and index == 0 else 1
                blocks.append(WideBlock(in_planes, planes, stride, dropout))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, H, W]``."""
        out = self.blocks(self.conv(self.standardize(x)))
        out = F.relu(self.bn(out))
        return self.linear(out.mean(dim=(2, 3)))
