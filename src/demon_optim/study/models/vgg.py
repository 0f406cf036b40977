"""VGG-16 with batch normalisation for 32x32 images (Simonyan & Zisserman, 2015; BN variant).

The thirteen 3x3 convolutions of configuration D (64, 64, M, 128, 128, M, 256 x 3, M,
512 x 3, M, 512 x 3, M; M = 2x2 max pooling), each followed by batch norm and ReLU. On a
32x32 input the features end at 1x1x512, so the classifier is a single linear layer
512 -> classes, as in the CIFAR ports of VGG (the ImageNet model's 4096-wide layers would
add ~120M parameters for no gain at this resolution). Convolutions keep their bias, as in
those ports.

Parameter count: 14,774,436 with 100 classes (the ~15M of the paper's CIFAR-100 setting):
convolutions 14,714,688, batch norm 8,448, classifier 51,300.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from demon_optim.study.models.layers import PixelStandardize

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with batch norm for small images; ``config`` lists widths and "M" for pooling."""

    def __init__(
        self,
        num_classes: int = 100,
        config: Sequence[int | str] = VGG16,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        self.standardize = PixelStandardize(mean, std)
        layers: list[nn.Module] = []
        channels = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                width = int(item)
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, 32, 32]``."""
        out = self.features(self.standardize(x))
        return self.classifier(out.flatten(start_dim=1))
