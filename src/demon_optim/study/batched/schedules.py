r"""Per-model learning rates and momenta for M trials trained as one batch.

Which methods have a batched form (:func:`batched_kind`, :func:`batched_reason`): the
built-in methods of the SGDM and Adam families, Demon's included, with any of their lr
schedules (step, cosine, linear, warm-up, exponential, decay on plateau, OneCycle) and
momentum schedules (cosine, linear, exponential, OneCycle); a built-in method says what it
is made of through :func:`demon_optim.study.methods.builtin.composition`. Reference methods,
today's baselines and users' methods have none: their trials run unbatched.

:class:`ModelSchedules` moves every model's hyperparameters exactly as its own trial's
schedules would, because it *runs* them: for each model it builds the trial's real
optimizer and schedule hooks (``method.build``, the code path of an unbatched trial) over a
one-element "shadow" parameter that never receives a gradient, calls the hooks when the
trial would (after each step; after each epoch with the model's validation metric), and
reads from the shadow optimizer's ``param_groups`` the lr and momentum the trial's next
step would use. Demon's momentum comes from the same function the Demon optimizers call,
:meth:`~demon_optim.optim._base.ScheduledMomentumOptimizer.scheduled_beta`, at the models'
step count:

.. math::

    \beta_k = \beta_{init} \frac{T - k}{T - \beta_{init} k} \quad (0 \text{ for } k \ge T).

Per-step cost: models whose schedules cannot differ (same method, same configuration, same
budget, and no schedule that watches the validation metric) share one shadow; a shadow
without step hooks (constant lr and momentum, per-epoch schedules) costs nothing per step;
Demon's beta is computed once per distinct ``(beta_init, T, delay)``. A shadow with torch
LR schedulers takes one genuine ``optimizer.step()`` (over its gradient-less parameter, a
no-op) before its first hooks: torch's schedulers check at their first ``step()`` that the
optimizer has stepped, and warn otherwise.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch

from demon_optim.errors import ConfigError, invalid
from demon_optim.optim import DemonAdam, DemonSGD
from demon_optim.optim._base import ScheduledMomentumOptimizer
from demon_optim.study.batched.optim import DTYPES, KINDS, BatchedHyperparameters
from demon_optim.study.methods import builtin
from demon_optim.study.methods.method import Budget, Method

__all__ = [
    "BatchedHyperparameters",
    "ModelSchedules",
    "batched_kind",
    "batched_reason",
]

_BUILTIN = f"{builtin.__name__}._compose."

# the momentum schedule that only YellowFin's tuner has
_UNBATCHED_MOMENTUM = frozenset({"tuned"})

Member = tuple[Method, Mapping[str, Any], Budget]


def batched_reason(method: Method) -> str | None:
    """Why ``method``'s trials cannot be batched (a short phrase), or None if they can."""
    if not method.source.startswith(_BUILTIN):
        # a builder elsewhere is not a built-in one, whatever attributes it carries
        if method.source.startswith("demon_optim."):
            return "a reference method without a batched form of its optimizer"
        return "not a built-in method (a user's method runs unbatched)"
    parts = builtin.composition(method.build_fn)
    if parts is None:
        return "a built-in method without a batched form of its optimizer"
    if method.reference or parts.optimizer not in KINDS:
        role = "a reference method: " if method.reference else ""
        return f"{role}no batched form of its optimizer ({parts.optimizer})"
    if (
        parts.lr_schedule not in builtin.LR_SCHEDULES
        or parts.momentum_schedule not in builtin.MOMENTUM_SCHEDULES
        or parts.momentum_schedule in _UNBATCHED_MOMENTUM
    ):
        return f"no batched form of its schedules ({parts.lr_schedule}, {parts.momentum_schedule})"
    return None


def batched_kind(method: Method) -> str | None:
    """``"sgd"``, ``"adam"``, ``"demon-sgd"`` or ``"demon-adam"``, the update rule of
    :class:`~demon_optim.study.batched.optim.BatchedOptimizer` that ``method``'s trials take,
    or None if they run unbatched (:func:`batched_reason` says why)."""
    if batched_reason(method) is not None:
        return None
    return _parts(method).optimizer


def _parts(method: Method) -> builtin.Composition:
    parts = builtin.composition(method.build_fn)
    assert parts is not None  # a batchable method's
    return parts


# --- one trial's schedules --------------------------------------------------------------------


def _rule_error(kind: str, optimizer: torch.optim.Optimizer, why: str) -> ConfigError:
    return ConfigError(
        f"batched {kind}: the method built a {type(optimizer).__name__} that {why}; the "
        "batched update would not be its update"
    )


def _check_rule(kind: str, optimizer: torch.optim.Optimizer) -> None:
    """The shadow optimizer is one whose update the batched ``kind`` computes (a guard
    against a built-in method changing under the batched code)."""
    types: dict[str, type] = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "demon-sgd": DemonSGD,
        "demon-adam": DemonAdam,
    }
    if type(optimizer) is not types[kind]:
        raise _rule_error(kind, optimizer, f"is not a {types[kind].__name__}")
    for group in optimizer.param_groups:
        settings = {
            "maximize": False,
            "dampening": 0,
            "nesterov": False,
            "amsgrad": False,
            "decoupled_weight_decay": False,
            "damped": False,
        }
        for key, allowed in settings.items():
            if key in group and group[key] != allowed:
                raise _rule_error(kind, optimizer, f"has {key}={group[key]!r}")
        if isinstance(group["lr"], torch.Tensor):
            raise _rule_error(kind, optimizer, "has a tensor lr")


class _Shadow:
    """One trial's real optimizer and schedule hooks, over a parameter without gradients."""

    def __init__(self, kind: str, method: Method, config: Mapping[str, Any], budget: Budget):
        self.param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        training = method.build([self.param], config, budget)
        if training.before_eval or training.after_eval:
            raise _rule_error(kind, training.optimizer, "swaps weights around evaluation")
        _check_rule(kind, training.optimizer)
        self.optimizer = training.optimizer
        self.group = self.optimizer.param_groups[0]
        self.after_step = training.after_step
        self.after_epoch = training.after_epoch
        self.demon = isinstance(self.optimizer, ScheduledMomentumOptimizer)
        self.adam = "betas" in self.group

    @property
    def moving(self) -> bool:
        """Whether its values can change from one step to the next."""
        return bool(self.after_step) or self.demon

    def step(self) -> None:
        for hook in self.after_step:
            hook()

    def lr(self) -> float:
        return float(self.group["lr"])

    def momentum(self) -> float:
        """The group's momentum (torch) or beta_init (Demon): ``betas[0]`` or ``momentum``."""
        return float(self.group["betas"][0] if self.adam else self.group["momentum"])

    def demon_key(self) -> Hashable:
        """What Demon's beta at a given step depends on."""
        g = self.group
        return (self.momentum(), g["total_steps"], g["delay"], g["schedule"])

    def constants(self) -> tuple[float, ...]:
        """(weight_decay, beta2, eps): never moved by a built-in schedule."""
        g = self.group
        if self.adam:
            return (float(g["weight_decay"]), float(g["betas"][1]), float(g["eps"]))
        return (float(g["weight_decay"]),)


def _frozen(config: Mapping[str, Any], index: int) -> Hashable:
    """A configuration as a dict key (a unique one if some value is not hashable)."""
    key = tuple(sorted(config.items()))
    try:
        hash(key)
    except TypeError:
        return ("unshared", index)
    return key


class ModelSchedules:
    """The per-model lr and momentum of M trials, moved exactly as each trial's own schedules
    (torch LR schedulers, MomentumScheduler, OneCycleLR, ReduceLROnPlateau, Demon's
    :math:`\\beta_k`); see the module's docstring for how.

    Args:
        members: each model's ``(method, checked config, Budget)``; every method must have
            the same :func:`batched_kind`.
        device: where :meth:`current`'s tensors live (the stacked parameters' device).
        dtype: the stacked parameters' dtype (float32 or float64), that of those tensors.
            :class:`~demon_optim.study.batched.optim.BatchedOptimizer` computes its update
            from their exact Python values (``BatchedHyperparameters.host``).

    The call order is the trial's: :meth:`current` for a step, the step, :meth:`after_step`;
    after each epoch :meth:`after_epoch` with every model's validation metric. All models
    step together (a stopped model's schedules move on too; nothing reads them).
    """

    def __init__(
        self,
        members: Sequence[Member],
        *,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        if not members:
            raise invalid("members", members, "one (method, config, budget) per model")
        if dtype not in DTYPES:
            raise invalid("dtype", dtype, DTYPES)
        kinds = []
        for i, (method, _, _) in enumerate(members):
            kind = batched_kind(method)
            if kind is None:
                raise invalid(
                    f"members[{i}]",
                    method.name,
                    f"a batchable method, not one that is {batched_reason(method)}",
                )
            kinds.append(kind)
        if len(set(kinds)) != 1:
            raise invalid("members", sorted(set(kinds)), "methods of one batched kind")
        self.kind: str = kinds[0]
        self.size = len(members)
        self.device = torch.device(device)
        self.dtype = dtype
        shadows: dict[Hashable, int] = {}
        self._shadows: list[_Shadow] = []
        self._of: list[int] = []  # each model's shadow
        self._watched: list[int] = []  # per shadow: the model whose metric its hooks get
        for i, (method, config, budget) in enumerate(members):
            watches = _parts(method).lr_schedule in builtin.WATCHES_METRIC
            key = (method.name, _frozen(config, i), budget, i if watches else None)
            if key not in shadows:
                shadows[key] = len(self._shadows)
                self._shadows.append(_Shadow(self.kind, method, config, budget))
                self._watched.append(i)
            self._of.append(shadows[key])
        self._stepping = [s for s in self._shadows if s.after_step]
        self._scheduled = [s for s in self._shadows if s.after_step or s.after_epoch]
        self._moving = [j for j, s in enumerate(self._shadows) if s.moving]
        self._epochly = [j for j, s in enumerate(self._shadows) if s.after_epoch]
        constants = [s.constants() for s in self._shadows]
        self._constants: dict[str, list[float]] = {
            name: [constants[j][f] for j in self._of]
            for f, name in enumerate(("weight_decay", "beta2", "eps")[: len(constants[0])])
        }
        self._lr = [s.lr() for s in self._shadows]
        self._momentum = [0.0] * len(self._shadows)
        self._step = 0  # k, the steps taken
        self._current: BatchedHyperparameters | None = None
        self._last: BatchedHyperparameters | None = None  # what the last step used
        self._refresh(range(len(self._shadows)))

    @property
    def shadows(self) -> int:
        """How many shadows (distinct schedules) the M models needed."""
        return len(self._shadows)

    def _refresh(self, which: Iterable[int]) -> None:
        """Read the lr and momentum of these shadows (those whose values may have moved)."""
        betas: dict[Hashable, float] = {}
        for j in which:
            s = self._shadows[j]
            self._lr[j] = s.lr()
            if s.demon:  # the Demon optimizers' own function, at the models' step count
                key = s.demon_key()
                beta = betas.get(key)
                if beta is None:
                    beta = ScheduledMomentumOptimizer.scheduled_beta(
                        s.group, s.momentum(), self._step
                    )
                    betas[key] = beta
                self._momentum[j] = beta
            else:
                self._momentum[j] = s.momentum()
        self._current = None

    def current(self) -> BatchedHyperparameters:
        """The hyperparameters of the next optimizer step, per model (``momentum``: what
        that step applies; Demon's :math:`\\beta_k`)."""
        if self._current is None:
            of = self._of
            self._current = BatchedHyperparameters.from_values(
                lr=[self._lr[j] for j in of],
                momentum=[self._momentum[j] for j in of],
                device=self.device,
                dtype=self.dtype,
                **self._constants,
            )
        return self._current

    def after_step(self) -> None:
        """Move every model's per-step schedules past the step just taken."""
        self._last = self.current()
        if self._step == 0:
            # A genuine step of each shadow optimizer with schedulers (a no-op: its parameter
            # has no gradient), as the trial's first optimizer.step(): torch's LR schedulers
            # check at their first step() that the optimizer has stepped, and warn if not.
            for s in self._scheduled:
                s.optimizer.step()
        self._step += 1
        for s in self._stepping:
            s.step()
        if self._moving:
            self._refresh(self._moving)

    def after_epoch(self, val_metrics: Sequence[float]) -> None:
        """Move the per-epoch schedules; decay on plateau watches each model's own metric."""
        if len(val_metrics) != self.size:
            raise invalid(
                "val_metrics", f"{len(val_metrics)} values", f"{self.size}, one per model"
            )
        for j in self._epochly:
            for hook in self._shadows[j].after_epoch:
                hook(float(val_metrics[self._watched[j]]))
        if self._epochly:
            self._refresh(self._epochly)

    def applied(self) -> list[tuple[float, float]]:
        """Per model, the (lr, momentum) the last step used, as ``applied_reader`` reads them
        from an unbatched trial's optimizer (before any step: the first step's)."""
        hp = self._last if self._last is not None else self.current()
        return list(zip(hp.host["lr"], hp.host["momentum"], strict=True))
