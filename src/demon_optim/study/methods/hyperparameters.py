"""Hyperparameters of a study method: their default grids, and how a value is checked.

A value is a float, int, bool or string, or a tuple of those (e.g. OneCycle's momentum
range, AggMo's betas); it enters the trial id as JSON, a tuple as a list. A checked value is
normalised (a TOML ``1`` for a float hyperparameter becomes ``1.0``), so the same setting
always has the same id.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from demon_optim import _checks
from demon_optim.errors import invalid

Scalar = float | int | bool | str
Value = Scalar | tuple[Scalar, ...]
"""A hyperparameter value: a scalar, or a tuple of scalars."""

Check = Callable[[str, object], Value]
"""``check(field, raw value) -> normalised value``; raises ConfigError naming ``field``."""

# Names a hyperparameter may not take: columns of the export, and build()'s own arguments.
RESERVED_NAMES = frozenset(
    {"trial_id", "task", "method", "seed", "epochs", "batch_size", "status", "error"}
    | {"params", "budget"}
)


@dataclass(frozen=True)
class Hyperparameter:
    """A tunable hyperparameter: its default values, how a value is checked, what it means.

    ``check`` defaults to :func:`check_like` of the defaults (values of the same kind).
    ``legacy``: for a hyperparameter added to a method after trials of it were stored, the
    value those trials ran with. A configuration at that value leaves the name out (and a
    configuration without the name means it), so a trial's id keeps its meaning.
    """

    values: tuple[Value, ...]
    check: Check | None = None
    help: str = ""
    legacy: Value | None = None

    def checker(self) -> Check:
        return self.check if self.check is not None else check_like(self.values)


def hyperparameter(name: str, raw: object, field: str) -> Hyperparameter:
    """A grid entry of :func:`~demon_optim.study.methods.register_method` as a Hyperparameter.

    ``raw`` is a Hyperparameter, a list of values (the grid), or one value (a scalar or a
    tuple); every default is checked here, so a bad grid fails when it is registered.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise invalid(field, name, "hyperparameter names that are Python identifiers")
    if name in RESERVED_NAMES:
        raise invalid(field, name, f"a name other than {', '.join(sorted(RESERVED_NAMES))}")
    if isinstance(raw, Hyperparameter):
        entry = raw
    elif isinstance(raw, list):
        entry = Hyperparameter(tuple(raw))
    else:
        entry = Hyperparameter((raw,))  # type: ignore[arg-type]
    where = f"{field}.{name}"
    if not entry.values:
        raise invalid(where, list(entry.values), "a non-empty list of default values")
    check = entry.checker()
    values = tuple(check(f"{where}[{i}]", v) for i, v in enumerate(entry.values))
    if len(set(values)) != len(values):
        raise invalid(where, list(entry.values), "lists without repeated values")
    legacy = None if entry.legacy is None else check(f"{where} (legacy)", entry.legacy)
    return Hyperparameter(values, check, entry.help, legacy)


# --- checks of a user's values, inferred from the defaults --------------------------------------


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "other"


_ALLOWED = {
    "float": "finite numbers",
    "int": "integers",
    "bool": "true or false",
    "str": "strings",
}


def _scalar_check(kind: str | None) -> Callable[[str, object], Scalar]:
    """A check for scalars of one kind (None: any float, int, bool or string)."""

    def check(field: str, value: object) -> Scalar:
        if kind == "float":
            return _checks.number(field, value, _ALLOWED["float"])
        if kind is None:
            if isinstance(value, float):
                return _checks.number(field, value, "finite numbers, integers, booleans or strings")
            if isinstance(value, int | str):  # bool is an int
                return value
            raise invalid(field, value, "numbers, booleans or strings")
        if _kind(value) != kind:
            raise invalid(field, value, _ALLOWED[kind])
        return value  # type: ignore[return-value]

    return check


def _common_kind(values: Iterable[object]) -> str | None:
    kinds = {_kind(v) for v in values}
    if kinds <= {"float", "int"} and "float" in kinds:
        return "float"  # a grid such as [0, 0.5, 1]: numbers
    return kinds.pop() if len(kinds) == 1 else None


def check_like(defaults: Sequence[object]) -> Check:
    """The check for a user's hyperparameter whose default values are ``defaults``.

    Values must be of the defaults' kind: numbers when they are floats (an integer becomes a
    float), integers, booleans or strings when they are; any of those when the defaults mix
    kinds. Tuple-valued defaults take tuples (lists in TOML) whose items follow the same
    rule, item by item when all defaults have one length.
    """
    if defaults and all(isinstance(v, tuple) for v in defaults):
        lengths = {len(v) for v in defaults}  # type: ignore[arg-type]
        length = lengths.pop() if len(lengths) == 1 else None
        if length is not None:
            items = [_scalar_check(_common_kind(v[i] for v in defaults)) for i in range(length)]  # type: ignore[index]
        else:
            common = _scalar_check(_common_kind(x for v in defaults for x in v))  # type: ignore[attr-defined]

        def check_tuple(field: str, value: object) -> Value:
            allowed = "lists of values" + (f" of length {length}" if length else "")
            if not isinstance(value, list | tuple) or (length and len(value) != length):
                raise invalid(field, value, allowed)
            checks = items if length is not None else [common] * len(value)
            pairs = enumerate(zip(checks, value, strict=True))
            return tuple(check(f"{field}[{i}]", item) for i, (check, item) in pairs)

        return check_tuple
    for value in defaults:
        if _kind(value) == "other" and not isinstance(value, tuple):
            raise invalid("default value", value, "floats, ints, bools, strings or tuples of those")
    return _scalar_check(_common_kind(defaults))  # type: ignore[return-value]


# --- checks of the built-in methods' hyperparameters ---------------------------------------------


def momentum_range(field: str, value: object) -> tuple[float, float]:
    allowed = "pairs [max_momentum, base_momentum] with 0 <= base <= max < 1, e.g. [0.95, 0.85]"
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise invalid(field, value, allowed)
    top, low = (_checks.unit_interval(field, v) for v in value)
    if low > top:
        raise invalid(field, value, allowed)
    return (top, low)


def switch(field: str, value: object) -> float:
    """An on/off hyperparameter: ``true``/``false`` or 1/0, kept as 1.0/0.0 (as first stored)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real) and value in (0, 1):
        return float(value)
    raise invalid(field, value, "true or false (or 1 or 0)")


def betas(field: str, value: object) -> tuple[float, ...]:
    allowed = "non-empty lists of numbers in [0, 1), e.g. [0, 0.9, 0.99]"
    if not isinstance(value, list | tuple) or not value:
        raise invalid(field, value, allowed)
    return tuple(_checks.unit_interval(field, v) for v in value)


def milestones(field: str, value: object) -> tuple[float, ...]:
    allowed = "increasing lists of fractions in (0, 1), e.g. [0.5, 0.75]"
    if not isinstance(value, list | tuple) or not value:
        raise invalid(field, value, allowed)
    fractions = tuple(_checks.unit_interval(field, v) for v in value)
    if fractions[0] <= 0 or any(b <= a for a, b in itertools.pairwise(fractions)):
        raise invalid(field, value, allowed)
    return fractions


# --- how values are printed ------------------------------------------------------------------


def format_value(value: Value) -> str:
    """A hyperparameter value as people write it: ``0.1``, ``1e-05``, ``0.95/0.85``, ``true``."""
    if isinstance(value, tuple):
        return "/".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_config(config: Mapping[str, Value], names: Iterable[str] | None = None) -> str:
    """``lr=0.1, momentum=0.9`` (only ``names``, in config order, when given)."""
    keep = None if names is None else set(names)
    return ", ".join(
        f"{name}={format_value(value)}"
        for name, value in config.items()
        if keep is None or name in keep
    )


def jsonable(value: Value) -> Any:
    """A value as it enters the trial id's JSON (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value
