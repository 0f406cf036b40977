"""Shared pieces of the reference optimizers (QHM, QHAdam, AggMo, YellowFin).

Validation helpers that raise :class:`demon_optim.ConfigError` naming the argument and the
value, a base class that validates every parameter group (those added later and those of a
loaded state dict included), and the batching that keeps a fast path's second pass over a
tensor in cache.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from ..errors import invalid
from ..schedules import check_momentum
from ._base import CheckedOptimizer, Gathered, flag, gather

__all__ = ["ValidatedOptimizer", "flag", "gather", "params_with_grad"]

# The fast paths of QHAdam and AggMo make more than one pass over the same tensors (a kernel
# call, then a correction or the next buffer). Done batch by batch, the second pass reads
# tensors the first one just left in cache. 2**19 float32 values is 2 MiB per tensor list.
CACHE_BATCH_NUMEL = 1 << 19


def number(field: str, value: object, allowed: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a float if it is a finite real number (not a bool) with ``ok(value)``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not ok(float(value))
    ):
        raise invalid(field, value, allowed)
    return float(value)


def nonnegative(field: str, value: object) -> float:
    return number(field, value, "finite numbers >= 0", lambda v: v >= 0)


def momentum_value(field: str, value: object) -> float:
    return check_momentum(value, field)


def unit_interval(field: str, value: object) -> float:
    return number(field, value, "numbers in [0, 1]", lambda v: 0 <= v <= 1)


def pair(field: str, value: object, allowed: str) -> tuple[object, object]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise invalid(field, value, allowed)
    return value[0], value[1]


class ValidatedOptimizer(CheckedOptimizer):
    """A reference optimizer: every parameter group checked by :meth:`_validate_group` (at
    construction, in ``add_param_group`` and ``load_state_dict``), and steps that gather
    every group's gradients with :meth:`_gather_groups` before changing anything."""

    def _gather_groups(self) -> list[tuple[dict[str, Any], Gathered]]:
        """Every group that has gradients, with its tensors (complex parameters as real
        views); a sparse gradient raises here, before any group is updated."""
        work = []
        for group in self.param_groups:
            batch = gather(self, group)
            if batch.keys:
                work.append((group, batch))
        return work


def params_with_grad(optimizer: Optimizer, group: dict[str, Any]) -> list[Tensor]:
    """The group's parameters that have a gradient this step (sparse ones are refused)."""
    return gather(optimizer, group).keys


def cache_batches(tensors: Iterable[Tensor], limit: int = CACHE_BATCH_NUMEL) -> list[list[int]]:
    """Consecutive index runs of at most ``limit`` values (a bigger tensor is a run alone)."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, t in enumerate(tensors):
        n = t.numel()
        if current and size + n > limit:
            batches.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        batches.append(current)
    return batches


def effective_grads(
    params: list[Tensor], grads: list[Tensor], weight_decay: float, maximize: bool
) -> list[Tensor]:
    """``g' = (-g if maximize else g) + weight_decay * theta`` (new tensors only where needed)."""
    out = []
    for p, g in zip(params, grads, strict=True):
        if maximize:
            g = g.neg()
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        out.append(g)
    return out
