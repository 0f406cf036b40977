"""Small building blocks shared by the image models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PixelStandardize(nn.Module):
    """First layer of the image models: pixels to standardised floats.

    ``y_c = (x_c / 255 - mean_c) / std_c`` for uint8 inputs (how the image tasks keep their
    data: a quarter of the memory of float32, and augmentation works on bytes); float
    inputs are taken to be already in [0, 1] and only standardised. The per-channel
    statistics are fixed buffers (no parameters), the usual published values of the
    training set, so every trial and every process sees the same preprocessing.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} != {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` uint8 (0..255) or float (0..1) -> standardised float32."""
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std


def to_unit_interval(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to floats in [0, 1]; float inputs are returned as float32 unchanged."""
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()
