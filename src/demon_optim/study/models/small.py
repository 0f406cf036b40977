"""Small networks for the CPU-sized tasks: an MLP, a 1-D CNN and a GRU classifier.

The MNIST-1D sizes are the published baselines of Greydanus & Kobak (repository
greydanus/mnist1d, ``notebooks/models.py``): ``MLPBase``, ``ConvBase`` and ``GRUBase``, with
the same layers, shapes and parameter counts, and torch's default initialisation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """A ReLU multilayer perceptron, optionally with residual hidden layers.

    ``h_1 = relu(W_1 x + b_1)``; for k > 1, ``h_k = relu(W_k h_{k-1} + b_k)``, plus
    ``h_{k-1}`` when ``residual`` (only between hidden layers of equal width); the output is
    ``W_out h_K + b_out`` (logits).

    Parameter counts:
      - MNIST-1D baseline ``MLP(40, (100, 100), 10, residual=True)``: 15,210
        (the published MLPBase: its second layer is ``h = h + relu(linear2(h))``);
      - digits ``MLP(64, (128,), 10)``: 9,610.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(
            nn.Linear(fan_in, fan_out) for fan_in, fan_out in itertools.pairwise(widths)
        )
        self.out = nn.Linear(widths[-1], out_features)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, out_features]`` for inputs ``[batch, *]`` (flattened here)."""
        h = x.flatten(start_dim=1)
        for index, layer in enumerate(self.hidden):
            z = torch.relu(layer(h))
            # The first layer changes width, so it can never carry a skip connection.
            h = h + z if self.residual and index > 0 and z.shape == h.shape else z
        return self.out(h)


class ConvNet1D(nn.Module):
    """Three strided 1-D convolutions with ReLU, then a linear classifier.

    Layers (published ConvBase): conv(1->c, kernel 5, stride 2, padding 1), then twice
    conv(c->c, kernel 3, stride 2, padding 1); a 40-step signal shrinks 40 -> 19 -> 10 -> 5,
    so the classifier sees ``5 c`` features. With c = 25 and 10 classes: 5,210 parameters.
    """

    def __init__(self, length: int = 40, channels: int = 25, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, kernel_size=5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1)
        steps = length
        for conv in (self.conv1, self.conv2, self.conv3):
            (kernel,), (stride,), (padding,) = conv.kernel_size, conv.stride, conv.padding
            steps = (steps + 2 * padding - kernel) // stride + 1
        self.linear = nn.Linear(channels * steps, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, num_classes]`` for signals ``[batch, length]``."""
        h = x.view(x.shape[0], 1, -1)  # one input channel
        h = torch.relu(self.conv1(h))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.linear(h.flatten(start_dim=1))


class GRUClassifier(nn.Module):
    """A GRU over the time steps of a 1-D signal; a linear layer reads all its outputs.

    Published GRUBase: a bidirectional single-layer GRU with hidden size 6 over the 40 scalar
    time steps, zero initial state, whose outputs at every step (40 x 2 x 6 = 480 features)
    feed a linear layer to 10 logits. Parameter count: 5,134 (GRU 2 x 126, linear 4,810).
    """

    def __init__(
        self,
        length: int = 40,
        hidden_size: int = 6,
        num_classes: int = 10,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        self.gru = nn.GRU(
            input_size=1, hidden_size=hidden_size, batch_first=True, bidirectional=bidirectional
        )
        directions = 2 if bidirectional else 1
        self.linear = nn.Linear(directions * hidden_size * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, num_classes]`` for signals ``[batch, length]``."""
        outputs, _ = self.gru(x.view(x.shape[0], -1, 1))  # zero initial state
        return self.linear(outputs.flatten(start_dim=1))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
