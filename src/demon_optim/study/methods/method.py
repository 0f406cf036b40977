"""A study method: a builder of the optimizer (and its schedules) plus its hyperparameter grid.

What a trial hands a method (:class:`Budget`), what a method hands back (a torch optimizer,
or a :class:`Training` with the hooks that move its schedules), and :class:`Method`, which
checks configurations and expands grids. The registry is in
:mod:`demon_optim.study.methods.registry`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from demon_optim.errors import ConfigError, invalid
from demon_optim.study.methods.hyperparameters import Hyperparameter, Value

StepHook = Callable[[], object]
EpochHook = Callable[[float], object]
EvalHook = Callable[[], object]


@dataclass(frozen=True)
class Budget:
    """The run a method is built for: T = ``epochs * steps_per_epoch`` optimizer steps.

    ``higher_is_better``: the direction of the task's validation metric (for a schedule that
    watches it, such as decay on plateau).
    """

    epochs: int
    steps_per_epoch: int
    higher_is_better: bool = True

    @property
    def total_steps(self) -> int:
        """T, the trial's number of optimizer steps (what Demon's schedule runs over)."""
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class Training:
    """An optimizer and the hooks that move its schedules, as a method's ``build`` returns.

    The trial calls every ``after_step`` hook (no arguments) after each ``optimizer.step()``,
    and every ``after_epoch`` hook with the epoch's validation metric after each epoch, in
    the order given. Every evaluation of the model (validation after each epoch; test and
    the task's final outputs at the end) runs between the ``before_eval`` hooks and the
    ``after_eval`` hooks: an optimizer that trains at other weights than those it returns
    (Schedule-Free's ``optimizer.eval()`` / ``optimizer.train()``) swaps them there.
    """

    optimizer: torch.optim.Optimizer
    after_step: tuple[StepHook, ...] = ()
    after_epoch: tuple[EpochHook, ...] = ()
    before_eval: tuple[EvalHook, ...] = ()
    after_eval: tuple[EvalHook, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise invalid("Training.optimizer", self.optimizer, "a torch.optim.Optimizer")
        for name in ("after_step", "after_epoch", "before_eval", "after_eval"):
            hooks = tuple(getattr(self, name))
            for i, hook in enumerate(hooks):
                if not callable(hook):
                    raise invalid(f"Training.{name}[{i}]", hook, "callables")
            object.__setattr__(self, name, hooks)


class Build(Protocol):
    """``build(params, *, budget, **hyperparameters) -> Optimizer | Training``."""

    def __call__(
        self, params: Iterable[torch.nn.Parameter], *, budget: Budget, **hyperparameters: Any
    ) -> torch.optim.Optimizer | Training: ...


def applied_reader(optimizer: torch.optim.Optimizer) -> Callable[[], tuple[float, float]]:
    """(lr, momentum) that the last ``optimizer.step()`` used, read from the optimizer.

    An optimizer that reports them (``get_last_lr()``: YellowFin, whose ``group["lr"]`` is a
    factor on its tuned rate; ``get_last_momentum()``: Demon, AggMo, YellowFin) is asked;
    otherwise they are read from the first parameter group: ``lr``, and ``betas[0]`` or
    ``momentum``. What an optimizer does not have (Adagrad has no momentum) reads as NaN,
    which the store records as missing.
    """
    group = optimizer.param_groups[0]
    last_lr = getattr(optimizer, "get_last_lr", None)
    last_momentum = getattr(optimizer, "get_last_momentum", None)

    def number(value: object) -> float:
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return math.nan

    def lr() -> float:
        return number(last_lr()[0]) if last_lr is not None else number(group.get("lr"))

    def momentum() -> float:
        if last_momentum is not None:  # Demon: the group keeps beta_init, the optimizer says
            return number(last_momentum()[0])
        betas = group.get("betas")
        if isinstance(betas, tuple | list) and betas:
            return number(betas[0])
        return number(group.get("momentum"))

    return lambda: (lr(), momentum())


@dataclass(frozen=True)
class Method:
    """A registered method: its builder, its hyperparameters, where the report puts it.

    ``family``: the table and ranking it joins (``sgdm``, ``adam`` or another);
    ``reference``: reported beside the ranking, not in it; ``schedule``: the name the Top-k
    table compares across families (``demon``, ``lr-cosine``; a user's method: its name);
    ``requires``: ``(module, install command)`` of each optional package the builder
    imports, checked by :meth:`check_installed`.
    """

    name: str
    build_fn: Build
    hyperparameters: Mapping[str, Hyperparameter]
    family: str
    reference: bool = False
    schedule: str = ""
    summary: str = ""
    source: str = field(default="", compare=False)  # module.qualname of build_fn
    requires: tuple[tuple[str, str], ...] = ()

    def check_installed(self) -> None:
        """Raise a one-line ConfigError with the install command if a package is missing."""
        for module, install in self.requires:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as error:
                if error.name != module:
                    raise  # the package is there but broken: its own error says more
                raise ConfigError(
                    f"method {self.name}: needs the package {module}, which is not "
                    f"installed: {install}"
                ) from None

    @property
    def hyperparameter_names(self) -> tuple[str, ...]:
        return tuple(self.hyperparameters)

    def default_grid(self) -> dict[str, tuple[Value, ...]]:
        return {name: hp.values for name, hp in self.hyperparameters.items()}

    def check_grid(
        self, overrides: Mapping[str, object], field: str
    ) -> dict[str, tuple[Value, ...]]:
        """Validate grid overrides (``{name: value or list of values}``); normalised values.

        ``field`` prefixes error messages, e.g. ``grid.sgdm``.
        """
        checked: dict[str, tuple[Value, ...]] = {}
        for name, raw in overrides.items():
            if name not in self.hyperparameters:
                raise invalid(f"{field}.{name}", name, self.hyperparameter_names)
            hp = self.hyperparameters[name]
            several = isinstance(raw, list) and not _is_one_tuple(hp, raw)
            values = raw if several else [raw]
            if not values:
                raise invalid(f"{field}.{name}", raw, "a non-empty list of values")
            check = hp.checker()
            normalised = tuple(
                check(f"{field}.{name}[{i}]" if several else f"{field}.{name}", v)
                for i, v in enumerate(values)
            )
            if len(set(normalised)) != len(normalised):
                raise invalid(f"{field}.{name}", raw, "lists without repeated values")
            checked[name] = normalised
        return checked

    def grid(self, overrides: Mapping[str, tuple[Value, ...]] | None = None) -> list[dict]:
        """Every configuration of the grid (defaults updated by checked ``overrides``).

        Order: the product in the order the hyperparameters are declared, the last fastest.
        """
        axes = self.default_grid()
        axes.update(overrides or {})
        configs: list[dict[str, Value]] = [{}]
        for name, values in axes.items():
            configs = [{**config, name: value} for config in configs for value in values]
        return [self._without_legacy(config) for config in configs]

    def _without_legacy(self, config: Mapping[str, Value]) -> dict[str, Value]:
        """``config`` without the hyperparameters at their ``legacy`` value."""
        legacy = {n: hp.legacy for n, hp in self.hyperparameters.items() if hp.legacy is not None}
        return {k: v for k, v in config.items() if k not in legacy or v != legacy[k]}

    def check_config(self, config: Mapping[str, object], field: str = "hyperparameters") -> dict:
        """Validate one complete configuration (every hyperparameter, nothing else).

        A hyperparameter with a ``legacy`` value may be absent (it then has that value); at
        that value it is left out of the result, as :meth:`grid` leaves it out.
        """
        known = self.hyperparameters
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise invalid(f"{field}.{unknown[0]}", unknown[0], self.hyperparameter_names)
        missing = [name for name, hp in known.items() if name not in config and hp.legacy is None]
        if missing:
            raise ConfigError(f"{field}: missing {', '.join(missing)} for method {self.name!r}")
        checked = {
            name: hp.checker()(f"{field}.{name}", config[name])
            for name, hp in known.items()
            if name in config
        }
        return self._without_legacy(checked)

    def build(
        self, params: Iterable[torch.nn.Parameter], config: Mapping[str, Any], budget: Budget
    ) -> Training:
        """The optimizer and schedule hooks for one trial (``config`` already checked).

        Calls ``build(params, budget=budget, **hyperparameters)`` with every hyperparameter
        (those at their ``legacy`` value included) and wraps a bare optimizer in a Training.
        """
        self.check_installed()
        values = {name: config.get(name, hp.legacy) for name, hp in self.hyperparameters.items()}
        built = self.build_fn(params, budget=budget, **values)
        if isinstance(built, Training):
            return built
        if isinstance(built, torch.optim.Optimizer):
            return Training(built)
        raise invalid(
            f"method {self.name}: build() returned",
            built,
            "a torch.optim.Optimizer or a demon_optim.study.Training",
        )


def _is_one_tuple(hp: Hyperparameter, raw: list) -> bool:
    """True if ``raw`` is one tuple-valued setting (``[0.95, 0.85]``), not a list of them."""
    tuple_valued = bool(hp.values) and isinstance(hp.values[0], tuple)
    return tuple_valued and bool(raw) and not isinstance(raw[0], list)
