"""Float64 references for the reference optimizers, written from each paper's equations.

Deliberately naive, like tests/reference.py: dicts of numpy float64 arrays, one equation per
line, the papers' own sign conventions (AggMo's ``v = beta v - g; theta += lr/K sum v``), and
nothing shared with the library. A group's hyperparameters are plain attributes, so a test
can move a momentum between steps the way a scheduler would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Params = dict[int, np.ndarray]
Grads = dict[int, "np.ndarray | None"]


def _effective(g: np.ndarray, theta: np.ndarray, weight_decay: float, maximize: bool):
    if maximize:
        g = -g
    return g + weight_decay * theta


# --- QHM (Ma & Yarats 2019, eq. 3) ----------------------------------------------------------


@dataclass
class QHMGroup:
    lr: float
    momentum: float
    nu: float
    weight_decay: float = 0.0
    maximize: bool = False
    buf: dict[int, np.ndarray] = field(default_factory=dict)


def qhm_step(group: QHMGroup, params: Params, grads: Grads) -> None:
    """g_buf <- beta g_buf + (1 - beta) grad (from 0); theta -= a [(1 - nu) grad + nu g_buf]."""
    beta, nu = group.momentum, group.nu
    for i, theta in params.items():
        if grads[i] is None:
            continue
        g = _effective(grads[i], theta, group.weight_decay, group.maximize)
        buf = beta * group.buf.get(i, np.zeros_like(theta)) + (1 - beta) * g
        group.buf[i] = buf
        params[i] = theta - group.lr * ((1 - nu) * g + nu * buf)


# --- QHAdam (Ma & Yarats 2019, algorithm 1) ------------------------------------------------


@dataclass
class QHAdamGroup:
    lr: float
    beta1: float
    beta2: float
    nu1: float = 1.0
    nu2: float = 1.0
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    maximize: bool = False
    m: dict[int, np.ndarray] = field(default_factory=dict)
    v: dict[int, np.ndarray] = field(default_factory=dict)
    t: dict[int, int] = field(default_factory=dict)
    beta1_prod: dict[int, float] = field(default_factory=dict)


def qhadam_step(group: QHAdamGroup, params: Params, grads: Grads) -> None:
    """Adam's moments with bias correction; step ((1-nu1) g + nu1 m_hat) / (sqrt(...) + eps).

    The first moment's bias correction is 1 - prod(beta1 used), which is 1 - beta1**t for a
    constant beta1 (the paper's) and the exact one when a test moves beta1.
    """
    for i, theta in params.items():
        if grads[i] is None:
            continue
        g = -grads[i] if group.maximize else grads[i]
        if group.decoupled:
            theta = theta * (1 - group.lr * group.weight_decay)
        else:
            g = g + group.weight_decay * theta
        t = group.t.get(i, 0) + 1
        prod = group.beta1_prod.get(i, 1.0) * group.beta1
        m = group.beta1 * group.m.get(i, np.zeros_like(theta)) + (1 - group.beta1) * g
        v = group.beta2 * group.v.get(i, np.zeros_like(theta)) + (1 - group.beta2) * g * g
        m_hat = m / (1 - prod)
        v_hat = v / (1 - group.beta2**t)
        numerator = (1 - group.nu1) * g + group.nu1 * m_hat
        denominator = np.sqrt((1 - group.nu2) * g * g + group.nu2 * v_hat) + group.eps
        params[i] = theta - group.lr * numerator / denominator
        group.m[i], group.v[i], group.t[i], group.beta1_prod[i] = m, v, t, prod


# --- AggMo (Lucas et al. 2019, algorithm 1) ------------------------------------------------


@dataclass
class AggMoGroup:
    lr: float
    betas: tuple[float, ...]
    weight_decay: float = 0.0
    maximize: bool = False
    velocities: dict[int, list[np.ndarray]] = field(default_factory=dict)


def aggmo_step(group: AggMoGroup, params: Params, grads: Grads) -> None:
    """v_i <- beta_i v_i - grad (from 0); theta <- theta + (lr / K) sum_i v_i."""
    k = len(group.betas)
    for i, theta in params.items():
        if grads[i] is None:
            continue
        g = _effective(grads[i], theta, group.weight_decay, group.maximize)
        old = group.velocities.get(i, [np.zeros_like(theta) for _ in range(k)])
        new = [beta * v - g for beta, v in zip(group.betas, old, strict=True)]
        group.velocities[i] = new
        params[i] = theta + group.lr / k * sum(new)


def demon_odds(beta: float, top: float, handle: float) -> float:
    """AggMo's momentum handle: beta's odds scaled as the largest beta's (top -> handle)."""
    if top == 0:
        return 0.0
    ratio = (handle / (1 - handle)) / (top / (1 - top))
    return ratio * beta / (1 - beta + ratio * beta)


# --- YellowFin (Zhang & Mitliagkas, algorithm 1 with the authors' log-scale curvature and
# the safeguards of their PyTorch code: slow start, adaptive clipping, sparsity debiasing) --


@dataclass
class YellowFinGroup:
    lr: float = 1.0  # factor on the tuned learning rate
    weight_decay: float = 0.0
    maximize: bool = False
    buf: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class YellowFinTuner:
    beta: float = 0.999
    width: int = 20
    zero_debias: bool = True
    smooth: bool = True
    alpha: float = 1.0  # initial values: YellowFin's defaults
    mu: float = 0.0
    eps: float = 1e-6
    slow_start: bool = True
    adapt_clip: bool = True
    stat_protect: float = 100.0
    move_cap: float = 100.0
    sparsity_debias: bool = False
    restart: bool = True  # a step with mu = 0 keeps no buffer (torch's SGD)
    t: int = 0
    h_max: float = 0.0  # the last step's estimate (the clipping's threshold)
    sparsity_ema: float = 0.0
    log_h: list[float] = field(default_factory=list)
    h_min_ema: float = 0.0
    h_max_ema: float = 0.0
    norm_sq_ema: float = 0.0
    norm_ema: float = 0.0
    dist_ema: float = 0.0
    grad_ema: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def measure(self, grads: dict[tuple[int, int], np.ndarray]) -> None:
        """Update the statistics with this step's gradients; tune (from the second step)."""
        b, eps = self.beta, self.eps
        h = sum(float(np.dot(g, g)) for g in grads.values())
        self.norm_sq_ema = b * self.norm_sq_ema + (1 - b) * h
        self.log_h = ([*self.log_h, math.log(h + eps)])[-self.width :]
        self.h_min_ema = b * self.h_min_ema + (1 - b) * min(self.log_h)
        self.h_max_ema = b * self.h_max_ema + (1 - b) * max(self.log_h)
        debias = 1 - b ** (self.t + 1) if self.zero_debias else 1.0
        h_min = math.exp(self.h_min_ema / debias)
        h_max = math.exp(self.h_max_ema / debias)
        s = 1.0
        if self.sparsity_debias:  # fraction of nonzero entries, always debiased
            nonzero = sum(int(np.count_nonzero(g)) for g in grads.values())
            fraction = nonzero / sum(g.size for g in grads.values())
            self.sparsity_ema = b * self.sparsity_ema + (1 - b) * fraction
            s = self.sparsity_ema / (1 - b ** (self.t + 1))
        for key, g in grads.items():
            self.grad_ema[key] = b * self.grad_ema.get(key, np.zeros_like(g)) + (1 - b) * g
        mean_sq = sum(float(np.dot(self.grad_ema[key], self.grad_ema[key])) for key in grads)
        variance = max(self.norm_sq_ema / debias - mean_sq / debias**2, eps)
        self.norm_ema = b * self.norm_ema + (1 - b) * math.sqrt(h)
        self.dist_ema = b * self.dist_ema + (1 - b) * self.norm_ema / (self.norm_sq_ema + eps)
        distance = self.dist_ema / debias
        h_min, h_max, variance, distance = s * h_min, s * h_max, s * variance, distance
        distance = distance / (math.sqrt(s) + eps) if self.sparsity_debias else distance
        self.h_max = h_max
        if self.t > 0:
            mu, alpha = self.single_step(h_min, h_max, variance, distance)
            if self.slow_start:  # ramp over the first 10 windows
                alpha *= min(1.0, (self.t + 1) / (10 * self.width))
            if self.smooth:
                mu = b * self.mu + (1 - b) * mu
                alpha = b * self.alpha + (1 - b) * alpha
            self.mu, self.alpha = mu, alpha
        self.t += 1

    def single_step(self, h_min: float, h_max: float, c: float, d: float) -> tuple[float, float]:
        """sqrt(mu) = x minimises x^2 D^2 + (1-x)^4 C / h_min^2 (Vieta), above the range bound."""
        eps = self.eps
        p = (d + eps) ** 2 * (h_min + eps) ** 2 / 2 / (c + eps)
        w = float(np.cbrt((-math.sqrt(p**2 + 4 / 27 * p**3) - p) / 2))
        x = min(max(w - p / 3 / (w + eps) + 1, 0.0), 1.0)
        dr = (h_max + eps) / (h_min + eps)
        mu = max(x**2, ((math.sqrt(dr) - 1) / (math.sqrt(dr) + 1)) ** 2)
        return mu, (1 - math.sqrt(mu)) ** 2 / (h_min + eps)


def yellowfin_step(
    tuner: YellowFinTuner,
    groups: list[YellowFinGroup],
    params: list[Params],
    grads: list[Grads],
) -> None:
    """Measure all groups' gradients together, tune, then momentum SGD (torch's convention).

    Adaptive clipping, with ``h_max`` the last step's estimate: from step 2 the statistics see
    ``g min(1, (sqrt(F h_max) + eps) / (||g|| + 1e-6))``; from step 1, if ``||g||^2 >= h_max``,
    the update uses ``g min(1, (sqrt(h_max) + eps) / (||g|| + 1e-6))``; an applied lr with
    ``lr ||g|| >= M`` becomes ``M / sqrt(||g||^2 + eps)``.
    """
    effective = {}
    for j, (group, ps, gs) in enumerate(zip(groups, params, grads, strict=True)):
        for i, theta in ps.items():
            if gs[i] is not None:
                effective[(j, i)] = _effective(gs[i], theta, group.weight_decay, group.maximize)

    def norm() -> float:
        return math.sqrt(sum(float(np.dot(g, g)) for g in effective.values()))

    t, h_max, eps = tuner.t, tuner.h_max, tuner.eps
    if tuner.adapt_clip and t >= 2:
        c = min(1.0, (math.sqrt(tuner.stat_protect * h_max) + eps) / (norm() + 1e-6))
        effective = {key: c * g for key, g in effective.items()}
    length = norm()
    tuner.measure(effective)
    if tuner.adapt_clip and t >= 1 and length**2 >= h_max:
        c = min(1.0, (math.sqrt(h_max) + eps) / (length + 1e-6))
        effective = {key: c * g for key, g in effective.items()}
    for (j, i), g in effective.items():
        group = groups[j]
        lr = group.lr * tuner.alpha
        if tuner.adapt_clip and lr * length >= tuner.move_cap:
            lr = tuner.move_cap / math.sqrt(length**2 + eps)
        buf = g if i not in group.buf else tuner.mu * group.buf[i] + g
        if tuner.restart and tuner.mu == 0:
            group.buf.pop(i, None)
        else:
            group.buf[i] = buf
        params[j][i] = params[j][i] - lr * buf


__all__ = [
    "AggMoGroup",
    "QHAdamGroup",
    "QHMGroup",
    "YellowFinGroup",
    "YellowFinTuner",
    "aggmo_step",
    "demon_odds",
    "qhadam_step",
    "qhm_step",
    "yellowfin_step",
]
