"""Today's baselines beside the paper's 2019 comparison: Muon, Lion, Schedule-Free AdamW.

Reference methods of the Adam family (listed in its tables beside the ranking, not in it;
``report --rank-all`` ranks them), registered through :func:`register_method` as every
built-in is. See ``docs/reference-optimizers.md`` ("Today's baselines").

* **Muon** (Jordan et al. 2024): :func:`demon_optim.optim.muon_with_adamw`, torch's
  ``torch.optim.Muon`` on the hidden weights (conv kernels as matrices) and ``AdamW`` on the
  rest, stepped as one :class:`~demon_optim.optim.CompositeOptimizer`. ``muon`` and
  ``muon+lr-*`` carry the LR schedules of the SGDM and Adam families (on both optimizers'
  lr); ``demon-muon`` decays Muon's momentum with Demon, ``MomentumScheduler(muon,
  "demon")`` on ``group["momentum"]`` of the Muon groups only (AdamW's beta1 stays).
* **Lion** (Chen et al. 2023; PyPI ``lion-pytorch``): ``lion``, ``lion+lr-*``, and
  ``demon-lion``, Demon on ``betas[0]`` (the weight of the momentum inside the sign: at T
  Lion is signSGD).
* **Schedule-Free AdamW** (Defazio et al. 2024; PyPI ``schedulefree``): its own schedule, so
  no LR schedule on top, only its linear warm-up; evaluated at its averaged weights
  (``optimizer.eval()`` before every evaluation, ``optimizer.train()`` after, through the
  Training's ``before_eval`` / ``after_eval`` hooks). Demon does not apply: its beta1 places
  the point the gradient is taken at between the average and the latest iterate; it is not
  a memory of gradients.

OneCycle and the momentum-only schedules are left out: OneCycle cycles one optimizer's
momentum, and Muon + AdamW have two kinds (``momentum``, ``betas``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from demon_optim import _checks
from demon_optim.study.methods.builtin import (
    _VARIANTS,
    DELAY,
    LR_SCHEDULES,
)
from demon_optim.study.methods.hyperparameters import Hyperparameter
from demon_optim.study.methods.method import Budget, EpochHook, EvalHook, StepHook, Training
from demon_optim.study.methods.registry import register_method

INSTALL = 'pip install "demon-optim[baselines]"'
"""The extra that brings Lion's and Schedule-Free's packages."""

# --- hyperparameters and their default grids (docs/reference-optimizers.md) -----------------

MUON_LR = Hyperparameter(
    (0.003, 0.01, 0.03, 0.1),
    _checks.learning_rate,
    "Muon's lr (the hidden weights'): spectral norm of a square matrix's update",
)
MUON_MOMENTUM = Hyperparameter(
    (0.95,), _checks.unit_interval, "Muon's momentum mu (Nesterov); beta_init of Demon"
)
ADAMW_LR = Hyperparameter(
    (3e-3,), _checks.learning_rate, "AdamW's lr, for the parameters Muon does not take"
)
DECOUPLED = Hyperparameter((0.0,), _checks.nonnegative, "decoupled weight decay: p *= 1 - lr*wd")
LION_LR = Hyperparameter(
    (3e-5, 1e-4, 3e-4, 1e-3), _checks.positive, "Lion's lr: every coordinate moves by lr"
)
LION_BETA1 = Hyperparameter(
    (0.9,),
    _checks.unit_interval,
    "Lion beta1: weight of the momentum in the sign; beta_init of Demon",
)
LION_BETA2 = Hyperparameter((0.99,), _checks.unit_interval, "Lion beta2: the momentum's EMA factor")
SF_LR = Hyperparameter(
    (3e-4, 1e-3, 3e-3, 1e-2), _checks.learning_rate, "Schedule-Free AdamW's lr (after warm-up)"
)
SF_BETA1 = Hyperparameter(
    (0.9,), _checks.unit_interval, "Schedule-Free beta1: interpolation of average and iterate"
)
SF_BETA2 = Hyperparameter((0.999,), _checks.unit_interval, "Schedule-Free beta2 (Adam's)")
SF_WARMUP = Hyperparameter(
    (0.02,), _checks.unit_interval, "fraction of the run over which the lr warms up from 0"
)


# --- base optimizers --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    """A base optimizer, the one whose momentum Demon decays, and its evaluation hooks."""

    optimizer: torch.optim.Optimizer
    momentum: torch.optim.Optimizer | None = None
    before_eval: tuple[EvalHook, ...] = ()
    after_eval: tuple[EvalHook, ...] = ()


def _muon(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> _Parts:
    from demon_optim.optim import muon_with_adamw

    opt = muon_with_adamw(
        params,
        lr=hp["lr"],
        momentum=hp["momentum"],
        adamw_lr=hp["adamw_lr"],
        weight_decay=hp["weight_decay"],
    )
    return _Parts(opt, momentum=opt.optimizers[0])


def _lion(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> _Parts:
    from lion_pytorch import Lion

    opt = Lion(
        params, lr=hp["lr"], betas=(hp["momentum"], hp["beta2"]), weight_decay=hp["weight_decay"]
    )
    return _Parts(opt, momentum=opt)


@functools.cache
def schedule_free_adamw() -> type[torch.optim.Optimizer]:
    """``schedulefree.AdamWScheduleFree`` reporting the lr its warm-up applied
    (``get_last_lr()``, what the trial records)."""
    from schedulefree import AdamWScheduleFree

    class ScheduleFreeAdamW(AdamWScheduleFree):
        def get_last_lr(self) -> list[float]:
            return [group["scheduled_lr"] for group in self.param_groups]

    return ScheduleFreeAdamW


def _schedule_free(params: Iterable[Any], hp: Mapping[str, Any], budget: Budget) -> _Parts:
    opt: Any = schedule_free_adamw()(
        params,
        lr=hp["lr"],
        betas=(hp["momentum"], hp["beta2"]),
        weight_decay=hp["weight_decay"],
        warmup_steps=round(hp["warmup"] * budget.total_steps),
    )
    opt.train()  # it starts in eval mode; step() refuses to run there
    return _Parts(opt, before_eval=(opt.eval,), after_eval=(opt.train,))


Base = Callable[[Iterable[Any], Mapping[str, Any], Budget], _Parts]


def _compose(base: Base, lr_schedule: str, demon: bool) -> Callable[..., Training]:
    """A method's build(): the base optimizer, its lr schedule's hooks, then Demon's."""

    def build(params: Iterable[Any], *, budget: Budget, **hp: Any) -> Training:
        from demon_optim import MomentumScheduler

        parts = base(params, hp, budget)
        after_step: list[StepHook] = []
        after_epoch: list[EpochHook] = []
        step_hook, epoch_hook = LR_SCHEDULES[lr_schedule](parts.optimizer, hp, budget)
        if step_hook is not None:
            after_step.append(step_hook)
        if epoch_hook is not None:
            after_epoch.append(epoch_hook)
        if demon:
            assert parts.momentum is not None
            scheduler = MomentumScheduler(
                parts.momentum, "demon", total_steps=budget.total_steps, delay=hp["delay"]
            )
            after_step.append(scheduler.step)
        return Training(
            parts.optimizer,
            tuple(after_step),
            tuple(after_epoch),
            parts.before_eval,
            parts.after_eval,
        )

    return build


# --- registration -----------------------------------------------------------------------------

# The LR schedules of the paper's families (builtin._VARIANTS), with constant momentum.
LR_VARIANTS = tuple(
    (suffix, lr_schedule, extra, summary)
    for suffix, lr_schedule, momentum_schedule, extra, summary in _VARIANTS
    if momentum_schedule == "constant"
)


@dataclass(frozen=True)
class _Baseline:
    name: str
    label: str
    base: Base
    grid: Mapping[str, Hyperparameter]
    requires: Mapping[str, str]


MUON = _Baseline(
    "muon",
    "Muon (torch.optim.Muon on hidden weights, AdamW on the rest)",
    _muon,
    {"lr": MUON_LR, "momentum": MUON_MOMENTUM, "adamw_lr": ADAMW_LR, "weight_decay": DECOUPLED},
    {},
)
LION = _Baseline(
    "lion",
    "Lion (lion-pytorch)",
    _lion,
    {"lr": LION_LR, "momentum": LION_BETA1, "beta2": LION_BETA2, "weight_decay": DECOUPLED},
    {"lion_pytorch": INSTALL},
)


def _register(
    name: str,
    build: Callable[..., Training],
    grid: Mapping[str, Hyperparameter],
    summary: str,
    requires: Mapping[str, str],
) -> None:
    register_method(
        name,
        build=build,
        grid=grid,
        family="adam",
        reference=True,
        schedule=name,
        summary=f"{summary}; reference",
        requires=requires,
    )


def _register_baseline(baseline: _Baseline) -> None:
    for suffix, lr_schedule, extra, summary in LR_VARIANTS:
        _register(
            baseline.name + suffix,
            _compose(baseline.base, lr_schedule, demon=False),
            {**baseline.grid, **extra},
            f"{baseline.label}: {summary}",
            baseline.requires,
        )
    _register(
        f"demon-{baseline.name}",
        _compose(baseline.base, "constant", demon=True),
        {**baseline.grid, "delay": DELAY},
        f"{baseline.label} with Demon on its momentum, constant lr",
        baseline.requires,
    )


_register_baseline(MUON)
_register_baseline(LION)
_register(
    "schedulefree-adamw",
    _compose(_schedule_free, "constant", demon=False),
    {
        "lr": SF_LR,
        "momentum": SF_BETA1,
        "beta2": SF_BETA2,
        "weight_decay": DECOUPLED,
        "warmup": SF_WARMUP,
    },
    "Schedule-Free AdamW (schedulefree): no lr schedule, linear warm-up, evaluated at its average",
    {"schedulefree": INSTALL},
)

__all__ = ["INSTALL", "LR_VARIANTS", "schedule_free_adamw"]
