"""A variational autoencoder for 28x28 images (Kingma & Welling, 2014), as in the paper's
VAE setting: three dense layers in the encoder and three in the decoder, latent size 2.

Encoder 784-500-500-(2 mean, 2 log-variance), decoder 2-500-500-784, ReLU, Bernoulli
likelihood: the decoder returns logits ``l`` and ``p(x | z) = prod_i sigmoid(l_i)^x_i
(1 - sigmoid(l_i))^(1 - x_i)`` with pixel intensities ``x_i`` in [0, 1] (grey levels used as
Bernoulli targets, as is common for MNIST). Parameter count: 1,289,788 (encoder 645,004,
decoder 644,784).

Negative ELBO of one image, with one reparameterised sample ``z = mu + exp(logvar / 2) eps``:
``-ELBO = sum_i BCE(l_i, x_i) + KL(N(mu, diag exp(logvar)) || N(0, I))``,
``KL = -1/2 sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))``, in nats. See :func:`negative_elbo`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from demon_optim.study.models.layers import to_unit_interval


class VAEOutput(NamedTuple):
    """What the VAE returns: decoder logits ``[B, 784]`` and the posterior's parameters."""

    logits: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor


class VAE(nn.Module):
    """Dense VAE; ``forward`` encodes, samples one ``z`` (from torch's global RNG), decodes."""

    def __init__(self, in_features: int = 784, hidden: int = 500, latent: int = 2) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * latent),  # mean and log-variance
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, in_features),  # Bernoulli logits
        )
        self.latent = latent

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> VAEOutput:
        """Encode images ``[B, ...]`` (uint8 or [0, 1]), sample ``z``, return the logits.

        ``noise`` is the standard normal ``eps`` ``[B, latent]``; by default it is drawn
        from torch's global RNG.
        """
        h = self.encoder(to_unit_interval(x).flatten(start_dim=1))
        mean, logvar = h[:, : self.latent], h[:, self.latent :]
        eps = torch.randn_like(mean) if noise is None else noise
        z = mean + torch.exp(0.5 * logvar) * eps
        return VAEOutput(self.decoder(z), mean, logvar)


def negative_elbo(output: VAEOutput, images: torch.Tensor) -> torch.Tensor:
    """Per-image negative ELBO in nats, ``[B]``: Bernoulli reconstruction NLL + KL.

    ``images`` are the inputs (uint8 or [0, 1]); the reconstruction term is
    ``sum_i -[x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i))]`` over the pixels.
    """
    targets = to_unit_interval(images).flatten(start_dim=1)
    reconstruction = F.binary_cross_entropy_with_logits(
        output.logits, targets, reduction="none"
    ).sum(dim=1)
    kl = -0.5 * (1 + output.logvar - output.mean.pow(2) - output.logvar.exp()).sum(dim=1)
    return reconstruction + kl
