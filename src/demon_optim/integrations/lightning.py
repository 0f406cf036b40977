"""PyTorch Lightning: :class:`DemonCallback` gives the Demon schedules the run's length.

A Demon schedule (Chen et al., arXiv 1910.04952) decays the momentum over ``T`` optimizer
steps,

    beta_k = beta_init * (1 - k/T) / ((1 - beta_init) + beta_init * (1 - k/T)),  k = 0 .. T-1,

so it needs ``T``, which a Lightning run knows only once the trainer has its data loaders
and limits. ``DemonCallback`` reads ``T = trainer.estimated_stepping_batches`` when training
starts (it counts ``max_epochs``, ``max_steps``, ``limit_train_batches``, gradient
accumulation and the per-process share of the data under several devices) and calls
``set_total_steps(T)`` on

* every Demon optimizer (a :class:`~demon_optim.optim._base.ScheduledMomentumOptimizer`:
  ``DemonSGD``, ``DemonAdam``, ``DemonAdamW``) among ``trainer.optimizers``, found inside
  Lightning's and torch's optimizer wrappers too;
* every :class:`~demon_optim.MomentumScheduler` held by an attribute of the LightningModule
  (``self.momentum_scheduler = MomentumScheduler(optimizer)`` in ``configure_optimizers``,
  or a list, tuple or dict attribute of them). The callback also steps these schedulers,
  right after each real ``optimizer.step()`` (a torch step post-hook), and saves their state
  in Lightning's checkpoints. A MomentumScheduler is not an LR scheduler: returned from
  ``configure_optimizers`` as one, Lightning would step it per epoch by default and refuse
  it unless ``lr_scheduler_step`` is overridden; the callback refuses it there.

The hook is ``on_train_start``. In ``Trainer.fit`` it runs after ``configure_optimizers``
(strategy setup), after a checkpoint's optimizer, loop and callback states have been
restored (``restore_training_state`` comes after ``on_fit_start``, which is too early), after
the sanity check, and before the first batch. On resume the optimizers already hold the
checkpoint's ``T`` and counter, so setting the same ``T`` changes nothing, and a different
``T`` (the run's length changed) is refused unless ``DemonCallback(allow_change=True)``.

The momentum each optimizer step applied is kept in ``DemonCallback.momentum`` and, with
``log_momentum=True`` (the default), written to the trainer's loggers as
``LearningRateMonitor`` writes learning rates: at the steps Lightning logs
(``log_every_n_steps``), under ``momentum`` for one optimizer with one parameter group,
``momentum/group{i}`` (or ``momentum/<group name>``) for several groups and
``momentum/optimizer{j}/...`` for several optimizers. (Not with ``pl_module.log``, which
costs about a millisecond per call.)

PyTorch Lightning is optional: ``pip install "demon-optim[lightning]"`` (the ``lightning``
package, ``import lightning.pytorch``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from .. import _checks
from ..errors import ConfigError, invalid
from ..optim._base import ScheduledMomentumOptimizer
from ..scheduler import MomentumScheduler

INSTALL = 'pip install "demon-optim[lightning]"'

try:
    import lightning.pytorch as pl
except ModuleNotFoundError as error:
    if error.name not in ("lightning", "lightning.pytorch"):
        raise  # lightning is there but broken: its own error says more
    raise ModuleNotFoundError(
        f"demon_optim.integrations.lightning needs PyTorch Lightning, which is not installed: "
        f"{INSTALL}",
        name=error.name,
    ) from None

__all__ = ["DemonCallback", "demon_optimizers", "momentum_schedulers", "unwrap"]

WRAPPER_ATTRIBUTES = ("_optimizer", "optimizer", "optim")
"""Where wrappers keep the optimizer they wrap: Lightning's LightningOptimizer (which also
imitates the wrapped class, so ``isinstance`` alone cannot tell), DeepSpeed-style wrappers,
torch's ZeroRedundancyOptimizer."""


def unwrap(optimizer: Any) -> Any:
    """The optimizer inside any number of wrappers (``optimizer`` itself if it wraps none)."""
    seen = {id(optimizer)}
    while True:
        inner = next(
            (
                value
                for name in WRAPPER_ATTRIBUTES
                if isinstance(value := getattr(optimizer, name, None), Optimizer)
                and id(value) not in seen
            ),
            None,
        )
        if inner is None:
            return optimizer
        seen.add(id(inner))
        optimizer = inner


def demon_optimizers(optimizers: Iterable[Any]) -> list[ScheduledMomentumOptimizer]:
    """The Demon optimizers among ``optimizers`` (unwrapped), each once, in order."""
    found: dict[int, ScheduledMomentumOptimizer] = {}
    for optimizer in optimizers:
        inner = unwrap(optimizer)
        if isinstance(inner, ScheduledMomentumOptimizer):
            found.setdefault(id(inner), inner)
    return list(found.values())


def momentum_schedulers(module: torch.nn.Module) -> dict[str, MomentumScheduler]:
    """The MomentumSchedulers held by ``module``'s attributes, by attribute name.

    An attribute that is a list or tuple of them is named ``name[i]``, a dict ``name['key']``.
    The names key their states in a checkpoint, so a resumed run must hold its schedulers
    under the same names.
    """
    found: dict[str, MomentumScheduler] = {}
    seen: set[int] = set()

    def add(name: str, value: object) -> None:
        if isinstance(value, MomentumScheduler) and id(value) not in seen:
            seen.add(id(value))
            found[name] = value

    for name, value in vars(module).items():
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                add(f"{name}[{i}]", item)
        elif isinstance(value, Mapping) and not name.startswith("_"):  # not nn.Module's own
            for key, item in value.items():
                add(f"{name}[{key!r}]", item)
        else:
            add(name, value)
    return found


def _finite_total(total: object) -> int | None:
    """``estimated_stepping_batches`` as T, or None when it is unknown (inf, -1)."""
    if isinstance(total, bool) or not isinstance(total, (int, float)):
        return None
    if total != total or total in (float("inf"), float("-inf")) or total < 1:
        return None
    return int(total)


class DemonCallback(pl.Callback):
    """Set ``T`` of every Demon optimizer and MomentumScheduler when Lightning training starts.

    Args:
        log_momentum: write the momentum each optimizer step applied (``momentum``,
            ``momentum/group{i}``, ``momentum/optimizer{j}/...``) to the trainer's loggers at
            the steps Lightning logs (``log_every_n_steps``).
        allow_change: let a resumed run change a ``T`` already in use (the run's length
            changed); the schedule then continues from the current step with the new ``T``.
            Without it such a change is refused with a ConfigError.

    ``T = trainer.estimated_stepping_batches``, the number of optimizer steps the trainer
    will take. A Demon optimizer's groups given their own ``total_steps`` keep it (see
    ``set_total_steps``); an optimizer-wide ``total_steps`` given to the constructor is
    replaced before the first step, with a warning. MomentumSchedulers are found as
    attributes of the LightningModule, stepped after each ``optimizer.step()`` that really
    ran (a step that AMP's GradScaler skips does not advance them, as it does not advance
    the Demon optimizers' counters) and saved in the callback's checkpoint state. Do not step
    them yourself.

    Raises (in ``on_train_start``):
        ConfigError: the run is unbounded (``max_steps=-1`` and ``max_epochs=-1``, or a train
            loader without a length and no ``max_steps``) while some optimizer or scheduler
            has no ``T`` of its own; a resumed run's ``T`` differs from the checkpoint's
            without ``allow_change=True``; a MomentumScheduler was returned as an LR
            scheduler.
    """

    def __init__(self, *, log_momentum: bool = True, allow_change: bool = False) -> None:
        super().__init__()
        self.log_momentum = _checks.flag("log_momentum", log_momentum)
        self.allow_change = _checks.flag("allow_change", allow_change)
        self.total_steps: int | None = None
        """The ``T`` set at the last start of training (None before, or if unbounded)."""
        self.schedulers: dict[str, MomentumScheduler] = {}
        """The MomentumSchedulers found on the LightningModule, by attribute name."""
        self._loaded: dict[str, dict[str, Any]] = {}  # scheduler states from a checkpoint
        self._handles: list[RemovableHandle] = []
        self.momentum: dict[str, float] = {}
        """The momentum the last optimizer step applied, by log name (``"momentum"``, ...)."""
        self._fresh = False  # an optimizer step has run since the last batch end

    # -- the start of training ------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        self.momentum = {}
        self._refuse_as_lr_scheduler(trainer)
        optimizers = demon_optimizers(trainer.optimizers)
        self.schedulers = momentum_schedulers(pl_module)
        self._restore_schedulers(trainer)
        if not optimizers and not self.schedulers:
            pl.utilities.rank_zero_warn(
                "DemonCallback found no Demon optimizer (DemonSGD, DemonAdam, ...) in "
                "trainer.optimizers and no MomentumScheduler attribute on the LightningModule: "
                "it does nothing"
            )
            return
        self._set_total_steps(trainer, optimizers)
        self._attach(trainer, optimizers)

    def _refuse_as_lr_scheduler(self, trainer: pl.Trainer) -> None:
        for i, config in enumerate(trainer.lr_scheduler_configs):
            if isinstance(config.scheduler, MomentumScheduler):
                raise invalid(
                    f"configure_optimizers lr_scheduler[{i}]",
                    "a MomentumScheduler",
                    "LR schedulers only: assign the MomentumScheduler to an attribute of the "
                    "LightningModule (self.momentum_scheduler = ...), where DemonCallback "
                    "finds, steps and saves it",
                )

    def _restore_schedulers(self, trainer: pl.Trainer) -> None:
        loaded, self._loaded = self._loaded, {}
        for name, scheduler in self.schedulers.items():
            if name in loaded:
                scheduler.load_state_dict(loaded.pop(name))
            elif scheduler.last_step == 0 and trainer.global_step > 0:
                pl.utilities.rank_zero_warn(
                    f"DemonCallback: resuming at global step {trainer.global_step}, but the "
                    f"checkpoint holds no state for the MomentumScheduler {name!r}: its schedule "
                    "starts again from step 0"
                )
        if loaded:
            pl.utilities.rank_zero_warn(
                f"DemonCallback: the checkpoint holds the state of MomentumScheduler(s) "
                f"{sorted(loaded)}, which the LightningModule does not have (schedulers are "
                "matched by attribute name); it is not used"
            )

    def _set_total_steps(
        self, trainer: pl.Trainer, optimizers: list[ScheduledMomentumOptimizer]
    ) -> None:
        estimate = trainer.estimated_stepping_batches
        total = _finite_total(estimate)
        self.total_steps = total
        if total is None:
            unset = [
                f"{type(opt).__name__} param_groups[{i}]"
                for opt in optimizers
                for i, group in enumerate(opt.param_groups)
                if group["total_steps"] is None
            ] + [
                f"MomentumScheduler {name!r}"
                for name, scheduler in self.schedulers.items()
                if None in scheduler.total_steps
            ]
            if unset:
                why = (
                    f"max_steps={trainer.max_steps} and max_epochs={trainer.max_epochs}"
                    if estimate == float("inf")
                    else f"the train dataloader has no length and max_steps={trainer.max_steps}"
                )
                raise ConfigError(
                    f"DemonCallback: the Demon schedule needs T, the run's number of optimizer "
                    f"steps, but this run has no bound ({why}); allowed: a bounded run: set "
                    f"Trainer(max_steps=T) or max_epochs (with a sized train dataloader), or "
                    f"give {', '.join(unset)} its own total_steps"
                )
            return  # every optimizer and scheduler has its own T
        how = (
            f"trainer.estimated_stepping_batches with max_epochs={trainer.max_epochs}, "
            f"max_steps={trainer.max_steps}, {trainer.num_training_batches} batches per epoch "
            f"and accumulate_grad_batches={trainer.accumulate_grad_batches}"
        )
        targets: list[tuple[str, Any, Callable[[], list[int | None]]]] = [
            (type(opt).__name__, opt, lambda o=opt: [g["total_steps"] for g in o.param_groups])
            for opt in optimizers
        ] + [
            (f"MomentumScheduler {name!r}", s, lambda s=s: list(s.total_steps))
            for name, s in self.schedulers.items()
        ]
        for label, target, totals in targets:
            before = totals()
            try:
                target.set_total_steps(total, allow_change=self.allow_change)
            except ConfigError as error:
                raise ConfigError(
                    f"DemonCallback: this run takes T={total} optimizer steps ({how}), but "
                    f"{label} refuses it: {error}; if the run's length changed on purpose, "
                    "use DemonCallback(allow_change=True)"
                ) from None
            replaced = [
                f"group {i}: {old} -> {new}"
                for i, (old, new) in enumerate(zip(before, totals(), strict=True))
                if old is not None and old != new
            ]
            if replaced:
                pl.utilities.rank_zero_warn(
                    f"DemonCallback replaced {label}'s total_steps with T={total}, the "
                    f"trainer's number of optimizer steps ({'; '.join(replaced)}). Leave "
                    "total_steps=None to let the callback set it, or give a parameter group "
                    "its own total_steps to keep it."
                )

    # -- stepping the schedulers, recording the momentum ----------------------------------

    def _attach(self, trainer: pl.Trainer, optimizers: list[ScheduledMomentumOptimizer]) -> None:
        index = {id(unwrap(opt)): j for j, opt in enumerate(trainer.optimizers)}
        demon_ids = {id(opt) for opt in optimizers}

        def label(optimizer: Optimizer, fallback: str) -> str:
            j = index.get(id(optimizer))
            return fallback if j is None else f"optimizer{j}"

        # what is logged: each Demon optimizer's applied momentum, and each scheduler's that
        # drives another optimizer (one on a Demon optimizer modulates its beta_init only)
        labels = {id(opt): label(opt, type(opt).__name__) for opt in optimizers}
        for name, scheduler in self.schedulers.items():
            if id(scheduler.optimizer) not in demon_ids:
                labels.setdefault(id(scheduler.optimizer), label(scheduler.optimizer, name))
        one = len(labels) == 1
        prefix = {key: "momentum" if one else f"momentum/{value}" for key, value in labels.items()}
        for opt in optimizers:
            self._handles.append(opt.register_step_post_hook(self._record(prefix[id(opt)])))
        for scheduler in self.schedulers.values():
            logs = id(scheduler.optimizer) not in demon_ids
            names = prefix[id(scheduler.optimizer)] if logs else None
            hook = self._step_scheduler(scheduler, names)
            self._handles.append(scheduler.optimizer.register_step_post_hook(hook))

    @staticmethod
    def _names(prefix: str, groups: list[dict[str, Any]]) -> list[str]:
        """``prefix`` for one group; ``prefix/<group name>`` or ``prefix/group{i}`` for several."""
        if len(groups) == 1:
            return [prefix]
        return [
            f"{prefix}/{g['name']}" if isinstance(g.get("name"), str) else f"{prefix}/group{i}"
            for i, g in enumerate(groups)
        ]

    def _log_values(self, prefix: str, groups: list[dict[str, Any]], values: list[float]) -> None:
        self.momentum.update(zip(self._names(prefix, groups), values, strict=True))
        self._fresh = True

    def _record(self, prefix: str) -> Callable[..., None]:
        def record(optimizer: ScheduledMomentumOptimizer, *_: Any) -> None:
            self._log_values(prefix, optimizer.param_groups, optimizer.get_last_momentum())

        return record

    def _step_scheduler(
        self, scheduler: MomentumScheduler, prefix: str | None
    ) -> Callable[..., None]:
        def step(*_: Any) -> None:
            applied = scheduler.get_last_momentum()  # what the step that just ran used
            scheduler.step()
            if prefix is not None:
                self._log_values(prefix, scheduler.optimizer.param_groups, applied)

        return step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        fresh, self._fresh = self._fresh, False
        # as LearningRateMonitor logs: at Lightning's logging steps, its step count
        loggers = trainer.loggers if fresh and self.log_momentum else []
        if loggers and trainer._logger_connector.should_update_logs:
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for logger in loggers:
                logger.log_metrics(dict(self.momentum), step=step)

    # -- the end of training ----------------------------------------------------------------

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._fresh = [], False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._remove_hooks()

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The MomentumSchedulers' states, by attribute name (``{}`` when there are none)."""
        states = {**self._loaded, **{n: s.state_dict() for n, s in self.schedulers.items()}}
        return {"momentum_schedulers": states} if states else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a checkpoint's scheduler states for ``on_train_start`` (the schedulers are
        made later, in ``configure_optimizers``, and the optimizers' states loaded after)."""
        states = state_dict.get("momentum_schedulers") if isinstance(state_dict, Mapping) else None
        if not isinstance(states, Mapping) or not all(
            isinstance(state, Mapping) for state in states.values()
        ):
            raise invalid(
                "DemonCallback state_dict",
                state_dict,
                "{'momentum_schedulers': {attribute name: MomentumScheduler.state_dict()}}",
            )
        self._loaded = {str(name): dict(state) for name, state in states.items()}
