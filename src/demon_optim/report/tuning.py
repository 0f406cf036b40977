"""The best of k sampled configurations, and what to expect of it: pure formulas.

A search drew ``N`` configurations in order. Configuration ``i`` has a validation value
``v_i`` (its mean over seeds; ``None`` when a seed diverged or failed: it cannot be
selected) and an outcome ``t_i`` (its mean test metric over seeds). With a tuning budget
of ``k`` configurations:

* **best of the first k** (what this sequence gave): the first ``k`` draws' configuration
  with the best ``v`` (ties: the earliest), and its ``t``;

* **expected maximum** (Dodge, Gururangan, Card, Schwartz & Smith 2019, "Show your work:
  improved reporting of experimental results"): draw ``k`` configurations independently
  and uniformly from the ``N`` observed ones (with replacement) and select the best by
  validation. With the values sorted from worst to best, ``v_(1) <= ... <= v_(N)``,

      P(the best of k is v_(i)) = (i / N)^k - ((i - 1) / N)^k
      E[t of the best of k]     = sum_i t_(i) [(i / N)^k - ((i - 1) / N)^k]

  (with ``t = v`` this is Dodge et al.'s expected validation performance); its spread is
  the standard deviation of the same distribution,
  ``sqrt(sum_i t_(i)^2 [...] - E^2)``;

* **over orderings**: the best of the first k over every order the same ``N`` draws could
  have come in (k configurations without replacement), exactly:

      P(the best of the first k is v_(i)) = [C(i, k) - C(i - 1, k)] / C(N, k)

  with its mean and standard deviation; at ``k = N`` every order gives the best.

Conventions, explicit: configurations that cannot be selected sort below every other one;
if all ``k`` drawn are such, there is no result, with probability ``P(none)`` =
``(u / N)^k`` (with replacement) or ``C(u, k) / C(N, k)`` (orderings) for ``u`` of them,
and the mean and spread above are those given that some drawn configuration finished.
Configurations with equal validation values form one group whose outcome is the mean of
theirs (the chosen one among tied draws is any of them, equally likely).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Expected:
    """The outcome of the best of k: its mean and standard deviation given that some drawn
    configuration finished (None when none can), and the probability that none did."""

    mean: float | None
    std: float | None
    none: float


def best_of_first(values: Sequence[float | None], k: int, higher_is_better: bool) -> int | None:
    """The index of the best of ``values[:k]`` (the earliest of ties); None if none of
    them can be selected.

    >>> best_of_first([0.5, None, 0.7, 0.7], 4, higher_is_better=True)
    2
    """
    best: int | None = None
    for i, value in enumerate(values[:k]):
        if value is None:
            continue
        if best is None or _better(value, values[best], higher_is_better):  # type: ignore[arg-type]
            best = i
    return best


def _better(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def _groups(
    values: Sequence[float | None], outcomes: Sequence[float | None], higher_is_better: bool
) -> tuple[int, list[tuple[int, float, float]]]:
    """(how many cannot be selected, [(count, mean outcome, mean squared outcome)] of each
    group of equal validation values, worst first)."""
    if len(values) != len(outcomes):
        raise ValueError(f"values and outcomes: {len(values)} and {len(outcomes)} entries")
    finished: dict[float, list[float]] = {}
    for value, outcome in zip(values, outcomes, strict=True):
        if value is None:
            continue
        if outcome is None or not math.isfinite(outcome) or not math.isfinite(value):
            raise ValueError(f"a finished configuration needs finite values: {value}, {outcome}")
        finished.setdefault(float(value), []).append(float(outcome))
    order = sorted(finished, reverse=not higher_is_better)  # worst first
    groups = [
        (len(t), statistics.fmean(t), statistics.fmean(x * x for x in t))
        for t in (finished[v] for v in order)
    ]
    return len(values) - sum(n for n, _, _ in groups), groups


def _expected(
    values: Sequence[float | None],
    outcomes: Sequence[float | None],
    higher_is_better: bool,
    below: Callable[[int], float],
) -> Expected:
    """``below(c)``: the probability that the best drawn is among the ``c`` worst."""
    unfinished, groups = _groups(values, outcomes, higher_is_better)
    none = below(unfinished)
    if not groups or none >= 1.0:
        return Expected(None, None, 1.0 if not groups else none)
    mean = second = 0.0
    count = unfinished
    for size, outcome, square in groups:
        weight = below(count + size) - below(count)
        mean += weight * outcome
        second += weight * square
        count += size
    mean, second = mean / (1.0 - none), second / (1.0 - none)
    return Expected(mean, math.sqrt(max(0.0, second - mean * mean)), none)


def expected_max(
    values: Sequence[float | None],
    outcomes: Sequence[float | None],
    k: int,
    higher_is_better: bool = True,
) -> Expected:
    """Dodge et al.'s expected maximum: the outcome of the best by validation of ``k``
    configurations drawn with replacement from the ``N`` observed (see the module).

    >>> round(expected_max([0.1, 0.3, 0.2], [0.1, 0.3, 0.2], 2).mean, 6)  # 2.2 / 9
    0.244444
    """
    n = len(values)
    if k < 1 or n == 0:
        raise ValueError(f"k: got {k} with {n} configurations; allowed: k >= 1, N >= 1")
    return _expected(values, outcomes, higher_is_better, lambda c: (c / n) ** k)


def over_orderings(
    values: Sequence[float | None],
    outcomes: Sequence[float | None],
    k: int,
    higher_is_better: bool = True,
) -> Expected:
    """The best of the first ``k`` over every ordering of the ``N`` draws (``k <= N``
    configurations without replacement), exactly (see the module).

    >>> over_orderings([0.1, 0.3, 0.2], [0.1, 0.3, 0.2], 2).mean  # (0.2 + 0.3 + 0.3) / 3
    0.26666666666666666
    """
    n = len(values)
    if not 1 <= k <= n:
        raise ValueError(f"k: got {k} with {n} configurations; allowed: 1 <= k <= N")
    total = math.comb(n, k)
    return _expected(values, outcomes, higher_is_better, lambda c: math.comb(c, k) / total)
