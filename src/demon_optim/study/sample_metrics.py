"""Sample-quality statistics on a classifier's outputs: Inception Score, KID and FID.

The published numbers use an ImageNet Inception-v3 network; here the same formulas run on
a small classifier trained on the task's own data
(:mod:`demon_optim.study.sample_classifier`), so the values are comparable only with each
other (same task, same classifier version), never with published Inception Scores/FIDs.

- :func:`inception_score`: ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean of the
  ``p(y|x)``, over all the samples at once (no 10-way split). Between 1 and the number of
  classes; higher is better.
- :func:`kernel_inception_distance`: the unbiased estimate of ``MMD^2`` with the
  polynomial kernel ``k(a, b) = (a.b / d + 1)^3`` (Binkowski et al., 2018), averaged over
  random subsets of both sets; with it, the standard deviation of the subset estimates
  (what Binkowski et al. report as "+-"; the spread of one subset's estimate, larger than
  the standard error of the mean over overlapping subsets). Lower is better; can be
  slightly negative.
- :func:`frechet_distance`: ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of the
  features' Gaussian fits (Heusel et al., 2017). Lower is better.

All computed in float64.
"""

from __future__ import annotations

import math

import torch

KID_SUBSETS, KID_SUBSET_SIZE = 50, 500


def inception_score(probabilities: torch.Tensor) -> float:
    """``exp(mean_x KL(p(y|x) || p(y)))`` of ``[N, K]`` class probabilities (rows sum to 1)."""
    p = probabilities.double()
    marginal = p.mean(dim=0, keepdim=True)
    # 0 log 0 = 0: the classes a sample gives no probability add nothing
    log_ratio = p.clamp_min(1e-300).log() - marginal.clamp_min(1e-300).log()
    terms = torch.where(p > 0, p * log_ratio, 0)
    return math.exp(float(terms.sum(dim=1).mean()))


def _polynomial_mmd2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased ``MMD^2`` of two samples under ``k(x, y) = (x.y / d + 1)^3``."""
    d = a.shape[1]
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


def kernel_inception_distance(
    features: torch.Tensor,
    reference: torch.Tensor,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """``(KID, standard deviation over subsets)`` of ``[N, d]`` features against
    ``[M, d]`` reference features.

    Each of ``subsets`` rounds draws ``min(subset_size, N, M)`` rows of each set without
    replacement (``generator``: fixed seed 0 by default) and computes the unbiased
    ``MMD^2``. The deviation is 0.0 for a single subset.
    """
    a, b = features.double(), reference.double()
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 rows in each set, got {len(a)} and {len(b)}")
    generator = generator or torch.Generator().manual_seed(0)
    values = torch.tensor(
        [
            _polynomial_mmd2(
                a[torch.randperm(len(a), generator=generator)[:size]],
                b[torch.randperm(len(b), generator=generator)[:size]],
            )
            for _ in range(subsets)
        ],
        dtype=torch.float64,
    )
    spread = float(values.std()) if subsets > 1 else 0.0
    return float(values.mean()), spread


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of ``[N, d]`` and ``[M, d]`` features.

    ``tr((S_a S_b)^(1/2))`` is taken as ``tr((S_a^(1/2) S_b S_a^(1/2))^(1/2))`` (the same
    eigenvalues, and symmetric, so ``eigh`` applies).
    """
    a, b = features.double(), reference.double()
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross.trace()
    return max(float(value), 0.0)
