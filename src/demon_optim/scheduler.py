"""MomentumScheduler: a momentum schedule (Demon or any shape) for any torch optimizer.

Torch has learning-rate schedulers but no momentum scheduler (pytorch#83159). This one
follows ``torch.optim.lr_scheduler.LRScheduler``: construct it on the optimizer (it sets
the step-0 momentum), call ``step()`` after each ``optimizer.step()``, read
``get_last_momentum()``, save and load it with ``state_dict()``. It composes with torch's LR
schedulers (it never touches ``lr``).

It writes ``group["momentum"]`` (SGD, RMSprop) or ``group["betas"][0]`` (Adam, AdamW, NAdam,
RAdam, ...), keeping ``betas[1:]`` as they are; a tensor-valued momentum is filled in place.

Caveat on torch's Adam family: torch bias-corrects the first moment with
``1 - beta1**step`` using the *current* beta1, which is wrong once beta1 moves (the true
correction is ``1 - prod(beta_i)``). Scheduling Adam's beta1 with this class inherits that
error; :class:`demon_optim.DemonAdam` corrects exactly (``damped=True``) or uses the
paper's undamped moment, which needs none.

A step that ``torch.amp.GradScaler`` skips does not call ``optimizer.step()``, but a
scheduler stepped anyway still advances (as torch's LR schedulers do); the Demon
optimizers, whose counter lives in ``step()``, do not.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from . import _checks, schedules
from .errors import ConfigError, invalid
from .optim._base import user_stacklevel

__all__ = ["MomentumScheduler"]

KNOWN_KEYS = ("betas", "momentum")
STATE_KEYS = ("last_step", "total_steps", "keys", "initial_momentum")


def _resolve_key(optimizer: Optimizer, group: dict[str, Any], key: str | None) -> str:
    """The group entry holding the momentum: ``key``, the optimizer's declared key, a known one."""
    key = key or getattr(optimizer, "momentum_key", None)
    if key is not None:
        if key not in group:
            raise invalid("key", key, sorted(map(str, group)))
        return key
    for known in KNOWN_KEYS:
        if known in group:
            return known
    raise ConfigError(
        f"{type(optimizer).__name__} has no 'momentum' or 'betas' in its parameter groups "
        f"(keys: {', '.join(sorted(map(str, group)))}); pass key= to name the entry to schedule"
    )


def _unset_total_steps() -> ConfigError:
    return ConfigError(
        "MomentumScheduler: total_steps is not set: pass total_steps=T (the run's optimizer "
        "steps) or call set_total_steps(T) before stepping (demon_optim.integrations does it "
        "for Lightning and the Hugging Face Trainer)"
    )


class MomentumScheduler:
    """Set each parameter group's momentum from a schedule at every step.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        schedule: a name from :data:`demon_optim.schedules.SCHEDULES` (``"demon"``,
            ``"linear"``, ``"cosine"``, ``"exponential"``, ``"one_cycle"``, ...) or a callable
            ``(k, T, beta_init) -> beta``.
        total_steps: ``T``, one int or one per group (optimizer steps, not epochs);
            ``None`` (or ``None`` for some groups) leaves it to :meth:`set_total_steps`,
            which a framework's callback calls when training starts.
        key: the group entry to schedule; default ``"betas"`` (index 0) or ``"momentum"``.
            A tuple or list entry has its first element scheduled.
        last_step: the number of steps already taken when resuming without a state dict;
            ``-1`` (default) starts fresh and reads each group's momentum as its beta_init.
        **schedule_options: keyword options of the named schedule
            (e.g. ``base_momentum=0.85`` for ``"one_cycle"``, ``delay=0.75`` for ``"demon"``).

    Each group's initial momentum is its ``beta_init`` (kept as
    ``group["initial_momentum"]``). The counter ``last_step`` is the number of ``step()``
    calls so far; the momentum set for the next optimizer step is
    ``schedule(last_step, T, beta_init)``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: str | Callable[[int, int, float], float] = "demon",
        *,
        total_steps: int | Sequence[int | None] | None = None,
        key: str | None = None,
        last_step: int = -1,
        **schedule_options: Any,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise invalid("optimizer", type(optimizer).__name__, "a torch.optim.Optimizer")
        self.optimizer = optimizer
        self.schedule = schedule
        self.schedule_options = schedule_options
        self._schedule_fn = schedules.get(schedule, **schedule_options)
        groups = optimizer.param_groups
        totals = list(total_steps) if isinstance(total_steps, Sequence) else [total_steps]
        if len(totals) == 1:
            totals *= len(groups)
        if len(totals) != len(groups):
            raise invalid("total_steps", total_steps, f"one int or {len(groups)} ints")
        self.total_steps: list[int | None] = [
            None if t is None else _checks.total_steps("total_steps", t) for t in totals
        ]
        # the groups whose T is left to set_total_steps
        self._follows_default_total = [t is None for t in self.total_steps]
        self.keys = [_resolve_key(optimizer, g, key) for g in groups]
        if last_step != -1:
            _checks.step_count("last_step", last_step)
        for group, k in zip(groups, self.keys, strict=True):
            if last_step == -1:
                group["initial_momentum"] = float(self._read(group, k))
            elif "initial_momentum" not in group:
                raise ConfigError(
                    "last_step: resuming needs group['initial_momentum'] in every group "
                    "(restore it with load_state_dict, or start with last_step=-1)"
                )
            _checks.unit_interval("initial momentum", group["initial_momentum"])
        self.last_step = max(last_step, 0)
        self._warned_past_end = False
        self._apply()

    # -- reading and writing the group entry --------------------------------------------

    @staticmethod
    def _read(group: dict[str, Any], key: str) -> Any:
        value = group[key]
        return value[0] if isinstance(value, (tuple, list)) else value

    @staticmethod
    def _write(group: dict[str, Any], key: str, beta: float) -> None:
        value = group[key]
        current = value[0] if isinstance(value, (tuple, list)) else value
        if isinstance(current, torch.Tensor):
            current.fill_(beta)  # keep the tensor (torch.compile / capturable users hold it)
        elif isinstance(value, (tuple, list)):
            group[key] = type(value)((beta, *value[1:]))
        else:
            group[key] = beta

    def _betas(
        self, last_step: int, totals: Sequence[int | None], initial: Sequence[float]
    ) -> list[float]:
        """The momentum each group gets at ``last_step`` (pure: checks, changes nothing)."""
        betas = []
        for total, beta_init in zip(totals, initial, strict=True):
            if total is None:
                if last_step > 0:
                    raise _unset_total_steps()
                betas.append(beta_init)  # every schedule starts at beta_init, whatever T is
                continue
            beta = self._schedule_fn(last_step, total, beta_init)
            if not 0.0 <= beta < 1.0:
                raise invalid("schedule", f"{self.schedule!r} gave {beta}", "values in [0, 1)")
            betas.append(beta)
        return betas

    def _apply(self) -> None:
        groups = self.optimizer.param_groups
        initial = [g["initial_momentum"] for g in groups]
        betas = self._betas(self.last_step, self.total_steps, initial)
        for group, key, beta in zip(groups, self.keys, betas, strict=True):
            self._write(group, key, beta)

    # -- the LRScheduler-like interface ------------------------------------------------------

    def set_total_steps(self, total_steps: int, *, allow_change: bool = False) -> None:
        """Set ``T`` for every group constructed without one (``total_steps=None``).

        Groups given their own ``T`` keep it. Setting the ``T`` a group already has does
        nothing; changing it once steps have been taken is refused unless
        ``allow_change=True`` (the next momentum then follows the new ``T`` from the current
        count). After :meth:`load_state_dict` the loaded ``T`` is in place, so a framework
        that calls this on resume with the same ``T`` changes nothing.
        """
        total = _checks.total_steps("total_steps", total_steps)
        _checks.flag("allow_change", allow_change)
        targets = [
            i
            for i, (t, follow) in enumerate(
                zip(self.total_steps, self._follows_default_total, strict=True)
            )
            if follow or t is None
        ]
        if not allow_change and self.last_step > 0:
            for i in targets:
                if self.total_steps[i] not in (None, total):
                    raise invalid(
                        "total_steps",
                        total,
                        f"{self.total_steps[i]}, the T group {i} has been using for "
                        f"{self.last_step} steps (pass allow_change=True to change it)",
                    )
        totals = list(self.total_steps)
        for i in targets:
            totals[i] = total
        self._betas(
            self.last_step, totals, [g["initial_momentum"] for g in self.optimizer.param_groups]
        )
        self.total_steps = totals
        self._warned_past_end = False
        self._apply()

    def step(self) -> None:
        """Advance the counter by one and set the momentum for the next optimizer step."""
        if any(t is None for t in self.total_steps):
            raise _unset_total_steps()
        self.last_step += 1
        if not self._warned_past_end and any(self.last_step > t for t in self.total_steps):
            self._warned_past_end = True
            warnings.warn(
                f"MomentumScheduler: step {self.last_step} is past total_steps="
                f"{self.total_steps}; the momentum is held at the schedule's end value.",
                stacklevel=user_stacklevel(),
            )
        self._apply()

    def get_last_momentum(self) -> list[float]:
        """The momentum now set in each group (the one the next optimizer step will use)."""
        return [
            float(self._read(g, k))
            for g, k in zip(self.optimizer.param_groups, self.keys, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        """The counter and settings; a callable schedule is not saved (pass it again)."""
        return {
            "last_step": self.last_step,
            "total_steps": list(self.total_steps),
            "keys": list(self.keys),
            "schedule": self.schedule if isinstance(self.schedule, str) else None,
            "schedule_options": dict(self.schedule_options),
            "initial_momentum": [g["initial_momentum"] for g in self.optimizer.param_groups],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counter (and each group's beta_init), then re-apply the momentum.

        Every field is checked first, as the constructor checks its arguments: a state dict
        that is not a MomentumScheduler's for this optimizer is refused with a ConfigError
        naming the field, and the scheduler and optimizer are left as they were. As for the
        optimizers (and torch), the loaded ``total_steps`` replace the constructor's; a
        difference is warned about.
        """
        groups = self.optimizer.param_groups
        if not isinstance(state_dict, Mapping):
            raise invalid("state_dict", state_dict, "a MomentumScheduler.state_dict()")
        missing = [k for k in STATE_KEYS if k not in state_dict]
        if missing:
            raise ConfigError(
                f"state_dict: missing {', '.join(map(repr, missing))}; allowed: a "
                f"MomentumScheduler state dict, which holds {', '.join(STATE_KEYS)} (is it "
                "another scheduler's?)"
            )
        last_step = _checks.step_count("state_dict last_step", state_dict["last_step"])

        def per_group(field: str) -> list[Any]:
            value = state_dict[field]
            if not isinstance(value, (list, tuple)) or len(value) != len(groups):
                raise invalid(
                    f"state_dict {field}", value, f"a list of {len(groups)}, one per group"
                )
            return list(value)

        totals = [
            None if t is None else _checks.total_steps(f"state_dict total_steps[{i}]", t)
            for i, t in enumerate(per_group("total_steps"))
        ]
        keys = per_group("keys")
        for i, (group, key) in enumerate(zip(groups, keys, strict=True)):
            if not isinstance(key, str) or key not in group:
                raise invalid(f"state_dict keys[{i}]", key, sorted(map(str, group)))
        initial = [
            _checks.unit_interval(f"state_dict initial_momentum[{i}]", beta)
            for i, beta in enumerate(per_group("initial_momentum"))
        ]
        betas = self._betas(last_step, totals, initial)
        # all checked: apply
        if any(
            mine is not None and loaded != mine
            for mine, loaded in zip(self.total_steps, totals, strict=True)
        ):
            warnings.warn(
                f"MomentumScheduler.load_state_dict: the state dict's total_steps={totals} "
                f"replaces the constructor's {self.total_steps}: loaded values win, as in "
                "torch.",
                stacklevel=user_stacklevel(),
            )
        self.last_step, self.total_steps, self.keys = last_step, totals, keys
        for group, key, beta_init, beta in zip(groups, keys, initial, betas, strict=True):
            group["initial_momentum"] = beta_init
            self._write(group, key, beta)
