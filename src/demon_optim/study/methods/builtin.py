"""The built-in methods: the paper's comparison (each schedule, both families, and Demon) and
the reference optimizers, registered through :func:`register_method` as a user's method is.

A built-in method is a base optimizer + a learning-rate schedule + a momentum schedule. The
shapes and their torch equivalents (``k``: optimizer steps taken, ``T``: the run's total
steps, ``E``: epochs; see ``docs/optimizers.md``, "The other schedule shapes"):

==================  ===============================================================
lr schedule         torch class (stepped after every optimizer step, or per epoch)
==================  ===============================================================
constant            none
step                ``MultiStepLR(milestones=[round(f*E) ...], gamma=0.1)``, per epoch
cosine              ``CosineAnnealingLR(T_max=T, eta_min=0)``, per step
linear              ``LinearLR(start_factor=1, end_factor=0, total_iters=T)``, per step
warmup-linear       BERT's: ``LambdaLR`` with ``k/W`` for ``k < W``, then
                    ``(T-k)/(T-W)``; ``W = round(warmup*T)``, per step (the Hugging Face
                    ``get_linear_schedule_with_warmup``)
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
it is ``beta_init``. Adding a method of the comparison is one entry in :data:`_VARIANTS`
(registered for both families).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from demon_optim import _checks
from demon_optim.study.methods.hyperparameters import (
    Hyperparameter,
    Value,
    betas,
    milestones,
    momentum_range,
    switch,
)
from demon_optim.study.methods.method import Budget, EpochHook, StepHook, Training
from demon_optim.study.methods.registry import register_method


def _lr(grid: tuple[float, ...]) -> Hyperparameter:
    return Hyperparameter(grid, _checks.learning_rate, "learning rate (OneCycle: the peak)")


MOMENTUM = Hyperparameter(
    (0.9, 0.95, 0.97),
    _checks.unit_interval,
    "SGD momentum or Adam beta1; beta_init of a momentum decay",
)
WEIGHT_DECAY = Hyperparameter((0.0,), _checks.nonnegative, "L2 weight decay")
DECOUPLED_WEIGHT_DECAY = Hyperparameter(
    (1e-2,), _checks.nonnegative, "decoupled weight decay (AdamW)"
)
MOMENTUM_RANGE = Hyperparameter(
    ((0.95, 0.85), (0.9, 0.85), (0.95, 0.9)),
    momentum_range,
    "OneCycle (max_momentum, base_momentum)",
)
MILESTONES = Hyperparameter(
    ((0.5, 0.75),),
    milestones,
    "fractions f of the epoch budget E: lr *= 0.1 at epoch round(f*E)",
)
WARMUP = Hyperparameter(
    (0.1,), _checks.unit_interval, "fraction of the run over which the lr warms up from 0"
)
DELAY = Hyperparameter(
    (0.0,), _checks.unit_interval, "fraction of the run before the Demon decay starts"
)
# The reference optimizers' own hyperparameters, at the defaults their papers recommend.
QHM_MOMENTUM = Hyperparameter(
    (0.999,), _checks.unit_interval, "QHM beta (EMA factor of the momentum buffer)"
)
QHADAM_MOMENTUM = Hyperparameter((0.995,), _checks.unit_interval, "QHAdam beta1")
NU = Hyperparameter(
    (0.7,), _checks.closed_unit_interval, "QHM nu / QHAdam nu1: weight of the momentum in a step"
)
AGGMO_BETAS = Hyperparameter(((0.0, 0.9, 0.99),), betas, "AggMo damping factors (one buffer each)")
LR_FACTOR = Hyperparameter(
    (1.0,), _checks.learning_rate, "YellowFin: factor on the learning rate its tuner sets"
)
# YellowFin's options added after its first trials: ``legacy`` is how those ran (see
# docs/reference-optimizers.md); the grids are YellowFin's defaults, the authors' code.
YF_INITIAL_LR = Hyperparameter(
    (1.0,), _checks.nonnegative, "YellowFin: the tuner's starting lr", legacy=1e-3
)
YF_SMOOTH = Hyperparameter((1.0,), switch, "YellowFin: apply EMA-smoothed tuned values", legacy=1.0)
YF_SLOW_START = Hyperparameter(
    (1.0,), switch, "YellowFin: ramp the tuned lr over 10 windows", legacy=0.0
)
YF_ADAPT_CLIP = Hyperparameter(
    (1.0,), switch, "YellowFin: the authors' adaptive clipping", legacy=0.0
)
YF_SPARSITY_DEBIAS = Hyperparameter(
    (0.0,), switch, "YellowFin: debias for sparse gradients", legacy=0.0
)
YF_RESTART = Hyperparameter(
    (1.0,),
    switch,
    "YellowFin: a step with momentum 0 keeps no buffer (torch SGD)",
    legacy=0.0,
)
YELLOWFIN_OPTIONS = {
    "initial_lr": YF_INITIAL_LR,
    "smooth": YF_SMOOTH,
    "slow_start": YF_SLOW_START,
    "adapt_clip": YF_ADAPT_CLIP,
    "sparsity_debias": YF_SPARSITY_DEBIAS,
    "restart_at_zero_momentum": YF_RESTART,
}


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

    options = {name: hp[name] for name in YELLOWFIN_OPTIONS}  # legacy values filled in
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


def _lr_warmup_linear(opt: torch.optim.Optimizer, hp: Mapping[str, Any], budget: Budget) -> Hooks:
    total = budget.total_steps
    warm = round(hp["warmup"] * total)

    def factor(k: int) -> float:  # BERT's: 0 -> 1 over W steps, then linearly to 0 at T
        if k < warm:
            return k / warm
        return max(0.0, (total - k) / max(1, total - warm))

    return lrs.LambdaLR(opt, factor).step, None


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
    "warmup-linear": _lr_warmup_linear,
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


WATCHES_METRIC = frozenset({"plateau"})
"""The lr schedules whose epoch hook reads the validation metric (the others' epoch hooks,
``step`` and ``exponential``, ignore it): two trials of one configuration follow the same
schedule unless it watches their metrics."""


@dataclass(frozen=True)
class Composition:
    """What a built-in method is made of: keys of :data:`OPTIMIZERS`, :data:`LR_SCHEDULES`
    and :data:`MOMENTUM_SCHEDULES`. Carried by the method's ``build`` (see
    :func:`composition`), so that code which treats some combinations specially (batched
    trials) finds them without guessing from the method's name."""

    optimizer: str
    lr_schedule: str
    momentum_schedule: str


def composition(build: object) -> Composition | None:
    """The :class:`Composition` of a built-in method's ``build``; None for any other builder
    (a user's method, today's baselines)."""
    found = getattr(build, "composition", None)
    return found if isinstance(found, Composition) else None


def _compose(optimizer: str, lr_schedule: str, momentum_schedule: str) -> Callable[..., Training]:
    """A method's build(): the base optimizer, then its lr schedule's and momentum schedule's
    hooks, in that order (the order the trial calls them in). The function carries its
    :class:`Composition` as ``build.composition``."""

    def build(params: Iterable[Any], *, budget: Budget, **hp: Any) -> Training:
        opt = OPTIMIZERS[optimizer](params, hp, budget)
        after_step: list[StepHook] = []
        after_epoch: list[EpochHook] = []
        for schedule in (LR_SCHEDULES[lr_schedule], MOMENTUM_SCHEDULES[momentum_schedule]):
            step_hook, epoch_hook = schedule(opt, hp, budget)
            if step_hook is not None:
                after_step.append(step_hook)
            if epoch_hook is not None:
                after_epoch.append(epoch_hook)
        return Training(opt, tuple(after_step), tuple(after_epoch))

    parts = Composition(optimizer, lr_schedule, momentum_schedule)
    build.composition = parts  # type: ignore[attr-defined]
    return build


def _schedule_name(lr_schedule: str, momentum_schedule: str) -> str:
    """The name the Top-k table compares across families: the same for SGDM and Adam."""
    if momentum_schedule == "demon":
        return "demon"
    if lr_schedule == "onecycle":
        return "onecycle"
    if lr_schedule != "constant":
        return f"lr-{lr_schedule}"
    if momentum_schedule != "constant":
        return f"mom-{momentum_schedule}"
    return "none"


def _register(
    name: str,
    family: str,
    optimizer: str,
    lr_schedule: str,
    momentum_schedule: str,
    hyperparameters: Mapping[str, Hyperparameter],
    summary: str,
    reference: bool = False,
) -> None:
    register_method(
        name,
        build=_compose(optimizer, lr_schedule, momentum_schedule),
        grid=hyperparameters,
        family=family,
        reference=reference,
        schedule=name if reference else _schedule_name(lr_schedule, momentum_schedule),
        summary=summary,
    )


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
_VARIANTS: tuple[tuple[str, str, str, dict[str, Hyperparameter], str], ...] = (
    ("", "constant", "constant", {}, "constant lr and momentum"),
    (
        "+lr-step",
        "step",
        "constant",
        {"milestones": MILESTONES},
        "lr x0.1 at milestone epochs (MultiStepLR)",
    ),
    ("+lr-cosine", "cosine", "constant", {}, "cosine lr decay to 0 (CosineAnnealingLR, per step)"),
    ("+lr-linear", "linear", "constant", {}, "linear lr decay to 0 (LinearLR, per step)"),
    (
        "+lr-warmup-linear",
        "warmup-linear",
        "constant",
        {"warmup": WARMUP},
        "linear lr warm-up from 0, then linear decay to 0 (BERT's, per step)",
    ),
    ("+lr-exponential", "exponential", "constant", {}, "lr x exp(-5/E) per epoch (ExponentialLR)"),
    (
        "+lr-plateau",
        "plateau",
        "constant",
        {},
        "lr x0.1 when val stalls 5 epochs (ReduceLROnPlateau)",
    ),
    ("+onecycle", "onecycle", "onecycle (with lr)", {}, "OneCycleLR: lr and momentum cycles"),
    ("+mom-onecycle", "constant", "onecycle", {}, "OneCycle momentum cycle only, constant lr"),
    ("+mom-cosine", "constant", "cosine", {}, "cosine momentum decay to 0, constant lr"),
    ("+mom-linear", "constant", "linear", {}, "linear momentum decay to 0, constant lr"),
    ("+mom-exponential", "constant", "exponential", {}, "momentum x exp(-5k/T), constant lr"),
)


def _register_family(family: _Family) -> None:
    for suffix, lr_schedule, momentum_schedule, extra, summary in _VARIANTS:
        momentum = MOMENTUM_RANGE if "onecycle" in momentum_schedule else MOMENTUM
        momentum_name = "momentum_range" if "onecycle" in momentum_schedule else "momentum"
        _register(
            family.name + suffix,
            family.name,
            family.optimizer,
            lr_schedule,
            momentum_schedule,
            {"lr": _lr(family.lr), momentum_name: momentum, "weight_decay": WEIGHT_DECAY, **extra},
            f"{family.label}: {summary}",
        )
    _register(
        f"demon-{family.name}",
        family.name,
        family.demon_optimizer,
        "constant",
        "demon",
        {
            "lr": _lr(family.demon_lr),
            "momentum": MOMENTUM,
            "weight_decay": WEIGHT_DECAY,
            "delay": DELAY,
        },
        f"Demon {family.label}: momentum decay beta_k = b(T-k)/(T-b*k), constant lr",
    )


_register_family(SGDM)
_register_family(ADAM)

# References beside the ranking: torch's Adam variants, then the paper's other momentum
# methods (docs/reference-optimizers.md).
_ADAM_GRID = {"lr": _lr(ADAM.lr), "momentum": MOMENTUM}
_register(
    "amsgrad",
    "adam",
    "amsgrad",
    "constant",
    "constant",
    {**_ADAM_GRID, "weight_decay": WEIGHT_DECAY},
    "AMSGrad (torch Adam, amsgrad=True), constant lr; reference",
    reference=True,
)
_register(
    "adamw",
    "adam",
    "adamw",
    "constant",
    "constant",
    {**_ADAM_GRID, "weight_decay": DECOUPLED_WEIGHT_DECAY},
    "AdamW (torch AdamW, decoupled weight decay), constant lr; reference",
    reference=True,
)
_register(
    "qhm+lr-step",
    "sgdm",
    "qhm",
    "step",
    "constant",
    {
        "lr": _lr((0.1, 0.3, 1.0, 3.0)),  # QHM's lr is SGD momentum's lr / (1 - beta)
        "momentum": QHM_MOMENTUM,
        "nu": NU,
        "weight_decay": WEIGHT_DECAY,
        "milestones": MILESTONES,
    },
    "QHM (quasi-hyperbolic momentum), lr x0.1 at milestone epochs; reference",
    reference=True,
)
_register(
    "aggmo+lr-step",
    "sgdm",
    "aggmo",
    "step",
    "constant",
    {
        "lr": _lr((0.003, 0.01, 0.03, 0.1)),
        "betas": AGGMO_BETAS,
        "weight_decay": WEIGHT_DECAY,
        "milestones": MILESTONES,
    },
    "AggMo (aggregated momentum), lr x0.1 at milestone epochs; reference",
    reference=True,
)
_register(
    "qhadam",
    "adam",
    "qhadam",
    "constant",
    "constant",
    {"lr": _lr(ADAM.lr), "momentum": QHADAM_MOMENTUM, "nu": NU, "weight_decay": WEIGHT_DECAY},
    "QHAdam (betas=(momentum, 0.999), nus=(nu, 1)), constant lr; reference",
    reference=True,
)
_register(
    "yellowfin",
    "adam",
    "yellowfin",
    "constant",
    "tuned",
    {"lr": LR_FACTOR, "weight_decay": WEIGHT_DECAY, **YELLOWFIN_OPTIONS},
    "YellowFin: lr and momentum tuned every step (lr: a factor); reference",
    reference=True,
)
