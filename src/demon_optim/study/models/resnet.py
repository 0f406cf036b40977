"""ResNets for small images (He et al., 2016, section 4.2: the CIFAR-10 architecture).

A 3x3 convolution with 16 filters, then three stages of ``n`` basic blocks (two 3x3
convolutions with batch norm) at widths 16, 32, 64 and feature-map sizes 32, 16, 8 (the
first block of stages 2 and 3 has stride 2), global average pooling and a linear
classifier; depth ``6n + 2``. Shortcuts are option A by default, as in the paper's CIFAR
experiments: identity, and where the shape changes, the input subsampled by 2 and padded
with zero channels (no parameters). Option B projects with a 1x1 convolution + batch norm
instead.

Parameter counts (option A): ResNet-20 (n = 3) 269,722 with 10 classes (the paper's
0.27M; 272,474 with option B); ResNet-56 (n = 9) 853,018 with 10 classes (0.85M), 865,368
with the 200-way head for Tiny ImageNet (64x64 inputs simply give 16x16 maps at the last
stage before pooling).
Initialisation: He normal (fan out) for convolutions, batch norm at weight 1 and bias 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from demon_optim.study.models.layers import PixelStandardize

SHORTCUTS = ("A", "B")


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``, both convolutions 3x3."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.extra = stride, planes - in_planes
        self.projection: nn.Module | None = None
        if shortcut == "B" and (stride != 1 or in_planes != planes):
            self.projection = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            return self.projection(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            # option A: the new channels are zeros, half before and half after
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth ``6n + 2``; takes uint8 or [0, 1] images.

    Args:
        depth: 20, 32, 44, 56, 110, ... (``(depth - 2) % 6 == 0``).
        num_classes: width of the linear head.
        shortcut: "A" (zero-padding identity, the paper's CIFAR choice) or "B" (projection).
        mean, std: per-channel pixel statistics for the input standardisation.
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        shortcut: str = "A",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        n = (depth - 2) // 6
        self.standardize = PixelStandardize(mean, std)
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64)):
            for index in range(n):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, H, W]``."""
        out = F.relu(self.bn(self.conv(self.standardize(x))))
        out = self.blocks(out)
        return self.linear(out.mean(dim=(2, 3)))
