"""DeepOBS's ``fmnist_2c2d`` network (Schneider et al., 2019) for 28x28 greyscale images.

conv 5x5, 32 filters, 'same' padding, ReLU, 2x2 max pool -> conv 5x5, 64 filters, 'same',
ReLU, 2x2 max pool -> fully connected 1024, ReLU -> fully connected 10 (logits). A 28x28
image shrinks to 14x14 and then 7x7, so the first dense layer sees 7 * 7 * 64 = 3136
features. Parameter count: 3,274,634 (conv 832 + 51,264, dense 3,212,288 + 10,250).
Torch's default initialisation (DeepOBS uses Xavier; it matters little at this size).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from demon_optim.study.models.layers import PixelStandardize


class ConvNet2C2D(nn.Module):
    """Two convolutions, two dense layers; takes ``[B, 1, 28, 28]`` uint8 or [0, 1] images."""

    def __init__(
        self,
        num_classes: int = 10,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.25,),
    ) -> None:
        super().__init__()
        self.standardize = PixelStandardize(mean, std)
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(7 * 7 * 64, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        h = F.max_pool2d(F.relu(self.conv1(self.standardize(x))), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.relu(self.fc1(h.flatten(start_dim=1)))
        return self.fc2(h)


class ImageMLP(nn.Module):
    """DeepOBS's ``fmnist_mlp``: 784-1000-500-100-10 with ReLU; 1,336,610 parameters.

    Pixels are standardised first (fixed statistics), then flattened.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (1000, 500, 100),
        num_classes: int = 10,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.25,),
    ) -> None:
        super().__init__()
        self.standardize = PixelStandardize(mean, std)
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(
            nn.Linear(fan_in, fan_out) for fan_in, fan_out in itertools.pairwise(widths)
        )
        self.out = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 1, 28, 28]``."""
        h = self.standardize(x).flatten(start_dim=1)
        for layer in self.hidden:
            h = F.relu(layer(h))
        return self.out(h)
