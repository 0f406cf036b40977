"""Small deterministic problems on which YellowFin's trajectory was recorded from the authors'
code (tests/fixtures/yellowfin_reference.json): each is a loss of float64 parameters and the
step number, with its noise from a portable integer generator (no library's random stream,
so the recorded numbers stay reproducible everywhere).

The recording ran the authors' ``YFOptimizer`` (github.com/JianGoForIt/YellowFin_Pytorch,
``tuner_utils/yellowfin.py``) outside this project on exactly these functions; the fixture's
``how`` says how. Do not change a problem without recording it again.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Loss = Callable[[list[torch.Tensor], int], torch.Tensor]

_MULTIPLIER = 6364136223846793005  # Knuth's MMIX linear congruential generator, mod 2**64
_INCREMENT = 1442695040888963407


def uniforms(seed: int, count: int) -> list[float]:
    """``count`` numbers in [-1, 1) from a 64-bit LCG (top 53 bits): exact on any platform."""
    state, out = seed, []
    for _ in range(count):
        state = (_MULTIPLIER * state + _INCREMENT) % 2**64
        out.append((state >> 11) / 2**53 * 2.0 - 1.0)
    return out


def _quadratic(params: list[torch.Tensor], k: int) -> torch.Tensor:
    """The noiseless quadratic 0.5 (x1^2 + 10 x2^2)."""
    (x,) = params
    return 0.5 * (torch.tensor([1.0, 10.0], dtype=x.dtype) * x * x).sum()


NOISY_CURVATURES = (1.0, 2.0, 5.0, 10.0, 20.0)
NOISY_STEPS = 250


def _noisy_table() -> torch.Tensor:
    values = uniforms(seed=12, count=NOISY_STEPS * len(NOISY_CURVATURES))
    return torch.tensor(values, dtype=torch.float64).reshape(NOISY_STEPS, -1)


_NOISE = _noisy_table()


def _noisy(params: list[torch.Tensor], k: int) -> torch.Tensor:
    """0.5 x^T diag(1, 2, 5, 10, 20) x + 2 n_k . x (gradient noise n_k uniform in [-1, 1)),
    and every 40th step from step 20 the loss 30x (a gradient spike: the clipping's case)."""
    (x,) = params
    a = torch.tensor(NOISY_CURVATURES, dtype=x.dtype)
    loss = 0.5 * (a * x * x).sum() + 2.0 * (_NOISE[k] * x).sum()
    return loss * 30.0 if k % 40 == 20 else loss


SPARSE_ROWS, SPARSE_DIM, SPARSE_STEPS = 8, 3, 200
_TARGETS = torch.tensor(uniforms(seed=5, count=SPARSE_ROWS * SPARSE_DIM), dtype=torch.float64)
_TARGETS = _TARGETS.reshape(SPARSE_ROWS, SPARSE_DIM)
_ROWS = [int((u + 1.0) * SPARSE_ROWS / 2) for u in uniforms(seed=9, count=2 * SPARSE_STEPS)]


def _sparse(params: list[torch.Tensor], k: int) -> torch.Tensor:
    """An embedding table W (8 x 3) and a bias b: each step two looked-up rows r (a fixed
    pseudo-random sequence) pull W_r + b towards targets T_r, so W's gradient is zero on
    the other rows: 0.5 sum_r ||W_r + b - T_r||^2."""
    table, bias = params
    rows = _ROWS[2 * k : 2 * k + 2]
    return 0.5 * ((table[rows] + bias - _TARGETS[rows]) ** 2).sum()


def _initial(name: str) -> list[torch.Tensor]:
    if name == "quadratic":
        return [torch.tensor([3.0, -2.0], dtype=torch.float64)]
    if name == "noisy":
        return [torch.tensor([1.0, -1.0, 0.5, -0.5, 0.25], dtype=torch.float64)]
    table = torch.tensor(uniforms(seed=3, count=SPARSE_ROWS * SPARSE_DIM), dtype=torch.float64)
    return [table.reshape(SPARSE_ROWS, SPARSE_DIM), torch.zeros(SPARSE_DIM, dtype=torch.float64)]


PROBLEMS: dict[str, Loss] = {"quadratic": _quadratic, "noisy": _noisy, "sparse": _sparse}

# name -> (problem, steps, the first step's lr, options); options are the authors' argument
# names, which are also YellowFin's.
CASES: dict[str, tuple[str, int, float, dict[str, bool]]] = {
    "quadratic-lr0.1": ("quadratic", 300, 0.1, {"adapt_clip": True}),
    "quadratic-lr1e-3": ("quadratic", 300, 1e-3, {"adapt_clip": True}),
    "quadratic-lr1-clip": ("quadratic", 300, 1.0, {"adapt_clip": True}),
    "quadratic-lr1-noclip": ("quadratic", 300, 1.0, {"adapt_clip": False}),
    # a first move lr ||g|| = 202 >= 100: the catastrophic-move cap
    "quadratic-lr10-clip": ("quadratic", 300, 10.0, {"adapt_clip": True}),
    "noisy-clip": ("noisy", NOISY_STEPS, 0.05, {"adapt_clip": True}),
    "noisy-noclip": ("noisy", NOISY_STEPS, 0.05, {"adapt_clip": False}),
    "sparse-debias": ("sparse", SPARSE_STEPS, 0.1, {"sparsity_debias": True}),
    "sparse-plain": ("sparse", SPARSE_STEPS, 0.1, {"sparsity_debias": False}),
}
RECORD_EVERY = 25  # parameters are recorded every 25th step and after the last


def initial_params(problem: str) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(t.clone()) for t in _initial(problem)]
