"""Search as a study axis: a method's search settings and its search space, parsed and checked.

Per method, a study either runs its grid (``search = "grid"``, the default) or samples a
budget of configurations from a space (``search = "sample"``)::

    search = "sample"                 # study level, or per method in [tuning.<method>]
    sampler = "qmc"                   # random (default) | qmc | tpe
    tuning_budgets = [1, 4, 16]       # each method draws max(tuning_budgets) configurations
    search_seed = 0                   # seeds the sampler
    search_batch = 16                 # draws asked at once (default: random, qmc: all; tpe: 4)

    [tuning.sgdm]                     # per method: any of the five keys above
    search = "grid"

    [space.demon-adam]                # per sampled method
    lr = {low = 1e-5, high = 1e-2, log = true}
    momentum = {low = 0.8, high = 0.99}
    weight_decay = {choices = [0, 1e-4]}

A hyperparameter the space leaves out takes the values of its grid (``[grid.<method>]`` or
the method's defaults) as choices, fixed when there is one. Tuple-valued hyperparameters
(OneCycle's ``momentum_range``, AggMo's ``betas``) are choices: ``{choices = [[0, 0.9],
[0, 0.9, 0.99]]}``. Nothing here imports Optuna (:mod:`demon_optim.study.search.sampler`
does, when a study runs), so a study file is checked without it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from demon_optim import _checks
from demon_optim.errors import ConfigError, invalid
from demon_optim.study.methods import Method, Value, get_method
from demon_optim.study.methods.hyperparameters import jsonable

SEARCH_MODES = ("grid", "sample")
SAMPLERS = ("random", "qmc", "tpe")
SEARCH_KEYS = ("search", "sampler", "tuning_budgets", "search_seed", "search_batch")
DEFAULT_SAMPLER = "random"
DEFAULT_TUNING_BUDGETS = (1, 4, 16)
TPE_BATCH = 4
"""TPE's default ``search_batch``: its draws depend on the results told before them, so a
batch waits for the one before it (choose at least the number of workers)."""
MAX_DRAWS = 10_000
MAX_SEED = 2**32 - 1
RANGE_KEYS = ("low", "high", "log", "step")
FORMS = (
    "a range {low = ..., high = ...} (optionally log = true or step = ...), "
    "{choices = [...]}, or one value"
)
_ONLY_SAMPLED = 'only with search = "sample" (at the top of the study or in [tuning.<method>])'


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of a space: a ``float`` or ``int`` range (``low`` to ``high``,
    log-uniform with ``log``, on a grid of ``step``), or ``choice``: one of ``choices``
    (fixed when there is one)."""

    name: str
    kind: str  # "float" | "int" | "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Value, ...] = ()

    @property
    def varies(self) -> bool:
        return self.kind != "choice" or len(self.choices) > 1

    def to_json(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"name": self.name, "choices": [jsonable(c) for c in self.choices]}
        record: dict[str, Any] = {"name": self.name, "kind": self.kind}
        record.update(low=self.low, high=self.high, log=self.log)
        if self.step is not None:
            record["step"] = self.step
        return record


@dataclass(frozen=True)
class Space:
    """A method's search space, one :class:`Dimension` per hyperparameter in the method's
    declaration order."""

    method: str
    dimensions: tuple[Dimension, ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [d.to_json() for d in self.dimensions]

    def config(self, params: Mapping[str, object]) -> dict[str, Value]:
        """The method's configuration for a sampler's ``params`` (one entry per dimension
        that varies; a choice as the JSON text of its value), checked as a grid value is."""
        method = get_method(self.method)
        raw: dict[str, object] = {}
        for dim in self.dimensions:
            if not dim.varies:
                raw[dim.name] = dim.choices[0]
            elif dim.kind == "choice":
                raw[dim.name] = _from_json(json.loads(str(params[dim.name])))
            elif dim.kind == "int":
                raw[dim.name] = int(params[dim.name])  # type: ignore[call-overload]
            else:
                raw[dim.name] = float(params[dim.name])  # type: ignore[arg-type]
        return method.check_config(raw, f"search {self.method}")


def _from_json(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class SearchSettings:
    """How one method's configurations are sampled (``search = "sample"``)."""

    sampler: str
    tuning_budgets: tuple[int, ...]  # ascending
    seed: int
    batch: int
    space: Space

    @property
    def draws(self) -> int:
        """Configurations drawn: the largest tuning budget."""
        return self.tuning_budgets[-1]

    def identity(self) -> dict[str, Any]:
        """What fixes the sequence of draws (the budget does not: a larger one continues it)."""
        return {
            "sampler": self.sampler,
            "search_seed": self.seed,
            "search_batch": self.batch,
            "space": self.space.to_json(),
        }


# --- parsing ------------------------------------------------------------------------------------


def parse_searches(
    data: Mapping[str, Any],
    methods: tuple[str, ...],
    grids: Mapping[str, Mapping[str, tuple[Value, ...]]],
) -> dict[str, SearchSettings]:
    """The search settings of every sampled method of a study (grid methods are absent).

    ``data`` is the study's TOML document: its top-level ``search``, ``sampler``,
    ``tuning_budgets``, ``search_seed`` and ``search_batch`` apply to every method, a
    ``[tuning.<method>]`` entry overrides them for one, and ``[space.<method>]`` gives a
    sampled method's space. Every error names the field and what is allowed.
    """
    top = {key: data[key] for key in SEARCH_KEYS if key in data}
    tuning = _tables(data.get("tuning", {}), "tuning", methods)
    spaces = _tables(data.get("space", {}), "space", methods)
    out = {}
    for name in methods:
        own = tuning.get(name, {})
        for key in own:
            if key not in SEARCH_KEYS:
                raise invalid(f"tuning.{name}.{key}", key, SEARCH_KEYS)
        merged = {**top, **own}

        def where(key: str, name: str = name, own: Mapping = own) -> str:
            return f"tuning.{name}.{key}" if key in own else key

        mode = merged.get("search", "grid")
        if mode not in SEARCH_MODES:
            raise invalid(where("search"), mode, SEARCH_MODES)
        if mode == "grid":
            for key in own:
                if key != "search":
                    raise invalid(f"tuning.{name}.{key}", own[key], _ONLY_SAMPLED)
            if name in spaces:
                raise invalid(f"space.{name}", name, f"a method with search = 'sample'; {name}'s "
                              "search is 'grid' (set search = \"sample\" at the top of the study "
                              f"or in [tuning.{name}])")  # fmt: skip
            continue
        sampler = merged.get("sampler", DEFAULT_SAMPLER)
        if sampler not in SAMPLERS:
            raise invalid(where("sampler"), sampler, SAMPLERS)
        budgets = _budgets(where("tuning_budgets"), merged.get("tuning_budgets"))
        seed = _checks.integer(
            where("search_seed"),
            merged.get("search_seed", 0),
            0,
            MAX_SEED,
            f"integers in [0, 2**32 - 1] ({MAX_SEED})",
        )
        default_batch = TPE_BATCH if sampler == "tpe" else budgets[-1]
        batch = _checks.integer(
            where("search_batch"),
            merged.get("search_batch", default_batch),
            1,
            MAX_DRAWS,
            f"positive integers up to {MAX_DRAWS:,} (draws asked at once)",
        )
        space = parse_space(spaces.get(name, {}), get_method(name), grids.get(name), name)
        out[name] = SearchSettings(sampler, budgets, seed, batch, space)
    if not out:
        for key, value in top.items():
            if key != "search":
                raise invalid(key, value, _ONLY_SAMPLED)
    return out


def _tables(raw: object, field: str, methods: tuple[str, ...]) -> dict[str, dict]:
    if not isinstance(raw, Mapping):
        raise invalid(field, raw, f"a table of [{field}.<method>] tables")
    out = {}
    for name, table in raw.items():
        if name not in methods:
            raise invalid(field, name, [f"{m} (the study's methods)" for m in methods])
        if not isinstance(table, Mapping):
            raise invalid(f"{field}.{name}", table, "a table of key = value")
        out[name] = dict(table)
    return out


def _budgets(field: str, raw: object) -> tuple[int, ...]:
    allowed = f"a non-empty list of distinct positive integers up to {MAX_DRAWS:,}, e.g. [1, 4, 16]"
    if raw is None:
        return DEFAULT_TUNING_BUDGETS
    if not isinstance(raw, list) or not raw:
        raise invalid(field, raw, allowed)
    values = [_checks.integer(f"{field}[{i}]", v, 1, MAX_DRAWS, allowed) for i, v in enumerate(raw)]
    if len(set(values)) != len(values):
        raise invalid(field, raw, allowed)
    return tuple(sorted(values))


def parse_space(
    raw: Mapping[str, object],
    method: Method,
    grid: Mapping[str, tuple[Value, ...]] | None,
    name: str,
) -> Space:
    """A method's :class:`Space` from its ``[space.<method>]`` table; the hyperparameters it
    leaves out take their grid's values (``grid``: the study's overrides) as choices."""
    field = f"space.{name}"
    for key in raw:
        if key not in method.hyperparameters:
            raise invalid(f"{field}.{key}", key, method.hyperparameter_names)
        if grid and key in grid:
            allowed = f"a hyperparameter not also in [space.{name}] (one of the two)"
            raise invalid(f"grid.{name}.{key}", key, allowed)
    axes = method.default_grid()
    axes.update(grid or {})
    dimensions = tuple(
        _dimension(f"{field}.{hp_name}", hp_name, method, raw[hp_name])
        if hp_name in raw
        else Dimension(hp_name, "choice", choices=tuple(axes[hp_name]))
        for hp_name in method.hyperparameters
    )
    if not any(d.varies for d in dimensions):
        raise invalid(
            field,
            dict(raw),
            "a space in which some hyperparameter varies (a range, or two choices or more); "
            'for one configuration use search = "grid"',
        )
    return Space(name, dimensions)


def _dimension(field: str, name: str, method: Method, raw: object) -> Dimension:
    hp = method.hyperparameters[name]
    check = hp.checker()
    tuple_valued = bool(hp.values) and isinstance(hp.values[0], tuple)
    if not isinstance(raw, Mapping):
        if isinstance(raw, list) and not tuple_valued:
            raise invalid(field, raw, FORMS)
        return Dimension(name, "choice", choices=(check(field, raw),))
    if "choices" in raw:
        extra = sorted(set(raw) - {"choices"})
        if extra:
            raise invalid(f"{field}.{extra[0]}", extra[0], "nothing beside choices")
        options = raw["choices"]
        if not isinstance(options, list) or not options:
            raise invalid(f"{field}.choices", options, "a non-empty list of values")
        values = tuple(check(f"{field}.choices[{i}]", v) for i, v in enumerate(options))
        if len(set(values)) != len(values):
            raise invalid(f"{field}.choices", options, "lists without repeated values")
        return Dimension(name, "choice", choices=values)
    for key in raw:
        if key not in RANGE_KEYS:
            raise invalid(f"{field}.{key}", key, (*RANGE_KEYS, "or choices alone"))
    kinds = {_kind(v) for v in hp.values}
    if tuple_valued or not kinds <= {"int", "float"}:
        raise invalid(field, dict(raw), f"{{choices = [...]}} or one value ({name} takes no range)")
    kind = "int" if kinds == {"int"} else "float"
    for key in ("low", "high"):
        if key not in raw:
            raise ConfigError(f"{field}.{key}: missing; allowed: {FORMS}")
    low = _bound(f"{field}.low", raw["low"], kind, check)
    high = _bound(f"{field}.high", raw["high"], kind, check)
    if not low < high:
        raise invalid(field, dict(raw), "low < high")
    log = _checks.flag(f"{field}.log", raw.get("log", False))
    if log and low <= 0:
        raise invalid(f"{field}.low", raw["low"], "numbers > 0 with log = true")
    step = raw.get("step")
    if step is not None:
        if log:
            raise invalid(f"{field}.step", step, "no step with log = true")
        if kind == "int":
            step = _checks.integer(f"{field}.step", step, 1)
        else:
            step = _checks.positive(f"{field}.step", step)
        count = (high - low) / step
        if abs(count - round(count)) > 1e-9 * max(1.0, count):
            raise invalid(f"{field}.step", step, "a step that divides high - low")
    middle = math.sqrt(low * high) if log else (low + high) / 2
    try:
        check(field, int(middle) if kind == "int" else middle)
    except ConfigError:
        allowed = f"{{choices = [...]}}: {name} does not take every number in [low, high]"
        raise invalid(field, dict(raw), allowed) from None
    return Dimension(name, kind, low=low, high=high, log=log, step=step)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "float" if isinstance(value, float) else "other"


def _bound(field: str, value: object, kind: str, check: Any) -> Any:
    if kind == "int":
        value = _checks.integer(field, value, -(2**62), 2**62)
    return check(field, value)
