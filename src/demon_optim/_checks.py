"""The one place where values are checked.

Every function takes ``(field, value, ...)`` and returns the normalised value (a ``float``,
an ``int``, a ``bool``) or raises a :class:`~demon_optim.ConfigError` built with
``invalid(field, value, allowed)``: "field: got X; allowed: Y". The optimizers, the
momentum scheduler, the schedules and the study harness all check through these, so a rule
(what a learning rate may be, what a momentum may be) is written once.

A real number here is an instance of ``numbers.Real`` that is not a bool (``True`` would
read as 1), is finite, and fits a float (an integer beyond float range, as TOML and Python
integers can be, is refused rather than raising ``OverflowError``). An integer is a
``numbers.Integral`` that is not a bool.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import invalid

if TYPE_CHECKING:
    import torch

MAX_TOTAL_STEPS = 2**53
"""The largest ``total_steps``: float64 counts every integer exactly up to 2**53, and the
schedules divide step counts as floats."""


def number(
    field: str, value: object, allowed: str, ok: Callable[[float], bool] | None = None
) -> float:
    """``value`` as a float if it is a finite real number (not a bool) and ``ok(value)`` holds
    (``ok`` receives the float); else ConfigError with ``allowed``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid(field, value, allowed)
    try:
        x = float(value)
    except OverflowError:  # an integer beyond float range
        raise invalid(field, value, allowed) from None
    if not math.isfinite(x) or (ok is not None and not ok(x)):
        raise invalid(field, value, allowed)
    return x


# the predicates once, not a lambda per call: the schedules check at every optimizer step
def _is_positive(x: float) -> bool:
    return x > 0


def _is_nonnegative(x: float) -> bool:
    return x >= 0


def _in_unit_interval(x: float) -> bool:
    return 0.0 <= x < 1.0


def _in_closed_unit_interval(x: float) -> bool:
    return 0.0 <= x <= 1.0


def positive(field: str, value: object) -> float:
    """A finite number > 0, as a float."""
    return number(field, value, "numbers > 0", _is_positive)


def _is_tensor(value: object) -> bool:
    # without importing torch (the schedules check with this module and stay torch-free):
    # a tensor can only exist once torch is loaded
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _tensor_nonnegative(field: str, value: torch.Tensor) -> torch.Tensor:
    import torch

    v = value.detach()
    if value.numel() != 1 or not bool(torch.isfinite(v).all() & (v >= 0).all()):
        raise invalid(field, value, "finite numbers >= 0 (or a one-element tensor)")
    return value


def nonnegative(field: str, value: object, *, tensor_ok: bool = False) -> Any:
    """A finite number >= 0, as a float; with ``tensor_ok``, also a one-element tensor that
    is one (returned as it is). Only the Demon optimizers take tensor hyperparameters, as
    torch's SGD and Adam do; an infinite weight decay or epsilon is never useful."""
    if tensor_ok and _is_tensor(value):
        return _tensor_nonnegative(field, value)
    return number(field, value, "finite numbers >= 0", _is_nonnegative)


def learning_rate(field: str, value: object, *, tensor_ok: bool = False) -> Any:
    """The learning-rate rule, the same everywhere: a finite number >= 0 (torch's rule: a
    rate of 0 is allowed, and it is what a schedule that decays to 0 reaches); with
    ``tensor_ok``, also a one-element tensor that is one."""
    return nonnegative(field, value, tensor_ok=tensor_ok)


def unit_interval(field: str, value: object) -> float:
    """A number in [0, 1) (a momentum, a fraction of the run), as a float."""
    return number(field, value, "numbers in [0, 1)", _in_unit_interval)


def closed_unit_interval(field: str, value: object) -> float:
    """A number in [0, 1] (QHM's nu, a weight), as a float."""
    return number(field, value, "numbers in [0, 1]", _in_closed_unit_interval)


def flag(field: str, value: object) -> bool:
    """``True`` or ``False`` only (a string such as ``"False"`` would read as true)."""
    if not isinstance(value, bool):
        raise invalid(field, value, "True or False")
    return value


def _bounds(minimum: int, maximum: int | None) -> str:
    if maximum is None:
        return f"integers >= {minimum}"
    return f"integers in [{minimum}, {maximum}]"


def integer(
    field: str, value: object, minimum: int, maximum: int | None = None, allowed: str | None = None
) -> int:
    """An integer (not a bool) in ``[minimum, maximum]`` (no upper bound when ``maximum`` is
    None), as an int; ``allowed`` defaults to a text naming the bounds."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise invalid(field, value, allowed if allowed is not None else _bounds(minimum, maximum))
    return int(value)


def step_count(field: str, value: object) -> int:
    """A number of optimizer steps taken: an integer >= 0."""
    return integer(field, value, 0)


def total_steps(field: str, value: object) -> int:
    """A run's number of optimizer steps: an integer in [1, 2**53] (past 2**53 float64 no
    longer tells consecutive steps apart)."""
    return integer(
        field, value, 1, MAX_TOTAL_STEPS, "integers in [1, 2**53] (optimizer steps, not epochs)"
    )


def pair(field: str, value: object, allowed: str) -> tuple[object, object]:
    """The two items of a tuple or list of length 2 (``betas``, ``nus``), unchecked."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise invalid(field, value, allowed)
    return value[0], value[1]
