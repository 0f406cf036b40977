r"""Hugging Face ``Trainer`` integration: Demon's ``T`` from the Trainer, resumable, logged.

A momentum schedule needs ``T``, the run's number of optimizer steps, and the ``Trainer``
knows it only when ``train()`` starts: ``T = TrainerState.max_steps``, which is
``args.max_steps`` when it is set, else

.. math::

    T = \left\lceil E \cdot \left\lceil \frac{B}{G} \right\rceil \right\rceil, \qquad
    B = \left\lceil \frac{N}{b} \right\rceil \; (\lfloor N / b \rfloor
    \text{ with } \texttt{dataloader\_drop\_last})

for ``E = num_train_epochs`` (which may be fractional), ``G =
gradient_accumulation_steps``, ``N`` examples and a per-process batch ``b`` (the last
accumulation of an epoch takes the batches that are left). The Trainer stops after exactly
``T`` optimizer steps, so the last one applies ``k = T - 1``.

:class:`DemonCallback` hands ``T`` over at ``on_train_begin``:

* to a Demon optimizer given to the Trainer (``optimizers=(DemonAdam(...), lr_scheduler)``,
  or ``(DemonAdam(...), None)`` for the Trainer's own LR schedule):
  ``set_total_steps(T)``. Its counter and ``T`` live in its parameter groups, so they travel
  with the Trainer's ``optimizer.pt``;
* or, with ``DemonCallback(schedule="demon")``, to a :class:`~demon_optim.MomentumScheduler`
  that the callback builds on whatever optimizer the Trainer uses (its default AdamW
  included) and steps once per optimizer step. Its state rides in the optimizer's first
  parameter group (:data:`SCHEDULER_STATE_KEY`), so it is saved in ``optimizer.pt`` too.

Order of the Trainer's hooks relied on (the same in transformers 4.40 and 5.24):
``train()`` builds the ``TrainerState`` (``max_steps``), creates the optimizer and the LR
scheduler, wraps the optimizer (accelerate's ``AcceleratedOptimizer``), loads a
checkpoint's ``optimizer.pt`` and ``scheduler.pt`` when resuming, and only then calls
``on_train_begin``. A resumed optimizer therefore already holds the checkpoint's ``T``, and
``set_total_steps`` with the same ``T`` is a no-op; a resumed run whose ``max_steps``
differs is refused unless ``DemonCallback(allow_change=True)``. Callbacks are not told
which checkpoint was resumed from, which is why the scheduler's state travels inside the
optimizer's state.

The momentum of each optimizer step is logged as ``momentum`` beside ``learning_rate``
(both the values that step used, of the first parameter group). The Trainer copies a log
into ``state.log_history`` and hands it to the ``report_to`` loggers *before* the callbacks
given to ``Trainer(callbacks=...)`` see it, so the callback also completes the
``log_history`` entry; for a logger to record the momentum, give it after the callback:
``report_to="none", callbacks=[DemonCallback(), TensorBoardCallback()]``.

Needs ``transformers`` and ``accelerate`` (the Trainer's own requirement):
``pip install 'demon-optim[transformers]'``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

try:
    import accelerate  # noqa: F401  (the Trainer cannot run without it)
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as error:
    raise ImportError(
        "demon_optim.integrations.transformers needs Hugging Face transformers and "
        f"accelerate ({error}); install them with: pip install 'demon-optim[transformers]'"
    ) from None

import torch

from .. import _checks, schedules
from ..errors import ConfigError, invalid
from ..optim._base import ScheduledMomentumOptimizer
from ..scheduler import MomentumScheduler

__all__ = ["LOG_KEY", "SCHEDULER_STATE_KEY", "DemonCallback", "unwrap_optimizer"]

LOG_KEY = "momentum"
"""The entry of the Trainer's logs (and ``state.log_history``) that holds the momentum."""

SCHEDULER_STATE_KEY = "momentum_scheduler"
"""The entry of the optimizer's first parameter group that holds the
:class:`~demon_optim.MomentumScheduler`'s ``state_dict()``, so that ``optimizer.pt`` carries
it (torch's LR schedulers keep ``initial_lr`` in every group likewise). Written at
``on_train_begin``; each step updates its ``last_step`` in place."""

MAX_WRAPPERS = 8  # AcceleratedOptimizer, and whatever wraps it in turn; a bound against cycles

ScheduleArg = str | Callable[[int, int, float], float]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside the Trainer's (accelerate's ``AcceleratedOptimizer`` keeps
    it as ``.optimizer``); a Demon optimizer is returned as soon as it is reached."""
    for _ in range(MAX_WRAPPERS):
        inner = getattr(optimizer, "optimizer", None)
        if isinstance(optimizer, ScheduledMomentumOptimizer) or not isinstance(
            inner, torch.optim.Optimizer
        ):
            break
        optimizer = inner
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise invalid("optimizer", type(optimizer).__name__, "a torch.optim.Optimizer")
    return optimizer


def _check_options(schedule: ScheduleArg, options: dict[str, Any]) -> None:
    """A named schedule's options, bound to its signature now rather than at train()."""
    schedules.get(schedule)  # the name, or a callable
    if isinstance(schedule, str):
        try:
            inspect.signature(schedules.SCHEDULES[schedule]).bind(0, 1, 0.9, **options)
        except TypeError:
            params = list(inspect.signature(schedules.SCHEDULES[schedule]).parameters)[3:]
            raise invalid(
                f"{schedule!r} schedule options",
                sorted(options),
                ", ".join(params) or "none",
            ) from None


class DemonCallback(TrainerCallback):
    """Give a momentum schedule the Trainer's ``T``, step it, keep it in checkpoints, log it.

    Args:
        schedule: ``None`` (default) when the Trainer's optimizer is a Demon optimizer
            (:class:`~demon_optim.DemonSGD`, :class:`~demon_optim.DemonAdam`, ...), which
            schedules its own momentum; or a schedule name from
            :data:`demon_optim.schedules.SCHEDULES` (``"demon"``, ...) or a callable
            ``(k, T, beta_init) -> beta``, to schedule the momentum of any other optimizer
            (the Trainer's AdamW: its ``betas[0]``) with a
            :class:`~demon_optim.MomentumScheduler` built at ``on_train_begin``.
        key: the group entry the scheduler writes (``MomentumScheduler``'s ``key``);
            only with ``schedule``.
        allow_change: let a resumed run whose ``max_steps`` differs from the checkpoint's
            ``T`` continue with the new ``T`` (the schedule jumps; see
            ``set_total_steps``). By default that is a :class:`~demon_optim.ConfigError`.
        log_momentum: add ``momentum`` to the Trainer's training logs.
        **schedule_options: the named schedule's options (``delay=0.1`` for ``"demon"``).

    After ``on_train_begin``: :attr:`total_steps` is ``T``, :attr:`optimizer` the
    (unwrapped) optimizer whose momentum is scheduled, :attr:`momentum_scheduler` the
    scheduler built for it (``None`` with a Demon optimizer).

    Raises:
        ConfigError: a bad schedule name, option or flag (at construction); at
            ``on_train_begin``, a schedule for a Demon optimizer (it has its own), no schedule
            for another optimizer, or a checkpoint whose ``T`` or schedule differs.
    """

    def __init__(
        self,
        schedule: ScheduleArg | None = None,
        *,
        key: str | None = None,
        allow_change: bool = False,
        log_momentum: bool = True,
        **schedule_options: Any,
    ) -> None:
        if schedule is None:
            if key is not None or schedule_options:
                given = ["key"] * (key is not None) + sorted(schedule_options)
                raise invalid(
                    "schedule", None, f"a schedule name or callable, since {given} are given"
                )
        else:
            _check_options(schedule, schedule_options)
            if key is not None and not isinstance(key, str):
                raise invalid("key", key, "a parameter group entry's name, or None")
        self.schedule = schedule
        self.key = key
        self.schedule_options = schedule_options
        self.allow_change = _checks.flag("allow_change", allow_change)
        self.log_momentum = _checks.flag("log_momentum", log_momentum)
        self.total_steps: int | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.momentum_scheduler: MomentumScheduler | None = None
        self._momentum: float | None = None  # the momentum the last optimizer step used

    # -- the Trainer's hooks ------------------------------------------------------------------

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        """Set ``T = state.max_steps`` (after a resumed checkpoint has been loaded)."""
        if optimizer is None:
            raise ConfigError("DemonCallback: the Trainer has no optimizer at on_train_begin")
        total = _checks.total_steps("TrainerState.max_steps", state.max_steps)
        inner = unwrap_optimizer(optimizer)
        self.total_steps, self.optimizer, self.momentum_scheduler = total, inner, None
        self._momentum = None
        if isinstance(inner, ScheduledMomentumOptimizer):
            if self.schedule is not None:
                raise invalid(
                    "schedule",
                    self.schedule,
                    f"None for a {type(inner).__name__}, which schedules its own momentum "
                    "(a schedule is for other optimizers, such as the Trainer's AdamW)",
                )
            self._set_total_steps(inner, total)
            return
        if self.schedule is None:
            raise ConfigError(
                f"DemonCallback: the Trainer's optimizer {type(inner).__name__} has no momentum "
                "schedule of its own; pass DemonCallback(schedule='demon') to schedule its "
                "momentum, or give the Trainer a Demon optimizer: "
                "Trainer(optimizers=(DemonAdam(model.parameters(), ...), None))"
            )
        self.momentum_scheduler = self._build_scheduler(inner, state)
        self._set_total_steps(self.momentum_scheduler, total)
        # the whole state once; each step then updates its counter in place (a new dict per
        # step would cost a visible part of a small model's step)
        inner.param_groups[0][SCHEDULER_STATE_KEY] = self.momentum_scheduler.state_dict()

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        """Advance the scheduler once per optimizer step (not per accumulated micro-batch).

        A step that the mixed-precision scaler skipped (an inf gradient) does not advance it,
        as the Trainer does not step its LR scheduler then and a Demon optimizer's own
        counter does not move.
        """
        scheduler = self.momentum_scheduler
        if scheduler is None:
            return
        self._momentum = scheduler.get_last_momentum()[0]
        if not getattr(optimizer, "step_was_skipped", False):
            scheduler.step()
            assert self.optimizer is not None
            self.optimizer.param_groups[0][SCHEDULER_STATE_KEY]["last_step"] = scheduler.last_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Put ``momentum`` beside ``learning_rate`` in a training log and its history entry."""
        if not self.log_momentum or logs is None or "learning_rate" not in logs:
            return
        momentum = self.last_momentum()
        if momentum is None:
            return
        logs[LOG_KEY] = momentum
        # the Trainer appended {**logs, "step": global_step} just before calling on_log
        if state.log_history:
            entry = state.log_history[-1]
            if (
                entry.get("step") == state.global_step
                and entry.get("learning_rate") == logs["learning_rate"]
            ):
                entry[LOG_KEY] = momentum

    # -- helpers --------------------------------------------------------------------------------

    def last_momentum(self) -> float | None:
        """The momentum of the first group at the last optimizer step (before the first step:
        the one it will use); ``None`` before ``on_train_begin``."""
        if self.optimizer is None:
            return None
        if isinstance(self.optimizer, ScheduledMomentumOptimizer):
            return self.optimizer.get_last_momentum()[0]
        if self.momentum_scheduler is None:
            return None
        if self._momentum is None:
            return self.momentum_scheduler.get_last_momentum()[0]
        return self._momentum

    def _set_total_steps(
        self, target: ScheduledMomentumOptimizer | MomentumScheduler, total: int
    ) -> None:
        try:
            target.set_total_steps(total, allow_change=self.allow_change)
        except ConfigError as error:
            raise ConfigError(
                f"DemonCallback: the Trainer's max_steps={total} is not the T in use ({error}); "
                "to continue with the new T: DemonCallback(allow_change=True)"
            ) from None
        if isinstance(target, ScheduledMomentumOptimizer):
            own = [
                f"param_groups[{i}] keeps its total_steps={group['total_steps']}"
                for i, group in enumerate(target.param_groups)
                if group["total_steps"] != total
            ]
            if own:
                warnings.warn(
                    f"DemonCallback: the Trainer's max_steps is {total}, but {'; '.join(own)} "
                    "(given to the optimizer): its schedule does not end with the run. Leave "
                    "total_steps=None for the callback to set it.",
                    stacklevel=2,
                )

    def _build_scheduler(
        self, optimizer: torch.optim.Optimizer, state: TrainerState
    ) -> MomentumScheduler:
        """A MomentumScheduler on ``optimizer``, continuing a checkpoint's when it has one."""
        assert self.schedule is not None
        saved = optimizer.param_groups[0].get(SCHEDULER_STATE_KEY)
        if saved is not None:
            name = saved.get("schedule") if isinstance(saved, dict) else None
            mine = self.schedule if isinstance(self.schedule, str) else None
            if name is not None and mine is not None and name != mine:
                raise invalid(
                    "schedule",
                    mine,
                    f"{name!r}, the schedule this run's checkpoint was trained with",
                )
        scheduler = MomentumScheduler(
            optimizer, self.schedule, key=self.key, **self.schedule_options
        )
        if saved is not None:
            scheduler.load_state_dict(saved)  # the counter, T and each group's beta_init
        elif state.global_step > 0:
            # resumed from a checkpoint written without this callback: the run's schedule,
            # at the step the run is at
            scheduler.set_total_steps(state.max_steps, allow_change=True)
            scheduler.load_state_dict({**scheduler.state_dict(), "last_step": state.global_step})
        return scheduler
