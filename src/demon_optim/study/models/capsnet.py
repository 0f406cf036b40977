"""Capsule network with dynamic routing (Sabour, Frosst & Hinton, 2017), for 28x28 images.

Layers (the paper's MNIST network):

- Conv1: 256 filters 9x9, stride 1, ReLU: 28x28 -> 20x20.
- PrimaryCaps: a 9x9 convolution, stride 2, 256 channels read as 32 capsule types of 8D
  on a 6x6 grid -> 1152 capsules ``u_i``, each squashed.
- DigitCaps: 10 capsules of 16D. Predictions ``u_hat_{j|i} = W_ij u_i`` (W_ij 16x8), then
  3 routing iterations: ``c_i = softmax_j(b_i)``, ``s_j = sum_i c_ij u_hat_{j|i}``,
  ``v_j = squash(s_j)``, ``b_ij += u_hat_{j|i} . v_j`` (logits ``b`` start at zero).
  ``squash(s) = |s|^2 / (1 + |s|^2) * s / |s|``; the class score is ``|v_j|``.
- Decoder: the 16D vector of one class (the others masked to zero) -> 512 -> 1024 -> 784,
  ReLU, ReLU, sigmoid.

Loss (:func:`capsule_loss`): margin loss ``sum_k T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k)
max(0, |v_k| - m-)^2`` with m+ = 0.9, m- = 0.1, lambda = 0.5, plus 0.0005 times the sum of
squared reconstruction errors over the 784 pixels (in [0, 1]), both per image, averaged
over the batch. During training the decoder is masked by the true class.

Parameter count: 8,215,568 (conv1 20,992; primary 5,308,672; W 1,474,560; decoder
1,411,344): the paper's 8.2M.

The trial loop calls ``model(inputs)`` without labels, so the forward pass decodes the
masked vector of *every* class (the first decoder layer is applied per class block, the
rest batched) and the loss picks the true class's reconstruction: the same value and
gradients as masking by the true label, for ~7 % more compute than one decoding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from demon_optim.study.models.layers import to_unit_interval

M_PLUS, M_MINUS, LAMBDA = 0.9, 0.1, 0.5
RECONSTRUCTION_WEIGHT = 0.0005


class CapsuleOutput(NamedTuple):
    """Class scores ``|v_j|`` ``[B, 10]``, per-class reconstructions ``[B, 10, 784]`` and the
    input images in [0, 1] ``[B, 784]`` (the reconstruction target)."""

    lengths: torch.Tensor
    reconstructions: torch.Tensor
    images: torch.Tensor


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """``|s|^2 / (1 + |s|^2) * s / |s|``: short vectors shrink to ~0, long ones to ~unit."""
    squared = (s * s).sum(dim=dim, keepdim=True)
    return squared / (1 + squared) * s / torch.sqrt(squared + eps)


class CapsNet(nn.Module):
    """Sabour et al.'s CapsNet; ``forward`` returns a :class:`CapsuleOutput`."""

    def __init__(
        self,
        num_classes: int = 10,
        routing_iterations: int = 3,
        image_side: int = 28,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 256, 9)
        self.primary = nn.Conv2d(256, 32 * 8, 9, stride=2)
        grid = ((image_side - 8) - 9) // 2 + 1  # 28 -> 20 -> 6
        self.num_primary = 32 * grid * grid  # 1152
        self.num_classes = num_classes
        self.routing_iterations = routing_iterations
        # W_ij: [1152, classes, 16, 8]; small normal init as in common implementations
        self.weights = nn.Parameter(0.01 * torch.randn(self.num_primary, num_classes, 16, 8))
        self.decoder1 = nn.Linear(16 * num_classes, 512)
        self.decoder2 = nn.Linear(512, 1024)
        self.decoder3 = nn.Linear(1024, image_side * image_side)

    def capsules(self, x: torch.Tensor) -> torch.Tensor:
        """Digit capsules ``v`` ``[B, classes, 16]`` for images in [0, 1] ``[B, 1, 28, 28]``."""
        batch = x.shape[0]
        h = F.relu(self.conv1(x))
        p = self.primary(h)  # [B, 256, 6, 6] = 32 types x 8D on a 6x6 grid
        p = p.view(batch, 32, 8, -1).permute(0, 1, 3, 2).reshape(batch, self.num_primary, 8)
        u = squash(p)
        u_hat = torch.einsum("ijdk,bik->bijd", self.weights, u)  # [B, 1152, classes, 16]
        logits = u.new_zeros(batch, self.num_primary, self.num_classes)
        for iteration in range(self.routing_iterations):
            coupling = logits.softmax(dim=2)
            v = squash((coupling.unsqueeze(-1) * u_hat).sum(dim=1))  # [B, classes, 16]
            if iteration < self.routing_iterations - 1:
                logits = logits + (u_hat * v.unsqueeze(1)).sum(dim=-1)
        return v

    def decode_all(self, v: torch.Tensor) -> torch.Tensor:
        """Reconstructions from each class's vector alone: ``[B, classes, 784]`` in (0, 1).

        Masking all but class k and applying the first layer equals multiplying v_k by that
        layer's k-th 16-column block, so every class is decoded in one batched pass.
        """
        blocks = self.decoder1.weight.view(512, self.num_classes, 16)
        h = torch.einsum("bkd,okd->bko", v, blocks) + self.decoder1.bias
        h = F.relu(self.decoder2(F.relu(h)))
        return torch.sigmoid(self.decoder3(h))

    def forward(self, x: torch.Tensor) -> CapsuleOutput:
        images = to_unit_interval(x)
        v = self.capsules(images)
        return CapsuleOutput(v.norm(dim=-1), self.decode_all(v), images.flatten(start_dim=1))


def capsule_loss(output: CapsuleOutput, targets: torch.Tensor) -> torch.Tensor:
    """Margin loss plus 0.0005 x sum-of-squares reconstruction error, mean over the batch."""
    lengths = output.lengths
    present = F.one_hot(targets, lengths.shape[1]).to(lengths.dtype)
    margin = present * F.relu(M_PLUS - lengths).pow(2) + LAMBDA * (1 - present) * F.relu(
        lengths - M_MINUS
    ).pow(2)
    index = targets.view(-1, 1, 1).expand(-1, 1, output.reconstructions.shape[-1])
    reconstruction = output.reconstructions.gather(1, index).squeeze(1)  # true class's
    squared_error = (reconstruction - output.images).pow(2).sum(dim=1)
    return (margin.sum(dim=1) + RECONSTRUCTION_WEIGHT * squared_error).mean()
