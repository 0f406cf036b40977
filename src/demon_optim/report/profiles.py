"""Performance profiles and the area under them, as AlgoPerf scores training algorithms.

A performance profile (Dolan & Moré 2002) compares methods over a set of settings ``S``
(here: task x epoch budget) by how far each is from the best method on each setting. With
``t[s][m]`` the cost for method ``m`` to reach the target on setting ``s`` (training time or
optimizer steps; ``inf`` when it never reaches it, and for a method that did not run on
``s``)::

    r[s][m]   = t[s][m] / min_m' t[s][m']                    performance ratio, >= 1
    rho_m(tau) = |{s in S : r[s][m] <= tau}| / |S|            for 1 <= tau <= tau_max
    B_m       = 1 / (tau_max - 1) * integral_1^tau_max rho_m(tau) dtau

``rho_m(1)`` is the fraction of settings where ``m`` is (one of) the fastest; ``rho_m`` is a
non-decreasing step function, so the area has the exact form

    B_m = 1 / |S| * sum_s max(0, tau_max - r[s][m]) / (tau_max - 1)      in [0, 1]

(1: fastest everywhere; 0: never within ``tau_max`` times the fastest). AlgoPerf (Dahl et al.
2023, "Benchmarking Neural Network Training Algorithms") scores with ``tau_max = 4`` and
plots ``tau`` on a log axis; so does the report (:data:`TAU_MAX`).

Conventions, each explicit:

* ties share the best time: every tied method has ratio 1 there;
* a setting where no method reaches the target gives every method ``r = inf`` there (it
  still counts in ``|S|``: nobody solved it);
* a best cost of 0 gives ratio 1 to the methods that also cost 0 and ``inf`` to the others.

Everything here is pure (plain floats in, plain floats out), so it can be checked by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

TAU_MAX = 4.0
"""The largest ratio a profile looks at (AlgoPerf's ``r_max``)."""


def ratios(
    costs: Mapping[str, Mapping[str, float]], methods: Sequence[str]
) -> dict[str, list[float]]:
    """``{method: [r[s][method] for s in costs]}``, the settings in ``costs``' order.

    ``costs[s][m]`` is a non-negative number or ``inf`` (never reached); a method missing
    from ``costs[s]`` counts as ``inf`` there. Raises ValueError for a NaN or a negative
    cost.

    >>> ratios({"a": {"x": 10.0, "y": 20.0}, "b": {"x": math.inf, "y": 5.0}}, ["x", "y"])
    {'x': [1.0, inf], 'y': [2.0, 1.0]}
    """
    out: dict[str, list[float]] = {m: [] for m in methods}
    for setting, by_method in costs.items():
        for method, cost in by_method.items():
            if math.isnan(cost) or cost < 0:
                raise ValueError(
                    f"cost of {method!r} on {setting!r}: got {cost!r}; allowed: a number >= 0 "
                    "or inf (never reached)"
                )
        row = [by_method.get(m, math.inf) for m in methods]
        best = min(row, default=math.inf)
        for method, cost in zip(methods, row, strict=True):
            out[method].append(_ratio(cost, best))
    return out


def _ratio(cost: float, best: float) -> float:
    if math.isinf(cost):
        return math.inf
    if best == 0:
        return 1.0 if cost == 0 else math.inf
    return cost / best


def rho(method_ratios: Sequence[float], tau: float) -> float:
    """The fraction of settings with ratio at most ``tau`` (0 for no settings)."""
    if not method_ratios:
        return 0.0
    return sum(1 for r in method_ratios if r <= tau) / len(method_ratios)


def area(method_ratios: Sequence[float], tau_max: float = TAU_MAX) -> float:
    """The normalised area under the profile on ``[1, tau_max]`` (exact, see the module).

    >>> area([1.0, 2.0, math.inf])  # (3 + 2 + 0) / 3 / 3
    0.5555555555555556
    """
    if tau_max <= 1:
        raise ValueError(f"tau_max: got {tau_max!r}; allowed: a number > 1")
    if not method_ratios:
        return 0.0
    total = sum(max(0.0, tau_max - max(1.0, r)) for r in method_ratios)
    return total / (len(method_ratios) * (tau_max - 1))


def steps(
    method_ratios: Sequence[float], tau_max: float = TAU_MAX
) -> tuple[list[float], list[float]]:
    """The profile as a step function on ``[1, tau_max]``: ``(taus, rhos)`` with ``rhos[i]``
    holding from ``taus[i]`` to ``taus[i + 1]`` (draw with ``drawstyle="steps-post"``).

    The points are 1, every ratio inside ``(1, tau_max]``, and ``tau_max``.

    >>> steps([1.0, 2.0, math.inf])
    ([1.0, 2.0, 4.0], [0.3333333333333333, 0.6666666666666666, 0.6666666666666666])
    """
    inside = sorted({r for r in method_ratios if 1.0 < r <= tau_max})
    taus = [1.0, *inside]
    if taus[-1] != tau_max:
        taus.append(tau_max)
    return taus, [rho(method_ratios, tau) for tau in taus]
