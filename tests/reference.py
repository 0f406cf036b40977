"""Float64 reference implementations written straight from docs/optimizers.md.

Deliberately naive: plain Python lists of numpy float64 arrays, one equation per line,
nothing shared with the library except nothing at all (the schedule is re-derived here too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def demon_beta(k: int, total: int, beta_init: float, delay: float = 0.0) -> float:
    """The Demon schedule (docs/optimizers.md), second form, 0 for k >= T; delay D = round(d T)."""
    start = round(delay * total)
    if k < start:
        return beta_init
    k, total = k - start, total - start
    if k >= total:
        return 0.0
    return beta_init * (total - k) / (total - beta_init * k)


@dataclass
class SGDGroup:
    lr: float
    beta_init: float
    total: int
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False
    schedule: str = "demon"
    bufs: dict[int, np.ndarray] = field(default_factory=dict)


def beta_at(schedule: str, k: int, total: int, beta_init: float) -> float:
    if schedule == "demon":
        return demon_beta(k, total, beta_init)
    if schedule == "constant":
        return beta_init
    if schedule == "linear":
        return beta_init * (1 - min(k, total) / total)
    raise ValueError(schedule)


def sgd_step(
    group: SGDGroup, k: int, params: dict[int, np.ndarray], grads: dict[int, np.ndarray | None]
) -> None:
    """Demon SGDM (docs/optimizers.md): buf = g first, then buf = beta_k buf + (1 - dampening) g."""
    beta = beta_at(group.schedule, k, group.total, group.beta_init)
    for i, theta in params.items():
        g = grads[i]
        if g is None:
            continue
        if group.maximize:
            g = -g
        g = g + group.weight_decay * theta
        if i not in group.bufs:
            group.bufs[i] = g.copy()
        else:
            group.bufs[i] = beta * group.bufs[i] + (1 - group.dampening) * g
        buf = group.bufs[i]
        d = g + beta * buf if group.nesterov else buf
        params[i] = theta - group.lr * d


@dataclass
class AdamGroup:
    lr: float
    beta_init: float
    beta2: float
    total: int
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    damped: bool = False
    maximize: bool = False
    schedule: str = "demon"
    m: dict[int, np.ndarray] = field(default_factory=dict)
    v: dict[int, np.ndarray] = field(default_factory=dict)
    n: dict[int, int] = field(default_factory=dict)
    prod: dict[int, float] = field(default_factory=dict)


def adam_step(
    group: AdamGroup, k: int, params: dict[int, np.ndarray], grads: dict[int, np.ndarray | None]
) -> None:
    """Demon Adam (docs/optimizers.md): m = beta m + g, or the EMA form with m / (1 - prod beta)."""
    beta = beta_at(group.schedule, k, group.total, group.beta_init)
    for i, theta in params.items():
        g = grads[i]
        if g is None:
            continue
        if group.maximize:
            g = -g
        if group.decoupled:
            theta = theta * (1 - group.lr * group.weight_decay)
        else:
            g = g + group.weight_decay * theta
        m = group.m.get(i, np.zeros_like(theta))
        v = group.v.get(i, np.zeros_like(theta))
        t = group.n.get(i, 0) + 1
        if group.damped:
            m = beta * m + (1 - beta) * g
            prod = group.prod.get(i, 1.0) * beta
            group.prod[i] = prod
            m_used = m / (1 - prod)
        else:
            m = beta * m + g
            m_used = m
        v = group.beta2 * v + (1 - group.beta2) * g * g
        v_hat = v / (1 - group.beta2**t)
        params[i] = theta - group.lr * m_used / (np.sqrt(v_hat) + group.eps)
        group.m[i], group.v[i], group.n[i] = m, v, t


def quadratic_grad(theta: np.ndarray, k: int, i: int) -> np.ndarray:
    """A gradient that depends on the parameters and the step: curvature (theta - 1) + noise."""
    rng = np.random.default_rng(1000 * k + i)
    curvature = 0.5 + (np.arange(theta.size) % 7) / 7.0
    return curvature * (theta - 1.0) + 0.1 * rng.standard_normal(theta.size)


def has_grad(k: int, i: int) -> bool:
    """Parameter 1 skips every third step (a parameter without a gradient on some steps)."""
    return not (i == 1 and k % 3 == 2)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


__all__ = [
    "AdamGroup",
    "SGDGroup",
    "adam_step",
    "beta_at",
    "demon_beta",
    "has_grad",
    "quadratic_grad",
    "relative_error",
    "sgd_step",
]
