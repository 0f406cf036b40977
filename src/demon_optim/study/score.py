"""Denoising score matching and annealed Langevin dynamics (Song & Ermon, 2019), written
from the paper's equations.

Noise levels: ``L = 10`` values ``sigma_1 > ... > sigma_L``, geometric from 1 to 0.01
(:func:`noise_levels`). A score network ``s(x, i)`` (e.g.
:class:`~demon_optim.study.models.ncsn.NCSN`) is trained to give the score of the data
perturbed by ``N(0, sigma_i^2 I)``.

Loss of one example ``x`` at level ``i`` with noise ``z ~ N(0, I)`` (the paper's
``lambda(sigma) = sigma^2`` weighting of the denoising score-matching objective)::

    l(x, i, z) = 1/2 || sigma_i s(x + sigma_i z, i) + z ||^2

summed over the pixels (and channels) and averaged over the batch by the callers: a
per-image number in the image's dimension (``D = 784`` for 28x28, where the network that
outputs 0 scores ``D / 2 = 392``). :func:`dsm_losses` computes it per example.

Annealed Langevin dynamics (the paper's Algorithm 1) with step ``alpha_i = eps sigma_i^2 /
sigma_L^2``, ``T`` steps per level::

    x_0 ~ U[0, 1]^D;  for i = 1..L, T times:  x <- x + alpha_i / 2 s(x, i) + sqrt(alpha_i) z

(:func:`annealed_langevin`); every random draw comes from the caller's ``torch.Generator``,
so the samples are a function of its seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: the paper's noise schedule and sampler settings
SIGMA_MAX, SIGMA_MIN, LEVELS = 1.0, 0.01, 10
LANGEVIN_EPS, LANGEVIN_STEPS = 2e-5, 100

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def noise_levels(
    sigma_max: float = SIGMA_MAX, sigma_min: float = SIGMA_MIN, levels: int = LEVELS
) -> torch.Tensor:
    """``sigma_1 .. sigma_L`` geometric from ``sigma_max`` down to ``sigma_min`` (float64)."""
    exponents = torch.linspace(0, 1, levels, dtype=torch.float64)
    return sigma_max * (sigma_min / sigma_max) ** exponents


def dsm_losses(scores: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Per-example ``1/2 || sigma s + z ||^2`` summed over all but the batch dimension.

    ``scores``: the network's output at ``x + sigma z``; ``noise``: ``z``; ``sigmas``:
    ``[B]``, each example's noise level.
    """
    sigma = sigmas.to(scores.dtype).view(-1, *([1] * (scores.ndim - 1)))
    return 0.5 * (sigma * scores + noise).square().flatten(1).sum(dim=1)


def perturbed_losses(
    score: ScoreFn,
    images: torch.Tensor,
    levels: torch.Tensor,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
) -> torch.Tensor:
    """Per-example DSM losses of ``score`` on ``images`` at level indices ``levels`` with
    standard normal ``noise`` (``sigmas``: the whole schedule, indexed by ``levels``)."""
    sigma = sigmas.to(images.device, images.dtype)[levels]
    noisy = images + sigma.view(-1, *([1] * (images.ndim - 1))) * noise
    return dsm_losses(score(noisy, levels), noise, sigma)


def langevin_steps(sigmas: torch.Tensor, eps: float = LANGEVIN_EPS) -> torch.Tensor:
    """``alpha_i = eps sigma_i^2 / sigma_L^2`` for every level (float64)."""
    sigmas = sigmas.double()
    return eps * sigmas.square() / sigmas[-1].square()


@torch.no_grad()
def annealed_langevin(
    score: ScoreFn,
    shape: tuple[int, ...],
    sigmas: torch.Tensor,
    *,
    steps_per_level: int = LANGEVIN_STEPS,
    eps: float = LANGEVIN_EPS,
    generator: torch.Generator,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Samples ``[N, ...] = shape`` by annealed Langevin dynamics, float32 on ``device``.

    The score is evaluated in chunks of ``batch_size`` (memory); the noise of a step is
    drawn for all ``N`` at once from ``generator`` (a CPU generator), so the samples do not
    depend on ``batch_size``. Costs ``L * steps_per_level`` network evaluations per sample.
    """
    if steps_per_level < 1:
        raise ValueError(f"steps_per_level must be >= 1, got {steps_per_level}")
    x = torch.rand(shape, generator=generator).to(device)
    alphas = langevin_steps(sigmas, eps).tolist()
    for i, alpha in enumerate(alphas):
        for _ in range(steps_per_level):
            z = torch.randn(shape, generator=generator).to(device)
            drift = torch.cat(
                [
                    score(chunk, torch.full((len(chunk),), i, dtype=torch.long, device=device))
                    for chunk in x.split(batch_size)
                ]
            )
            x = x + (alpha / 2) * drift + alpha**0.5 * z
    return x
