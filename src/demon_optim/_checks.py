"""The one place where values are checked (placeholder; replaced by the full module)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from demon_optim.errors import invalid


def number(
    field: str, value: object, allowed: str, ok: Callable[[float], bool] | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid(field, value, allowed)
    try:
        result = float(value)
    except OverflowError:
        raise invalid(field, value, allowed) from None
    if not math.isfinite(result) or (ok is not None and not ok(result)):
        raise invalid(field, value, allowed)
    return result


def positive(field: str, value: object) -> float:
    return number(field, value, "numbers > 0", lambda x: x > 0)


def nonnegative(field: str, value: object, *, tensor_ok: bool = False) -> float:
    return number(field, value, "numbers >= 0", lambda x: x >= 0)


def learning_rate(field: str, value: object, *, tensor_ok: bool = False) -> float:
    return number(field, value, "numbers >= 0", lambda x: x >= 0)


def unit_interval(field: str, value: object) -> float:
    return number(field, value, "numbers in [0, 1)", lambda x: 0 <= x < 1)


def closed_unit_interval(field: str, value: object) -> float:
    return number(field, value, "numbers in [0, 1]", lambda x: 0 <= x <= 1)


def flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, value, "True or False")
    return value


def integer(
    field: str, value: object, minimum: int, maximum: int | None = None, allowed: str | None = None
) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < minimum or (maximum is not None and value > maximum):  # type: ignore[operator]
        raise invalid(field, value, allowed or f"integers >= {minimum}")
    return value  # type: ignore[return-value]
