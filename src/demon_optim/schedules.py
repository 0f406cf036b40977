r"""Schedule math: plain functions of the step count, no torch.

Every schedule has the signature ``f(step, total_steps, init, **options) -> float``:

* ``step`` is ``k``, the number of optimizer steps already taken (the k-th call of
  ``optimizer.step()`` uses ``f(k, ...)``, counted from 0);
* ``total_steps`` is ``T``, the run's total number of optimizer steps (iterations, not epochs);
* ``init`` is the value at ``k = 0``: ``beta_init`` for a momentum, the base rate for a
  learning rate.

The same shapes serve momenta and learning rates. They are pure Python ``float`` math, so
the optimizers, the momentum scheduler, the study harness and the plots all read the very
same numbers (``demon`` is bitwise identical wherever it is used). :func:`curve` evaluates a
schedule over many steps as a numpy array for plotting.

The Demon schedule (Chen et al., arXiv 1910.04952; the choices made where the paper is
silent are in ``docs/optimizers.md``):

.. math::

    \beta_k = \beta_{init} \frac{T - k}{T - \beta_{init} k}, \qquad
    \frac{\beta_k}{1 - \beta_k} = \left(1 - \frac{k}{T}\right)\frac{\beta_{init}}{1 - \beta_{init}},

so the total future weight of a gradient, :math:`\beta + \beta^2 + \dots = \beta / (1-\beta)`,
decays linearly to zero at ``k = T``. Past the end the formula would turn negative and then
explode (a pole at ``k = T / beta_init``); we clamp it to 0 for ``k >= T``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _checks
from .errors import ConfigError, invalid

__all__ = [
    "SCHEDULES",
    "Schedule",
    "constant",
    "cosine",
    "curve",
    "demon",
    "exponential",
    "get",
    "linear",
    "one_cycle",
    "one_cycle_lr",
    "one_cycle_momentum",
    "step_decay",
]

Schedule = Callable[[int, int, float], float]
"""A schedule: ``(step, total_steps, init) -> value``."""


# --- validation (the rules live in demon_optim._checks) ---------------------------------


MAX_TOTAL_STEPS = _checks.MAX_TOTAL_STEPS
"""The largest ``total_steps``: float64 counts every integer exactly up to 2**53, and the
schedules divide step counts as floats."""


# The check_* names predate demon_optim._checks and keep their (value, name) order for
# callers outside the package; the package itself calls _checks with (field, value).


def check_step(step: object, name: str = "step") -> int:
    """Return ``step`` as an int if it is an integer >= 0, else raise ConfigError."""
    return _checks.step_count(name, step)


def check_total_steps(total_steps: object, name: str = "total_steps") -> int:
    """Return ``total_steps`` as an int if it is an integer in [1, 2**53], else raise
    ConfigError (past 2**53 float64 no longer tells consecutive steps apart)."""
    return _checks.total_steps(name, total_steps)


def check_momentum(value: object, name: str = "beta_init") -> float:
    """Return ``value`` as a float if it lies in [0, 1), else raise ConfigError."""
    return _checks.unit_interval(name, value)


def check_fraction(value: object, name: str) -> float:
    """Return ``value`` as a float if it lies in [0, 1), else raise ConfigError."""
    return _checks.unit_interval(name, value)


def _check_common(step: object, total_steps: object, init: object) -> tuple[int, int, float]:
    return (
        _checks.step_count("step", step),
        _checks.total_steps("total_steps", total_steps),
        _checks.nonnegative("init", init),
    )


# --- the shapes ---------------------------------------------------------------------------


def demon(step: int, total_steps: int, beta_init: float, delay: float = 0.0) -> float:
    r"""Demon momentum: :math:`\beta_k = \beta_{init}(T - k) / (T - \beta_{init} k)`, 0 for k >= T.

    With ``delay = d`` in [0, 1) the decay starts at ``D = round(d T)``: ``beta_init`` for
    ``k < D``, then ``demon(k - D, T - D, beta_init)`` (the "delayed Demon" of the paper's
    earlier version).

    >>> demon(50, 100, 0.9)
    0.8181818181818182
    >>> demon(100, 100, 0.9)
    0.0
    """
    k = _checks.step_count("step", step)
    t = _checks.total_steps("total_steps", total_steps)
    beta = _checks.unit_interval("beta_init", beta_init)
    d = _checks.unit_interval("delay", delay)
    if d:
        start = round(d * t)
        if k < start:
            return beta
        k, t = k - start, t - start
        if t < 1:  # the delay swallowed the whole run: no decay phase
            return 0.0
    if k >= t:
        return 0.0
    return beta * (t - k) / (t - beta * k)


def constant(step: int, total_steps: int, init: float) -> float:
    """No decay: ``init`` at every step."""
    _check_common(step, total_steps, init)
    return float(init)


def linear(step: int, total_steps: int, init: float) -> float:
    r"""Linear decay to 0 at T: :math:`init \cdot (1 - k/T)`, 0 for k >= T.

    Learning-rate equivalent: ``LinearLR(start_factor=1, end_factor=0, total_iters=T)``.
    """
    k, t, v = _check_common(step, total_steps, init)
    return v * (1.0 - min(k, t) / t)


def cosine(step: int, total_steps: int, init: float) -> float:
    r"""Cosine decay to 0 at T: :math:`init \cdot (1 + \cos(\pi k / T)) / 2`, 0 for k >= T.

    Learning-rate equivalent: ``CosineAnnealingLR(T_max=T, eta_min=0)`` stepped per step.
    """
    k, t, v = _check_common(step, total_steps, init)
    return v * 0.5 * (1.0 + math.cos(math.pi * min(k, t) / t))


def exponential(step: int, total_steps: int, init: float, rate: float = 5.0) -> float:
    r"""Exponential decay: :math:`init \cdot e^{-rate \cdot k / T}`.

    The paper decays by 0.05 per epoch over 100 epochs, i.e. ``rate = 5`` e-foldings over the
    run whatever its length (``r = 0.05 * 100 / E`` per epoch, ``E = T / S``), so the schedule
    ends at ``init * e^-5``, not at 0. The learning-rate version in the study is torch's
    ``ExponentialLR(gamma=exp(-rate / E))`` stepped once per epoch (a staircase of this curve).
    """
    k, t, v = _check_common(step, total_steps, init)
    r = _checks.nonnegative("rate", rate)
    return v * math.exp(-r * min(k, t) / t)


def step_decay(
    step: int,
    total_steps: int,
    init: float,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
    steps_per_epoch: int = 1,
) -> float:
    r"""Step decay: multiply by ``gamma`` at each milestone epoch ``round(f * E)``.

    ``E = T // steps_per_epoch`` epochs; the value for epoch ``e = k // steps_per_epoch`` is
    :math:`init \cdot \gamma^{\#\{f : e \ge round(f E)\}}`. Learning-rate equivalent:
    ``MultiStepLR(milestones=[round(f * E) ...], gamma)`` stepped once per epoch.
    """
    k, t, v = _check_common(step, total_steps, init)
    s = _checks.total_steps("steps_per_epoch", steps_per_epoch)
    for f in milestones:
        _checks.unit_interval("milestones", f)
    epochs = t // s
    epoch = min(k, t) // s
    passed = sum(1 for f in milestones if epoch >= round(f * epochs))
    return v * _checks.nonnegative("gamma", gamma) ** passed


def _cos_anneal(start: float, end: float, pct: float) -> float:
    # torch.optim.lr_scheduler.OneCycleLR._annealing_cos, so both give the same numbers
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _one_cycle_phase(k: int, t: int, pct_start: float) -> tuple[int, float]:
    """Which of OneCycle's two phases step k is in, and how far through it (torch's rule)."""
    k = min(k, t - 1)  # torch stops at T - 1; we hold the last value past it
    warm_end = float(pct_start * t) - 1
    if k <= warm_end:
        return 0, k / warm_end if warm_end > 0 else 1.0
    span = (t - 1) - warm_end
    return 1, (k - warm_end) / span if span > 0 else 1.0


def one_cycle_lr(
    step: int,
    total_steps: int,
    max_lr: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """OneCycle learning rate (Smith), as torch's ``OneCycleLR(anneal_strategy="cos")``.

    Rises from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of the run,
    then falls to ``max_lr / div_factor / final_div_factor`` at step ``T - 1``.
    """
    k, t, peak = _check_common(step, total_steps, max_lr)
    start = peak / div_factor
    phase, pct = _one_cycle_phase(k, t, _checks.unit_interval("pct_start", pct_start))
    if phase == 0:
        return _cos_anneal(start, peak, pct)
    return _cos_anneal(peak, start / final_div_factor, pct)


def one_cycle_momentum(
    step: int,
    total_steps: int,
    max_momentum: float,
    base_momentum: float = 0.85,
    pct_start: float = 0.3,
) -> float:
    """OneCycle momentum (Smith), as torch's ``OneCycleLR(cycle_momentum=True)``.

    Falls from ``max_momentum`` to ``base_momentum`` while the learning rate warms up, then
    rises back to ``max_momentum``. "Momentum OneCycle" in the paper applies this half alone.
    """
    k = _checks.step_count("step", step)
    t = _checks.total_steps("total_steps", total_steps)
    top = _checks.unit_interval("max_momentum", max_momentum)
    low = _checks.unit_interval("base_momentum", base_momentum)
    phase, pct = _one_cycle_phase(k, t, _checks.unit_interval("pct_start", pct_start))
    if phase == 0:
        return _cos_anneal(top, low, pct)
    return _cos_anneal(low, top, pct)


one_cycle = one_cycle_momentum
"""``"one_cycle"`` names the momentum curve (the learning-rate one is :func:`one_cycle_lr`)."""


# --- lookup and vectorised evaluation -------------------------------------------------------

SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "exponential": exponential,
    "demon": demon,
    "step": step_decay,
    "one_cycle": one_cycle_momentum,
    "one_cycle_lr": one_cycle_lr,
}
"""Every named schedule; each takes ``(step, total_steps, init, **options)``."""


def get(schedule: str | Callable[..., float], **options: Any) -> Schedule:
    """Resolve a schedule name (or a callable) to a ``(step, total_steps, init) -> float``.

    ``options`` are bound as keyword arguments, e.g. ``get("one_cycle", base_momentum=0.9)``.
    """
    if callable(schedule):
        fn = schedule
    elif isinstance(schedule, str) and schedule in SCHEDULES:
        fn = SCHEDULES[schedule]
    else:
        raise invalid("schedule", schedule, [*sorted(SCHEDULES), "or a callable (k, T, init)"])
    if not options:
        return fn  # type: ignore[return-value]

    def bound(step: int, total_steps: int, init: float) -> float:
        return fn(step, total_steps, init, **options)

    bound.__name__ = getattr(fn, "__name__", "schedule")
    return bound


def curve(
    schedule: str | Callable[..., float],
    total_steps: int,
    init: float,
    steps: Sequence[int] | np.ndarray | None = None,
    **options: Any,
) -> np.ndarray:
    """Evaluate a schedule at many steps (default ``0 .. T`` inclusive) as a float64 array.

    It calls the scalar function at each step, so plotted values are the very values the
    optimizers apply (about a microsecond per point).
    """
    fn = get(schedule, **options)
    total = _checks.total_steps("total_steps", total_steps)
    ks = np.arange(total + 1) if steps is None else np.asarray(steps)
    if ks.ndim != 1 or not np.issubdtype(ks.dtype, np.integer):
        raise ConfigError(
            f"steps: got an array of {ks.dtype} with shape {ks.shape}; "
            "allowed: a 1-d sequence of integers >= 0"
        )
    return np.fromiter((fn(int(k), total, init) for k in ks), dtype=np.float64, count=len(ks))
