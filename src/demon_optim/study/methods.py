"""The methods registry: a method is a base optimizer + a learning-rate schedule + a momentum
schedule, with its tunable hyperparameters and their default grids.

The shapes and their torch equivalents are those of ``docs/optimizers.md`` ("The other
schedule shapes"; ``k``: optimizer steps taken, ``T``: the run's total steps, ``E``: epochs):

==================  ===============================================================
lr schedule         torch class (stepped after every optimizer step, or per epoch)
==================  ===============================================================
constant            none
step                ``MultiStepLR(milestones=[round(f*E) ...], gamma=0.1)``, per epoch
cosine              ``CosineAnnealingLR(T_max=T, eta_min=0)``, per step
linear              ``LinearLR(start_factor=1, end_factor=0, total_iters=T)``, per step
exponential         ``ExponentialLR(gamma=exp(-5/E))``, per epoch
plateau             ``ReduceLROnPlateau(factor=0.1, patience=5, threshold=1e-4)`` on the
                    validation metric, per epoch; mode from the metric's direction
onecycle            ``OneCycleLR(max_lr=lr, total_steps=T, pct_start=0.3, div_factor=25,
                    final_div_factor=1e4, anneal_strategy="cos", cycle_momentum=True)``
==================  ===============================================================

Momentum schedules (``constant``, ``cosine``, ``linear``, ``exponential``, ``onecycle``) run
through :class:`demon_optim.MomentumScheduler`, which writes ``group["momentum"]`` (SGD) or
``group["betas"][0]`` (Adam); ``demon`` is :class:`demon_optim.DemonSGD` /
:class:`demon_optim.DemonAdam` themselves.

The hyperparameter ``momentum`` is SGD's momentum or Adam's ``beta1``; for a momentum decay
it is ``beta_init``. Adding a method is one entry in :data:`_VARIANTS` (both families) or one
:func:`register` call.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from demon_optim.errors import ConfigError, invalid

Value = float | tuple[float, ...]
"""A hyperparameter value: a float, or a tuple of floats (e.g. OneCycle's momentum range)."""

StepHook = Callable[[], object]
EpochHook = Callable[[float], object]

# Column names of the export that a hyperparameter may not take.
RESERVED_NAMES = frozenset(
    {"trial_id", "task", "method", "seed", "epochs", "batch_size", "status", "error"}
)


# --- hyperparameter checks: (field, raw value) -> normalised value, or ConfigError ----------


def _number(field: str, value: object, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid(field, value, allowed)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range (TOML integers are unbounded here)
        raise invalid(field, value, allowed) from None
    if not math.isfinite(number):
        raise invalid(field, value, allowed)
    return number


def _positive(field: str, value: object) -> float:
    allowed = "numbers > 0"
    number = _number(field, value, allowed)
    if number <= 0:
        raise invalid(field, value, allowed)
    return number


def _non_negative(field: str, value: object) -> float:
    allowed = "numbers >= 0"
    number = _number(field, value, allowed)
    if number < 0:
        raise invalid(field, value, allowed)
    return number


def _unit_interval(field: str, value: object) -> float:
    allowed = "numbers in [0, 1)"
    number = _number(field, value, allowed)
    if not 0.0 <= number < 1.0:
        raise invalid(field, value, allowed)
    return number


def _momentum_range(field: str, value: object) -> tuple[float, float]:
    allowed = "pairs [max_momentum, base_momentum] with 0 <= base <= max < 1, e.g. [0.95, 0.85]"
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise invalid(field, value, allowed)
    top, low = (_unit_interval(field, v) for v in value)
    if low > top:
        raise invalid(field, value, allowed)
    return (top, low)


def _closed_unit_interval(field: str, value: object) -> float:
    allowed = "numbers in [0, 1]"
    number = _number(field, value, allowed)
    if not 0.0 <= number <= 1.0:
        raise invalid(field, value, allowed)
    return number


def _switch(field: str, value: object) -> float:
    """An on/off hyperparameter: ``true``/``false`` or 1/0, kept as 1.0/0.0 (a Value)."""
    allowed = "true or false (or 1 or 0)"
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real) and value in (0, 1):
        return float(value)
    raise invalid(field, value, allowed)


def _betas(field: str, value: object) -> tuple[float, ...]:
    allowed = "non-empty lists of numbers in [0, 1), e.g. [0, 0.9, 0.99]"
    if not isinstance(value, list | tuple) or not value:
        raise invalid(field, value, allowed)
    return tuple(_unit_interval(field, v) for v in value)


def _milestones(field: str, value: object) -> tuple[float, ...]:
    allowed = "increasing lists of fractions in (0, 1), e.g. [0.5, 0.75]"
    if not isinstance(value, list | tuple) or not value:
        raise invalid(field, value, allowed)
    fractions = tuple(_unit_interval(field, v) for v in value)
    if fractions[0] <= 0 or any(b <= a for a, b in itertools.pairwise(fractions)):
        raise invalid(field, value, allowed)
    return fractions


@dataclass(frozen=True)
class Hyperparameter:
    """A tunable hyperparameter: its name, default grid and validator.

    ``legacy``: for a hyperparameter added to a method after trials of it were stored, the
    value those trials ran with. A configuration at that value leaves the name out (and a
    configuration without the name means it), so a trial's id, the hash of its
    configuration, keeps its meaning; other values make new ids.
    """

    name: str
    grid: tuple[Value, ...]
    check: Callable[[str, object], Value]
    help: str
    legacy: Value | None = None

    def __post_init__(self) -> None:
        if self.name in RESERVED_NAMES:
            raise ValueError(f"hyperparameter name {self.name!r} is reserved")
        for value in self.grid:
            self.check(self.name, value)
        if self.legacy is not None:
            self.check(self.name, self.legacy)

    def value(self, config: Mapping[str, Any]) -> Any:
        """This hyperparameter's value in a checked configuration (absent: ``legacy``)."""
        return config.get(self.name, self.legacy)


def _lr(grid: tuple[float, ...]) -> Hyperparameter:
    return Hyperparameter("lr", grid, _positive, "learning rate (OneCycle: the peak)")


MOMENTUM = Hyperparameter(
    "momentum",
    (0.9, 0.95, 0.97),
    _unit_interval,
    "SGD momentum or Adam beta1; beta_init of a momentum decay",
)
WEIGHT_DECAY = Hyperparameter("weight_decay", (0.0,), _non_negative, "L2 weight decay")
DECOUPLED_WEIGHT_DECAY = Hyperparameter(
    "weight_decay", (1e-2,), _non_negative, "decoupled weight decay (AdamW)"
)
MOMENTUM_RANGE = Hyperparameter(
    "momentum_range",
    ((0.95, 0.85), (0.9, 0.85), (0.95, 0.9)),
    _momentum_range,
    "OneCycle (max_momentum, base_momentum)",
)
MILESTONES = Hyperparameter(
    "milestones",
    ((0.5, 0.75),),
    _milestones,
    "fractions f of the epoch budget E: lr *= 0.1 at epoch round(f*E)",
)
DELAY = Hyperparameter(
    "delay", (0.0,), _unit_interval, "fraction of the run before the Demon decay starts"
)
# The reference optimizers' own hyperparameters, at the defaults their papers recommend.
QHM_MOMENTUM = Hyperparameter(
    "momentum", (0.999,), _unit_interval, "QHM beta (EMA factor of the momentum buffer)"
)
QHADAM_MOMENTUM = Hyperparameter("momentum", (0.995,), _unit_interval, "QHAdam beta1")
NU = Hyperparameter(
    "nu", (0.7,), _closed_unit_interval, "QHM nu / QHAdam nu1: weight of the momentum in a step"
)
AGGMO_BETAS = Hyperparameter(
    "betas", ((0.0, 0.9, 0.99),), _betas, "AggMo damping factors (one buffer each)"
)
LR_FACTOR = Hyperparameter(
    "lr", (1.0,), _positive, "YellowFin: factor on the learning rate its tuner sets"
)
# YellowFin's options added after its first trials: ``legacy`` is how those ran (see
# docs/reference-optimizers.md); the grids are YellowFin's defaults, the authors' code.
YF_INITIAL_LR = Hyperparameter(
    "initial_lr", (1.0,), _non_negative, "YellowFin: the tuner's starting lr", legacy=1e-3
)
YF_SMOOTH = Hyperparameter(
    "smooth", (1.0,), _switch, "YellowFin: apply EMA-smoothed tuned values", legacy=1.0
)
YF_SLOW_START = Hyperparameter(
    "slow_start", (1.0,), _switch, "YellowFin: ramp the tuned lr over 10 windows", legacy=0.0
)
YF_ADAPT_CLIP = Hyperparameter(
    "adapt_clip", (1.0,), _switch, "YellowFin: the authors' adaptive clipping", legacy=0.0
)
YF_SPARSITY_DEBIAS = Hyperparameter(
    "sparsity_debias", (0.0,), _switch, "YellowFin: debias for sparse gradients", legacy=0.0
)
YF_RESTART = Hyperparameter(
    "restart_at_zero_momentum",
    (1.0,),
    _switch,
    "YellowFin: a step with momentum 0 keeps no buffer (torch SGD)",
    legacy=0.0,
)
YELLOWFIN_OPTIONS = (
    YF_INITIAL_LR,
    YF_SMOOTH,
    YF_SLOW_START,
    YF_ADAPT_CLIP,
    YF_SPARSITY_DEBIAS,
    YF_RESTART,
)


# --- what a trial gets from a method ----------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """The run a method is built for: T = epochs * steps_per_epoch optimizer steps."""

    epochs: int
    steps_per_epoch: int
    higher_is_better: bool = True  # direction of the validation metric (for lr-plateau)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class Training:
    """An optimizer and the hooks that move its schedules.

    The trial calls every ``after_step`` hook after each ``optimizer.step()`` and every
    ``after_epoch`` hook with the epoch's validation metric. ``applied()`` returns the
    (learning rate, momentum) the last ``optimizer.step()`` used; call it before the
    ``after_step`` hooks move them.
    """

    optimizer: torch.optim.Optimizer
    after_step: tuple[StepHook, ...]
    after_epoch: tuple[EpochHook, ...]
    applied: Callable[[], tuple[float, float]]


# --- base optimizers --------------------------------------------------------------------------


def _initial_momentum(hp: Mapping[str, Value]) -> float:
    if "momentum_range" in hp:  # OneCycle starts at its max momentum
        return hp["momentum_range"][0]  # type: ignore[index]
    return hp["momentum"]  # type: ignore[return-value]


def _sgd(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=hp["lr"], momentum=_initial_momentum(hp), weight_decay=hp["weight_decay"]
    )


def _adam(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> torch.optim.Optimizer:
    betas = (_initial_momentum(hp), 0.999)
    return torch.optim.Adam(params, lr=hp["lr"], betas=betas, weight_decay=hp["weight_decay"])


def _amsgrad(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> torch.optim.Optimizer:
    betas = (hp["momentum"], 0.999)
    return torch.optim.Adam(
        params, lr=hp["lr"], betas=betas, weight_decay=hp["weight_decay"], amsgrad=True
    )


def _adamw(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> torch.optim.Optimizer:
    betas = (hp["momentum"], 0.999)
    return torch.optim.AdamW(params, lr=hp["lr"], betas=betas, weight_decay=hp["weight_decay"])


def _demon_sgd(
    params: Iterable[Any], hp: Mapping[str, Any], budget: Budget
) -> torch.optim.Optimizer:
    from demon_optim import DemonSGD

    return DemonSGD(
        params,
        lr=hp["lr"],
        momentum=hp["momentum"],
        weight_decay=hp["weight_decay"],
        total_steps=budget.total_steps,
        delay=hp["delay"],
    )


def _demon_adam(
    params: Iterable[Any], hp: Mapping[str, Any], budget: Budget
) -> torch.optim.Optimizer:
    from demon_optim import DemonAdam

    return DemonAdam(
        params,
        lr=hp["lr"],
        betas=(hp["momentum"], 0.999),
        weight_decay=hp["weight_decay"],
        total_steps=budget.total_steps,
        delay=hp["delay"],
    )


def _qhm(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> torch.optim.Optimizer:
    from demon_optim import QHM

    return QHM(
        params, lr=hp["lr"], momentum=hp["momentum"], nu=hp["nu"], weight_decay=hp["weight_decay"]
    )


def _qhadam(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> torch.optim.Optimizer:
    from demon_optim import QHAdam

    return QHAdam(
        params,
        lr=hp["lr"],
        betas=(hp["momentum"], 0.999),
        nus=(hp["nu"], 1.0),
        weight_decay=hp["weight_decay"],
    )


def _aggmo(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> torch.optim.Optimizer:
    from demon_optim import AggMo

    return AggMo(params, lr=hp["lr"], betas=hp["betas"], weight_decay=hp["weight_decay"])


def _yellowfin(
    params: Iterable[Any], hp: Mapping[str, Any], budget: Budget
) -> torch.optim.Optimizer:
    from demon_optim import YellowFin

    options = {option.name: option.value(hp) for option in YELLOWFIN_OPTIONS}
    flags = {name: bool(value) for name, value in options.items() if name != "initial_lr"}
    return YellowFin(
        params,
        lr=hp["lr"],
        weight_decay=hp["weight_decay"],
        initial_lr=options["initial_lr"],
        **flags,
    )


OptimizerBuilder = Callable[[Iterable[Any], Mapping[str, Any], Budget], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerBuilder] = {
    "sgd": _sgd,
    "adam": _adam,
    "amsgrad": _amsgrad,
    "adamw": _adamw,
    "demon-sgd": _demon_sgd,
    "demon-adam": _demon_adam,
    "qhm": _qhm,
    "qhadam": _qhadam,
    "aggmo": _aggmo,
    "yellowfin": _yellowfin,
}


# --- schedules: each returns (after_step hook, after_epoch hook), either may be None ---------

Hooks = tuple[StepHook | None, EpochHook | None]
ScheduleBuilder = Callable[[torch.optim.Optimizer, Mapping[str, Any], Budget], Hooks]

lrs = torch.optim.lr_scheduler


def _no_schedule(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    return None, None


def _lr_step(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    milestones = sorted({round(f * budget.epochs) for f in hp["milestones"]})
    scheduler = lrs.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    return None, lambda metric: scheduler.step()


def _lr_cosine(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    return lrs.CosineAnnealingLR(opt, T_max=budget.total_steps, eta_min=0.0).step, None


def _lr_linear(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    scheduler = lrs.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=budget.total_steps)
    return scheduler.step, None


def _lr_exponential(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    scheduler = lrs.ExponentialLR(opt, gamma=math.exp(-5.0 / budget.epochs))
    return None, lambda metric: scheduler.step()


def _lr_plateau(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    mode = "max" if budget.higher_is_better else "min"
    scheduler = lrs.ReduceLROnPlateau(opt, mode=mode, factor=0.1, patience=5, threshold=1e-4)
    return None, scheduler.step


def _onecycle(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    top, low = hp["momentum_range"]
    scheduler = lrs.OneCycleLR(
        opt,
        max_lr=hp["lr"],
        total_steps=budget.total_steps,
        pct_start=0.3,
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1e4,
        cycle_momentum=True,
        base_momentum=low,
        max_momentum=top,
    )
    return scheduler.step, None


def _momentum_shape(name: str) -> ScheduleBuilder:
    def build(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
        from demon_optim import MomentumScheduler

        scheduler = MomentumScheduler(opt, schedule=name, total_steps=budget.total_steps)
        return scheduler.step, None

    return build


def _momentum_onecycle(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    from demon_optim import MomentumScheduler, schedules

    # The optimizer was built with momentum = max_momentum: the curve's beta_init.
    low = hp["momentum_range"][1]
    shape = schedules.get("one_cycle", base_momentum=low, pct_start=0.3)
    scheduler = MomentumScheduler(opt, schedule=shape, total_steps=budget.total_steps)
    return scheduler.step, None


LR_SCHEDULES: dict[str, ScheduleBuilder] = {
    "constant": _no_schedule,
    "step": _lr_step,
    "cosine": _lr_cosine,
    "linear": _lr_linear,
    "exponential": _lr_exponential,
    "plateau": _lr_plateau,
    "onecycle": _onecycle,
}

MOMENTUM_SCHEDULES: dict[str, ScheduleBuilder] = {
    "constant": _no_schedule,
    "demon": _no_schedule,  # inside DemonSGD / DemonAdam
    "onecycle (with lr)": _no_schedule,  # OneCycleLR cycles the momentum itself
    "onecycle": _momentum_onecycle,
    "cosine": _momentum_shape("cosine"),
    "linear": _momentum_shape("linear"),
    "exponential": _momentum_shape("exponential"),
    "tuned": _no_schedule,  # YellowFin's tuner sets lr and momentum every step
}


def _applied_reader(opt: torch.optim.Optimizer) -> Callable[[], tuple[float, float]]:
    """(lr, momentum) that the last optimizer.step() used, read from the optimizer.

    An optimizer that reports them (``get_last_lr()``: YellowFin, whose ``group["lr"]`` is a
    factor on its tuned rate; ``get_last_momentum()``: Demon, AggMo, YellowFin) is asked;
    otherwise they are read from the first parameter group.
    """
    group = opt.param_groups[0]
    last_lr = getattr(opt, "get_last_lr", None)
    last_momentum = getattr(opt, "get_last_momentum", None)

    def lr() -> float:
        return float(last_lr()[0]) if last_lr is not None else float(group["lr"])

    if last_momentum is not None:  # Demon: the group keeps beta_init, the optimizer reports
        return lambda: (lr(), float(last_momentum()[0]))
    if "betas" in group:
        return lambda: (lr(), float(group["betas"][0]))
    return lambda: (lr(), float(group["momentum"]))


# --- the method -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One entry of the registry: optimizer + lr schedule + momentum schedule + grids."""

    name: str
    family: str  # "sgdm" or "adam": the base optimizer family the paper ranks within
    optimizer: str  # key of OPTIMIZERS
    lr_schedule: str  # key of LR_SCHEDULES
    momentum_schedule: str  # key of MOMENTUM_SCHEDULES
    hyperparameters: tuple[Hyperparameter, ...]
    summary: str
    reference: bool = False  # a reference optimizer outside the paper's schedule ranking

    def __post_init__(self) -> None:
        names = [hp.name for hp in self.hyperparameters]
        if len(set(names)) != len(names):
            raise ValueError(f"method {self.name!r} lists a hyperparameter twice: {names}")
        for table, key in (
            (OPTIMIZERS, self.optimizer),
            (LR_SCHEDULES, self.lr_schedule),
            (MOMENTUM_SCHEDULES, self.momentum_schedule),
        ):
            if key not in table:
                raise ValueError(f"method {self.name!r}: unknown component {key!r}")

    @property
    def hyperparameter_names(self) -> tuple[str, ...]:
        return tuple(hp.name for hp in self.hyperparameters)

    def default_grid(self) -> dict[str, tuple[Value, ...]]:
        return {hp.name: hp.grid for hp in self.hyperparameters}

    def check_grid(
        self, overrides: Mapping[str, object], field: str
    ) -> dict[str, tuple[Value, ...]]:
        """Validate grid overrides (``{name: value or list of values}``); normalised values.

        ``field`` prefixes error messages, e.g. ``grid.sgdm``.
        """
        known = {hp.name: hp for hp in self.hyperparameters}
        checked: dict[str, tuple[Value, ...]] = {}
        for name, raw in overrides.items():
            if name not in known:
                raise invalid(f"{field}.{name}", name, self.hyperparameter_names)
            hp = known[name]
            values = raw if isinstance(raw, list) and not _is_pair_grid(hp, raw) else [raw]
            if not values:
                raise invalid(f"{field}.{name}", raw, "a non-empty list of values")
            normalised = tuple(hp.check(f"{field}.{name}[{i}]", v) for i, v in enumerate(values))
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
        legacy = {hp.name: hp.legacy for hp in self.hyperparameters if hp.legacy is not None}
        return {k: v for k, v in config.items() if k not in legacy or v != legacy[k]}

    def check_config(self, config: Mapping[str, object], field: str = "hyperparameters") -> dict:
        """Validate one complete configuration (every hyperparameter, nothing else).

        A hyperparameter with a ``legacy`` value may be absent (it then has that value); at
        that value it is left out of the result, as :meth:`grid` leaves it out.
        """
        known = {hp.name: hp for hp in self.hyperparameters}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise invalid(f"{field}.{unknown[0]}", unknown[0], self.hyperparameter_names)
        missing = [name for name, hp in known.items() if name not in config and hp.legacy is None]
        if missing:
            raise ConfigError(f"{field}: missing {', '.join(missing)} for method {self.name!r}")
        checked = {
            name: known[name].check(f"{field}.{name}", config[name])
            for name in known
            if name in config
        }
        return self._without_legacy(checked)

    def build(
        self, params: Iterable[torch.nn.Parameter], config: Mapping[str, Any], budget: Budget
    ) -> Training:
        """The optimizer and schedule hooks for one trial (``config`` already checked)."""
        optimizer = OPTIMIZERS[self.optimizer](params, config, budget)
        after_step: list[StepHook] = []
        after_epoch: list[EpochHook] = []
        for builder in (LR_SCHEDULES[self.lr_schedule], MOMENTUM_SCHEDULES[self.momentum_schedule]):
            step_hook, epoch_hook = builder(optimizer, config, budget)
            if step_hook is not None:
                after_step.append(step_hook)
            if epoch_hook is not None:
                after_epoch.append(epoch_hook)
        return Training(
            optimizer, tuple(after_step), tuple(after_epoch), _applied_reader(optimizer)
        )


def _is_pair_grid(hp: Hyperparameter, raw: list) -> bool:
    """True if ``raw`` is one tuple-valued setting (``[0.95, 0.85]``), not a list of them."""
    tuple_valued = bool(hp.grid) and isinstance(hp.grid[0], tuple)
    return tuple_valued and bool(raw) and not isinstance(raw[0], list)


# --- the registry -----------------------------------------------------------------------------

_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (its name must be new)."""
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The method called ``name``; a ConfigError listing the choices if there is none."""
    try:
        return _METHODS[name]
    except KeyError:
        raise invalid("method", name, method_names()) from None


def method_names() -> list[str]:
    """Registered method names, in registry order (SGDM family, then Adam family)."""
    return list(_METHODS)


def list_methods() -> list[Method]:
    return list(_METHODS.values())


@dataclass(frozen=True)
class _Family:
    name: str  # "sgdm" / "adam"
    label: str
    optimizer: str
    demon_optimizer: str
    demon_lr: tuple[float, ...]
    lr: tuple[float, ...]


SGDM = _Family(
    "sgdm", "SGD momentum", "sgd", "demon-sgd", (0.01, 0.03, 0.1, 0.3), (0.01, 0.03, 0.1, 0.3)
)
# Undamped Demon Adam accumulates m = beta*m + g (about g/(1-beta)): its good learning rates
# are about (1 - beta_init) times Adam's, hence Adam's grid times 0.1.
ADAM = _Family(
    "adam", "Adam", "adam", "demon-adam", (1e-5, 3e-5, 1e-4, 3e-4), (1e-4, 3e-4, 1e-3, 3e-3)
)

# (name suffix, lr schedule, momentum schedule, extra hyperparameters, summary): one line per
# method of the paper's comparison, registered for both families.
_VARIANTS: tuple[tuple[str, str, str, tuple[Hyperparameter, ...], str], ...] = (
    ("", "constant", "constant", (), "constant lr and momentum"),
    ("+lr-step", "step", "constant", (MILESTONES,), "lr x0.1 at milestone epochs (MultiStepLR)"),
    ("+lr-cosine", "cosine", "constant", (), "cosine lr decay to 0 (CosineAnnealingLR, per step)"),
    ("+lr-linear", "linear", "constant", (), "linear lr decay to 0 (LinearLR, per step)"),
    ("+lr-exponential", "exponential", "constant", (), "lr x exp(-5/E) per epoch (ExponentialLR)"),
    (
        "+lr-plateau",
        "plateau",
        "constant",
        (),
        "lr x0.1 when val stalls 5 epochs (ReduceLROnPlateau)",
    ),
    ("+onecycle", "onecycle", "onecycle (with lr)", (), "OneCycleLR: lr and momentum cycles"),
    ("+mom-onecycle", "constant", "onecycle", (), "OneCycle momentum cycle only, constant lr"),
    ("+mom-cosine", "constant", "cosine", (), "cosine momentum decay to 0, constant lr"),
    ("+mom-linear", "constant", "linear", (), "linear momentum decay to 0, constant lr"),
    ("+mom-exponential", "constant", "exponential", (), "momentum x exp(-5k/T), constant lr"),
)


def _register_family(family: _Family) -> None:
    for suffix, lr_schedule, momentum_schedule, extra, summary in _VARIANTS:
        momentum = MOMENTUM_RANGE if "onecycle" in momentum_schedule else MOMENTUM
        register(
            Method(
                name=family.name + suffix,
                family=family.name,
                optimizer=family.optimizer,
                lr_schedule=lr_schedule,
                momentum_schedule=momentum_schedule,
                hyperparameters=(_lr(family.lr), momentum, WEIGHT_DECAY, *extra),
                summary=f"{family.label}: {summary}",
            )
        )
    register(
        Method(
            name=f"demon-{family.name}",
            family=family.name,
            optimizer=family.demon_optimizer,
            lr_schedule="constant",
            momentum_schedule="demon",
            hyperparameters=(_lr(family.demon_lr), MOMENTUM, WEIGHT_DECAY, DELAY),
            summary=f"Demon {family.label}: momentum decay beta_k = b(T-k)/(T-b*k), constant lr",
        )
    )


_register_family(SGDM)
_register_family(ADAM)
register(
    Method(
        name="amsgrad",
        family="adam",
        optimizer="amsgrad",
        lr_schedule="constant",
        momentum_schedule="constant",
        hyperparameters=(_lr(ADAM.lr), MOMENTUM, WEIGHT_DECAY),
        summary="AMSGrad (torch Adam, amsgrad=True), constant lr; reference",
        reference=True,
    )
)
register(
    Method(
        name="adamw",
        family="adam",
        optimizer="adamw",
        lr_schedule="constant",
        momentum_schedule="constant",
        hyperparameters=(_lr(ADAM.lr), MOMENTUM, DECOUPLED_WEIGHT_DECAY),
        summary="AdamW (torch AdamW, decoupled weight decay), constant lr; reference",
        reference=True,
    )
)


# The paper's other momentum methods, reported beside its ranking (docs/reference-optimizers.md).
register(
    Method(
        name="qhm+lr-step",
        family="sgdm",
        optimizer="qhm",
        lr_schedule="step",
        momentum_schedule="constant",
        hyperparameters=(
            _lr((0.1, 0.3, 1.0, 3.0)),  # QHM's lr is SGD momentum's lr / (1 - beta)
            QHM_MOMENTUM,
            NU,
            WEIGHT_DECAY,
            MILESTONES,
        ),
        summary="QHM (quasi-hyperbolic momentum), lr x0.1 at milestone epochs; reference",
        reference=True,
    )
)
register(
    Method(
        name="aggmo+lr-step",
        family="sgdm",
        optimizer="aggmo",
        lr_schedule="step",
        momentum_schedule="constant",
        hyperparameters=(_lr((0.003, 0.01, 0.03, 0.1)), AGGMO_BETAS, WEIGHT_DECAY, MILESTONES),
        summary="AggMo (aggregated momentum), lr x0.1 at milestone epochs; reference",
        reference=True,
    )
)
register(
    Method(
        name="qhadam",
        family="adam",
        optimizer="qhadam",
        lr_schedule="constant",
        momentum_schedule="constant",
        hyperparameters=(_lr(ADAM.lr), QHADAM_MOMENTUM, NU, WEIGHT_DECAY),
        summary="QHAdam (betas=(momentum, 0.999), nus=(nu, 1)), constant lr; reference",
        reference=True,
    )
)
register(
    Method(
        name="yellowfin",
        family="adam",
        optimizer="yellowfin",
        lr_schedule="constant",
        momentum_schedule="tuned",
        hyperparameters=(LR_FACTOR, WEIGHT_DECAY, *YELLOWFIN_OPTIONS),
        summary="YellowFin: lr and momentum tuned every step (lr: a factor); reference",
        reference=True,
    )
)


def format_value(value: Value) -> str:
    """A hyperparameter value as people write it: ``0.1``, ``1e-05``, ``0.95/0.85``."""
    if isinstance(value, tuple):
        return "/".join(format_value(v) for v in value)
    return f"{value:g}"


def format_config(config: Mapping[str, Value], names: Iterable[str] | None = None) -> str:
    """``lr=0.1, momentum=0.9`` (only ``names``, in config order, when given)."""
    keep = None if names is None else set(names)
    return ", ".join(
        f"{name}={format_value(value)}"
        for name, value in config.items()
        if keep is None or name in keep
    )
