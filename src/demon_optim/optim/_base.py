"""What every momentum-scheduled optimizer here shares: the step counter, the schedule, checks.

The schedule's counter ``k`` lives in each parameter group as ``group["schedule_step"]``, so
it travels with ``state_dict()`` (and with tools that only understand ``state`` and
``param_groups``, such as distributed checkpointing). Every group advances exactly once per
``step()``, however many groups or parameters there are, and whether or not a parameter has
a gradient. A group added later with ``add_param_group`` starts its own count at 0.
"""

from __future__ import annotations

import numbers
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from .. import schedules
from ..errors import invalid

ScheduleArg = str | Callable[[int, int, float], float]

STEP_KEY = "schedule_step"


def outside_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compiler.disable``, made on first use: importing ``torch._dynamo`` costs about
    a second, which eager users (and every worker of a study) should not pay at import."""
    return torch._disable_dynamo(fn)


def evaluate_closure(closure: Callable[[], Any] | None) -> Any:
    """The loss from ``closure`` (re-evaluated with gradients on), or None: torch's contract."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside torch and us."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        "demon_optim",
        "torch",
    ):
        frame, level = frame.f_back, level + 1
    return level


def check_nonnegative(value: Any, name: str) -> None:
    """Raise a ConfigError naming ``name`` unless ``value`` is a real number (or tensor) >= 0."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not bool(value.detach() >= 0):
            raise invalid(name, value, "numbers >= 0 (or a one-element tensor)")
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= 0:
        raise invalid(name, value, "numbers >= 0")


def check_schedule(schedule: object, delay: object) -> None:
    """Validate a schedule name or callable, and a delay (only the demon schedule has one)."""
    if not (callable(schedule) or schedule in schedules.SCHEDULES):
        raise invalid("schedule", schedule, [*sorted(schedules.SCHEDULES), "or a callable"])
    schedules.check_fraction(delay, "delay")
    if delay and schedule != "demon":
        raise invalid("delay", delay, "0 unless schedule='demon'")


class ScheduledMomentumOptimizer(Optimizer):
    """Base class: advances each group's schedule counter once per step and reports beta.

    Subclasses name the group key that holds ``beta_init`` (:attr:`momentum_key`) and
    implement :meth:`_update_group`, which receives the beta of this step.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._warned_past_end = False
        super().__init__(params, defaults)

    # -- hyperparameters -----------------------------------------------------------------

    def _beta_init(self, group: dict[str, Any]) -> float:
        raise NotImplementedError

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Check a group's hyperparameters; subclasses extend it."""
        check_nonnegative(group["lr"], "lr")
        schedules.check_total_steps(group["total_steps"])
        check_schedule(group["schedule"], group["delay"])
        schedules.check_step(group[STEP_KEY], STEP_KEY)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group.setdefault(STEP_KEY, 0)
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_warned_past_end", False)

    # -- the schedule ----------------------------------------------------------------------

    @staticmethod
    def scheduled_beta(group: dict[str, Any], beta_init: float, step: int) -> float:
        """The momentum the group's schedule gives at ``step`` (pure; reads no counter)."""
        schedule, total = group["schedule"], group["total_steps"]
        if schedule == "demon":
            return schedules.demon(step, total, beta_init, group["delay"])
        beta = schedules.get(schedule)(step, total, beta_init)
        if not 0.0 <= beta < 1.0:
            raise invalid("schedule", f"{schedule!r} returned {beta} at step {step}", "[0, 1)")
        return beta

    @outside_compile
    def _advance_schedules(self, as_tensors: bool = False) -> list[Any]:
        """Return this step's beta per group and advance every group's counter by one.

        Runs eagerly even inside ``torch.compile``: the counter is a Python int and beta a
        Python float, and tracing them would recompile the step each time they change. For a
        compiled step (``as_tensors``) beta comes back as a 0-d float64 tensor, which the
        compiled graph takes as an input instead of baking it in as a constant.
        """
        betas = []
        for group in self.param_groups:
            step = group[STEP_KEY]
            if step >= group["total_steps"] and not self._warned_past_end:
                self._warned_past_end = True
                warnings.warn(
                    f"{type(self).__name__}: step {step} is at or past total_steps="
                    f"{group['total_steps']}; the {group['schedule']!r} momentum is held at "
                    "its end value from here on. Set total_steps to the run's number of "
                    "optimizer steps.",
                    stacklevel=user_stacklevel(),
                )
            betas.append(self.scheduled_beta(group, self._beta_init(group), step))
            group[STEP_KEY] = step + 1
        if as_tensors:
            return [torch.tensor(beta, dtype=torch.float64) for beta in betas]
        return betas

    def get_last_momentum(self) -> list[float]:
        """The momentum applied at the last ``step()``, one per group.

        Before the first step it is the momentum the first step will apply. The value is
        reported, never written back into the group: ``group`` keeps ``beta_init``.
        """
        return [
            self.scheduled_beta(group, self._beta_init(group), max(group[STEP_KEY] - 1, 0))
            for group in self.param_groups
        ]

    # -- the step ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (advances every group's schedule by one)."""
        loss = evaluate_closure(closure)
        compiling = torch.compiler.is_compiling()
        betas = self._advance_schedules(as_tensors=compiling)
        for group, beta in zip(self.param_groups, betas, strict=True):
            self._update_group(group, beta, compiling)
        return loss

    def _update_group(self, group: dict[str, Any], beta: Any, compiling: bool) -> None:
        """Update the group's parameters with this step's ``beta`` (a float, or a 0-d tensor
        when ``compiling``)."""
        raise NotImplementedError


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return type(tensor).__name__ == "DTensor"  # without importing torch.distributed


def use_fused(fused: bool | None, params: list[torch.Tensor], dtensor_ok: bool = True) -> bool:
    """Whether torch's fused kernels can take these tensors (CPU or CUDA, real floats, dense).

    ``dtensor_ok``: whether the kernel has a DTensor sharding rule (FSDP2 parameters);
    torch 2.13 has one for fused Adam but not for fused SGD.
    """
    if fused is False:
        return False
    ok = all(
        p.device.type in ("cpu", "cuda")
        and p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        and not p.is_sparse
        and (dtensor_ok or not _is_dtensor(p))
        for p in params
    )
    if fused and not ok:
        allowed = "True only for dense float tensors on CPU or CUDA"
        raise invalid("fused", fused, allowed + ("" if dtensor_ok else ", not DTensors"))
    return ok


def group_by_device_dtype(*lists: list[Any]) -> list[tuple[list[Any], ...]]:
    """Split parallel lists of tensors into runs that share (device, dtype) of the first list."""
    buckets: dict[tuple[torch.device, torch.dtype], tuple[list[Any], ...]] = {}
    for items in zip(*lists, strict=True):
        key = (items[0].device, items[0].dtype)
        bucket = buckets.setdefault(key, tuple([] for _ in lists))
        for dest, item in zip(bucket, items, strict=True):
            dest.append(item)
    return list(buckets.values())
