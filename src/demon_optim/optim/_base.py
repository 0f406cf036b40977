"""What every optimizer here shares: checks, the tensors a step works on, the schedule.

The one module for it (the Demon optimizers and the reference ones, QHM, QHAdam, AggMo and
YellowFin, alike); torch's fused Adam kernel, which DemonAdam and QHAdam both drive, is
wrapped once in :mod:`._fused_adam`.

* :func:`check_schedule`, for a schedule and its delay; every other value is checked with
  :mod:`demon_optim._checks`, which raises a :class:`~demon_optim.ConfigError` that names the
  argument, the value and what is allowed.
* :class:`ScheduledMomentumOptimizer`, the base of the Demon optimizers: the schedule's
  counter and the step.
* The fast paths' helpers: :func:`use_fused` (:func:`use_fused_sgd`), :func:`group_by_device_dtype`,
  :func:`runs_by`, :func:`cache_batches`, :func:`effective_grads`; and for a step on a GPU,
  :func:`host_to_device` and :func:`scalars_on`, which put a step's scalars on the
  parameters' device without making the host wait for it.

In the Demon optimizers the schedule's counter ``k`` lives in each parameter group as
``group["schedule_step"]``, so it travels with ``state_dict()`` (and with tools that only
understand ``state`` and ``param_groups``, such as distributed checkpointing). Every group
advances exactly once per ``step()``, however many groups or parameters there are, and
whether or not a parameter has a gradient. A group added later with ``add_param_group``
starts its own count at 0.

Also shared by every optimizer here:

* :func:`gather` collects a group's parameters that have a gradient, in the one loop a step
  already makes over them. A complex parameter is updated as its real view
  (``torch.view_as_real``, torch's convention), so every optimizer treats ``z = a + bi`` as
  the pair ``(a, b)``; a sparse gradient is refused with torch's message unless the
  optimizer supports it (DemonSGD does, as torch's SGD).
* :class:`CheckedOptimizer` validates every parameter group with ``_validate_group``: at
  construction, in ``add_param_group`` and in ``load_state_dict`` (a loaded state dict's
  groups are checked as constructor arguments are, before anything is applied); its
  ``_gather_groups`` starts a reference optimizer's step.
* A ``step()`` checks everything it can before it changes anything: a step that raises
  leaves the parameters, the state and the schedule counters as they were.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import torch
from torch.optim import Optimizer

from .. import _checks, schedules
from ..errors import ConfigError, invalid

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


def check_schedule(schedule: object, delay: object) -> None:
    """Validate a schedule name or callable, and a delay (only the demon schedule has one)."""
    if not (callable(schedule) or schedule in schedules.SCHEDULES):
        raise invalid("schedule", schedule, [*sorted(schedules.SCHEDULES), "or a callable"])
    _checks.unit_interval("delay", delay)
    if delay and schedule != "demon":
        raise invalid("delay", delay, "0 unless schedule='demon'")


# --- the tensors a step works on ---------------------------------------------------------------


class Gathered(NamedTuple):
    """A group's parameters that have a gradient this step, as the update sees them."""

    keys: list[torch.Tensor]
    """The parameters themselves: the keys of ``optimizer.state``."""
    params: list[torch.Tensor]
    """The tensors to update: a complex parameter's real view, else the parameter."""
    grads: list[torch.Tensor]
    """Their gradients, viewed alike (a sparse gradient is left as it is)."""
    sparse: bool
    """Some gradient is sparse (only where the optimizer accepts them)."""
    complex: bool
    """Some parameter is complex: its state tensors need :func:`real_view` too."""


def sparse_error(optimizer: Optimizer) -> RuntimeError:
    """torch's error for an optimizer that takes dense gradients only."""
    return RuntimeError(f"{type(optimizer).__name__} does not support sparse gradients")


def gather(optimizer: Optimizer, group: dict[str, Any], sparse_ok: bool = False) -> Gathered:
    """The group's parameters with a gradient, their gradients, and what kind they are.

    This is the one loop a step makes over the group's parameters before updating them, so
    the checks cost nothing extra. A complex parameter with a dense gradient is updated
    through ``torch.view_as_real`` (torch's convention: every element-wise formula then
    applies to the real and imaginary parts separately; ``g * g`` on the complex numbers
    themselves would give Adam's second moment a negative real part). A sparse gradient
    raises torch's ``RuntimeError`` unless ``sparse_ok``.
    """
    keys, params, grads = [], [], []
    sparse = is_complex = False
    for p in group["params"]:
        g = p.grad
        if g is None:
            continue
        keys.append(p)
        if g.layout is not torch.strided:
            if not sparse_ok:
                raise sparse_error(optimizer)
            sparse = True
        elif p.is_complex():
            is_complex = True
            p, g = torch.view_as_real(p), torch.view_as_real(g)
        params.append(p)
        grads.append(g)
    return Gathered(keys, params, grads, sparse, is_complex)


def real_view(state_tensor: torch.Tensor) -> torch.Tensor:
    """A complex (dense) state tensor as its real view, the layout the update works on."""
    if state_tensor.is_complex() and state_tensor.layout is torch.strided:
        return torch.view_as_real(state_tensor)
    return state_tensor


def param_layout(tensor: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A state tensor made from a real view, stored in its parameter's own (complex) layout,
    as torch stores it (so state dicts keep the parameter's dtype and shape)."""
    if param.is_complex() and not tensor.is_complex() and tensor.layout is torch.strided:
        return torch.view_as_complex(tensor)
    return tensor


# --- validation, also of loaded state dicts ------------------------------------------------------


class CheckedOptimizer(Optimizer):
    """An Optimizer whose every parameter group is checked by :meth:`_validate_group`.

    Groups are checked at construction, in ``add_param_group``, and in ``load_state_dict``:
    a state dict whose groups lack this optimizer's hyperparameters (another optimizer's),
    hold a value the constructor would refuse (``lr=nan``), or whose state tensors do not
    fit their parameters is refused with a :class:`~demon_optim.ConfigError` naming the
    entry, and the optimizer is left exactly as it was. As in torch, the loaded
    hyperparameters replace the optimizer's own.
    """

    required_group_keys: ClassVar[tuple[str, ...]] = ()
    """Group entries a state dict must hold besides the constructor's defaults."""
    optional_group_keys: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    """Group entries an older state dict may lack, with the value they then take."""

    def _validate_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self._validate_group(self.param_groups[-1])
        except ConfigError:
            self.param_groups.pop()  # a refused group is not left half-added
            raise

    def _gather_groups(self) -> list[tuple[dict[str, Any], Gathered]]:
        """Every group that has gradients, with its tensors (complex parameters as real
        views); a sparse gradient raises here, before any group is updated. The reference
        optimizers' steps start with it (the Demon ones gather in their own ``step``)."""
        work = []
        for group in self.param_groups:
            batch = gather(self, group)
            if batch.keys:
                work.append((group, batch))
        return work

    def _check_state(self, param: torch.Tensor, state: Mapping[Any, Any], where: str) -> None:
        """Check a loaded parameter's state (``{}`` when the state dict has none for it).

        Every state tensor that is not a scalar must have its parameter's shape (a list of
        tensors, AggMo's buffers, likewise). Subclasses extend it for state they require.
        """
        for key, value in state.items():
            tensors = value if isinstance(value, (list, tuple)) else [value]
            for tensor in tensors:
                if (
                    isinstance(tensor, torch.Tensor)
                    and tensor.dim() > 0
                    and tensor.shape != param.shape
                ):
                    raise invalid(
                        f"{where}.{key}",
                        f"a tensor of shape {tuple(tensor.shape)}",
                        f"its parameter's shape {tuple(param.shape)}",
                    )

    def _checked_groups(self, state_dict: Any) -> list[dict[str, Any]]:
        """The groups ``load_state_dict`` would install, each validated; raises on the first
        problem, having changed nothing."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            shown = sorted(state_dict) if isinstance(state_dict, Mapping) else state_dict
            raise invalid("state_dict", shown, f"a {name}.state_dict() (state, param_groups)")
        saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(saved_state, Mapping):
            raise invalid("state_dict state", saved_state, "a dict: parameter id -> its state")
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(
            self.param_groups
        ):
            count = len(saved_groups) if isinstance(saved_groups, (list, tuple)) else saved_groups
            raise invalid(
                "state_dict param_groups",
                count,
                f"{len(self.param_groups)} groups, as this optimizer has",
            )
        # torch adds "differentiable" to the defaults of an optimizer it has loaded into
        required = (
            (set(self.defaults) | set(self.required_group_keys))
            - set(self.optional_group_keys)
            - {"differentiable"}
        )
        merged = []
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            where = f"state_dict param_groups[{i}]"
            if not isinstance(saved, Mapping) or "params" not in saved:
                raise invalid(where, saved, "a dict with 'params' and the hyperparameters")
            if len(saved["params"]) != len(group["params"]):
                raise invalid(
                    f"{where}.params",
                    f"{len(saved['params'])} parameters",
                    f"{len(group['params'])}, as this optimizer's group has",
                )
            missing = sorted(required - set(saved))
            if missing:
                raise ConfigError(
                    f"{where}: missing {', '.join(map(repr, missing))}; allowed: a {name} "
                    f"state dict, whose groups hold {', '.join(sorted(required))} (is it "
                    "another optimizer's?)"
                )
            candidate = {**self.optional_group_keys, **saved, "params": group["params"]}
            try:
                self._validate_group(candidate)
            except ConfigError as error:
                raise ConfigError(f"{where}.{error}") from None
            merged.append(candidate)
            for pid, param in zip(saved["params"], group["params"], strict=True):
                state = saved_state.get(pid, {})
                if not isinstance(state, Mapping):
                    raise invalid(f"state_dict state[{pid}]", state, "a dict of state entries")
                self._check_state(param, state, f"state_dict state[{pid}]")
        return merged

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict after checking it as the constructor checks its arguments.

        Refused (a ConfigError naming the entry, the optimizer unchanged): another
        optimizer's state dict (its groups lack this one's hyperparameters), a value the
        constructor would refuse, a state tensor whose shape is not its parameter's.
        Loaded hyperparameters replace the optimizer's own, as in torch; a different
        ``total_steps`` is warned about (once per call).
        """
        merged = self._checked_groups(state_dict)
        changed = [
            f"param_groups[{i}]: {new['total_steps']} replaces {group['total_steps']}"
            for i, (group, new) in enumerate(zip(self.param_groups, merged, strict=True))
            if group.get("total_steps") is not None and new["total_steps"] != group["total_steps"]
        ]
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for key, value in self.optional_group_keys.items():
                group.setdefault(key, value)
        if changed:
            warnings.warn(
                f"{type(self).__name__}.load_state_dict: the state dict's total_steps "
                f"replaces the constructor's ({'; '.join(changed)}): loaded hyperparameters "
                "win, as in torch. Set group['total_steps'] after loading to change it.",
                stacklevel=user_stacklevel(),
            )


class ScheduledMomentumOptimizer(CheckedOptimizer):
    """Base class: advances each group's schedule counter once per step and reports beta.

    Subclasses name the group key that holds ``beta_init`` (:meth:`_beta_init`) and
    implement :meth:`_update_group`, which receives the group's gathered tensors and the
    beta of this step. :meth:`_gather` may refuse a step before anything has changed.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._warned_past_end = False
        super().__init__(params, defaults)

    # -- hyperparameters -----------------------------------------------------------------

    def _beta_init(self, group: dict[str, Any]) -> float:
        raise NotImplementedError

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Check a group's hyperparameters; subclasses extend it."""
        _checks.learning_rate("lr", group["lr"], tensor_ok=True)
        if group["total_steps"] is not None:  # None: set later by set_total_steps
            _checks.total_steps("total_steps", group["total_steps"])
        check_schedule(group["schedule"], group["delay"])
        _checks.step_count(STEP_KEY, group[STEP_KEY])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group.setdefault(STEP_KEY, 0)
        # a group without its own T follows the optimizer's (set_total_steps changes it)
        follows = param_group.get("total_steps") is None
        super().add_param_group(param_group)
        self.__dict__.setdefault("_follows_default_total", []).append(follows)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_warned_past_end", False)
        if "_follows_default_total" not in self.__dict__:  # torch pickles groups, not this
            default = self.defaults.get("total_steps")
            self._follows_default_total = [
                g["total_steps"] is None or g["total_steps"] == default for g in self.param_groups
            ]

    # -- T known late -------------------------------------------------------------------

    def set_total_steps(self, total_steps: int, *, allow_change: bool = False) -> None:
        """Set ``T`` for the optimizer and every group that follows it.

        For frameworks that know the run's length only when training starts
        (:mod:`demon_optim.integrations`). The groups given their own ``total_steps`` keep
        it; every other group takes ``total_steps``, and so do groups added later. Setting
        the ``T`` a group already has does nothing. Changing a group's ``T`` once it has
        taken steps is refused unless ``allow_change=True`` (the momentum of the next step
        then follows the new ``T`` from the current count: the schedule jumps). A loaded
        checkpoint's groups hold their ``T``: a framework that calls this after loading
        with the same ``T`` changes nothing.

        Raises:
            ConfigError: ``total_steps`` is not an integer in [1, 2**53], or it would change
                a ``T`` already in use without ``allow_change=True``.
        """
        total = _checks.total_steps("total_steps", total_steps)
        _checks.flag("allow_change", allow_change)
        follows = self._follows_default_total
        targets = [
            (i, group)
            for i, (group, follow) in enumerate(zip(self.param_groups, follows, strict=True))
            if follow or group["total_steps"] is None
        ]
        if not allow_change:
            for i, group in targets:
                if group["total_steps"] not in (None, total) and group[STEP_KEY] > 0:
                    raise invalid(
                        "total_steps",
                        total,
                        f"{group['total_steps']}, the T param_groups[{i}] has been using for "
                        f"{group[STEP_KEY]} steps (pass allow_change=True to change it)",
                    )
        self.defaults["total_steps"] = total
        for _, group in targets:
            group["total_steps"] = total
        self._warned_past_end = False

    # -- the schedule ----------------------------------------------------------------------

    @staticmethod
    def scheduled_beta(group: dict[str, Any], beta_init: float, step: int) -> float:
        """The momentum the group's schedule gives at ``step`` (pure; reads no counter)."""
        schedule, total = group["schedule"], group["total_steps"]
        if total is None:
            raise ConfigError(
                "total_steps is not set: pass total_steps=T (the run's optimizer steps) or "
                "call set_total_steps(T) before the first step (demon_optim.integrations "
                "does it for Lightning and the Hugging Face Trainer)"
            )
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
        # every beta first: a schedule that raises for one group advances no group
        betas = [
            self.scheduled_beta(group, self._beta_init(group), group[STEP_KEY])
            for group in self.param_groups
        ]
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
            self._beta_init(group)  # every schedule starts at beta_init, whatever T will be
            if group["total_steps"] is None and group[STEP_KEY] == 0
            else self.scheduled_beta(group, self._beta_init(group), max(group[STEP_KEY] - 1, 0))
            for group in self.param_groups
        ]

    # -- the step ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (advances every group's schedule by one).

        Every group's gradients are gathered and checked, and every beta computed, before
        anything changes: a step that raises leaves the counters and parameters as they were.
        """
        loss = evaluate_closure(closure)
        compiling = torch.compiler.is_compiling()
        batches = [self._gather(group) for group in self.param_groups]
        betas = self._advance_schedules(as_tensors=compiling)
        for group, batch, beta in zip(self.param_groups, batches, betas, strict=True):
            if batch.keys:
                self._update_group(group, batch, beta, compiling)
        return loss

    def _gather(self, group: dict[str, Any]) -> Gathered:
        """The group's tensors for this step (raising before any change if it cannot run)."""
        return gather(self, group)

    def _update_group(
        self, group: dict[str, Any], batch: Gathered, beta: Any, compiling: bool
    ) -> None:
        """Update the group's parameters with this step's ``beta`` (a float, or a 0-d tensor
        when ``compiling``)."""
        raise NotImplementedError


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return type(tensor).__name__ == "DTensor"  # without importing torch.distributed


FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

DEFAULT_FUSED_DEVICES = ("cpu", "cuda")
"""Where ``fused=None`` takes torch's fused kernels: the devices this library is tested on.
``fused=True`` also takes them wherever torch has them (:func:`fused_devices`)."""


@functools.cache
def fused_devices() -> tuple[str, ...]:
    """The device types that torch's fused SGD and Adam kernels accept (torch's own list:
    cpu, cuda, mps, xpu, ... in torch 2.13)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a private helper: fall back to the devices we test on
        return DEFAULT_FUSED_DEVICES
    return (*DEFAULT_FUSED_DEVICES, *_get_fused_kernels_supported_devices())


REDUCED_DTYPES = (torch.float16, torch.bfloat16)


def use_fused(
    fused: bool | None,
    params: list[torch.Tensor],
    dtensor_ok: bool = True,
    complex_ok: bool = False,
    cpu_reduced_ok: bool = True,
) -> bool:
    """Whether torch's fused kernels can take these tensors (floats, dense, on a device
    they support: CPU or CUDA by default, any of :func:`fused_devices` with ``fused=True``).

    ``dtensor_ok``: whether the kernel has a DTensor sharding rule (FSDP2 parameters);
    torch 2.13 has one for fused Adam but not for fused SGD. ``complex_ok``: the optimizer
    hands complex parameters to the kernel as their real views (see :func:`gather`).
    ``cpu_reduced_ok=False`` (the SGD kernel's users): float16 and bfloat16 tensors on the
    CPU take the for-loop, because torch's CPU fused SGD kernel gets them wrong (torch
    2.13: its vectorised loop never writes the parameters back and reads the momentum
    buffer as float32; only the tail of each chunk is updated). Sparse *gradients* are the
    caller's to check (``Gathered.sparse``): they never take the fused path. Parameters on
    several devices are fine: every kernel call takes one (device, dtype) run of them
    (:func:`group_by_device_dtype`).
    """
    if fused is False:
        return False
    devices = fused_devices() if fused else DEFAULT_FUSED_DEVICES
    dtypes = FUSED_DTYPES + ((torch.complex64, torch.complex128) if complex_ok else ())
    # Runs on every step: the few distinct kinds are checked, not each tensor (a per-tensor
    # test costs about 1.4 us a tensor, device.type alone 1 us, a visible part of a step).
    kinds = {(device.type, dtype) for device, dtype in {(p.device, p.dtype) for p in params}}
    ok = (
        all(
            device in devices
            and dtype in dtypes
            and (cpu_reduced_ok or device != "cpu" or dtype not in REDUCED_DTYPES)
            for device, dtype in kinds
        )
        and {p.layout for p in params} <= {torch.strided}
        and (dtensor_ok or not any(map(_is_dtensor, params)))
    )
    if fused and not ok:
        where = ", ".join(dict.fromkeys(devices))
        allowed = f"True only for dense float tensors on a device with fused kernels ({where})"
        if not dtensor_ok:
            allowed += ", not DTensors"
        if not cpu_reduced_ok:
            allowed += (
                ", not float16/bfloat16 on the CPU (torch's CPU fused SGD kernel gets them wrong)"
            )
        raise invalid("fused", fused, allowed)
    return ok


def use_fused_sgd(fused: bool | None, params: list[torch.Tensor], complex_ok: bool = False) -> bool:
    """:func:`use_fused` for torch's fused SGD kernel: no DTensors, no float16/bfloat16 on
    the CPU."""
    return use_fused(fused, params, dtensor_ok=False, complex_ok=complex_ok, cpu_reduced_ok=False)


def group_by_device_dtype(*lists: list[Any]) -> list[tuple[list[Any], ...]]:
    """Split parallel lists of tensors into runs that share (device, dtype) of the first list."""
    first = lists[0]
    # the usual case, one device and dtype, without a Python loop that builds the buckets
    if (
        first
        and all(len(items) == len(first) for items in lists)
        and len({t.dtype for t in first}) == 1
        and len({t.device for t in first}) == 1
    ):
        return [tuple(list(items) for items in lists)]
    buckets: dict[tuple[torch.device, torch.dtype], tuple[list[Any], ...]] = {}
    for items in zip(*lists, strict=True):
        key = (items[0].device, items[0].dtype)
        bucket = buckets.setdefault(key, tuple([] for _ in lists))
        for dest, item in zip(bucket, items, strict=True):
            dest.append(item)
    return list(buckets.values())


def runs_by(keys: Iterable[Hashable]) -> dict[Any, list[int]]:
    """The indices of equal keys, in first-seen order: one kernel call takes one set of
    scalars, and parameters that missed gradients on some steps have their own (their
    bias corrections, buffer scales)."""
    runs: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        runs.setdefault(key, []).append(i)
    return runs


# The fast paths of QHAdam, AggMo and YellowFin make more than one pass over the same tensors
# (a kernel call, then a correction or the next buffer). Done batch by batch on a CPU, the
# second pass reads tensors the first one just left in cache. 2**19 float32 values is 2 MiB
# per tensor list. On a GPU every batch is one more kernel launch per pass, and a step over
# tens of millions of values would be bound by launches (each a few microseconds on the host)
# rather than by memory: there the whole run of tensors is one batch, one multi-tensor
# launch per pass, as torch's own fused optimizers do.
CACHE_BATCH_NUMEL = 1 << 19


def cache_batches(tensors: Sequence[torch.Tensor], limit: int | None = None) -> list[list[int]]:
    """Consecutive index runs of at most ``limit`` values (a bigger tensor is a run alone).

    ``limit=None``: :data:`CACHE_BATCH_NUMEL` for CPU tensors, a single run for tensors on
    any other device (the callers pass the tensors of one device).
    """
    if limit is None:
        on_cpu = not tensors or tensors[0].device.type == "cpu"
        if not on_cpu:
            return [list(range(len(tensors)))]
        limit = CACHE_BATCH_NUMEL
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, t in enumerate(tensors):
        n = t.numel()
        if current and size + n > limit:
            batches.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        batches.append(current)
    return batches


# --- a compiled step's scalars, on their devices ---------------------------------------------


def host_to_device(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """``values`` as a 1-d float64 tensor on ``device``, without waiting for the device.

    ``torch.tensor(values, device="cuda")`` copies from pageable host memory, which makes the
    host wait until the GPU has run everything queued before it (a full stream sync, once per
    step); from pinned memory with ``non_blocking=True`` the copy is queued like a kernel.
    torch's pinned-memory allocator keeps the host buffer until the copy has run.
    """
    if device.type == "cpu":
        return torch.tensor(values, dtype=torch.float64)
    pinned = device.type == "cuda"
    host = torch.tensor(values, dtype=torch.float64, pin_memory=pinned)
    return host.to(device, non_blocking=True)


@outside_compile
def scalars_on(
    values: Sequence[float | torch.Tensor], devices: Sequence[torch.device]
) -> list[torch.Tensor]:
    """Each value as a 0-d float64 tensor on its device: a compiled step's graph inputs.

    On the CPU a value becomes ``torch.tensor(value, dtype=torch.float64)`` (a 0-d tensor is
    kept as it is). Elsewhere one copy per device carries all of that device's values
    (:func:`host_to_device`): a CPU scalar in a compiled CUDA graph would be copied over on
    its own, with a stream sync each time. Runs outside ``torch.compile`` (the values change
    every step).
    """
    out: list[torch.Tensor | None] = [None] * len(values)
    elsewhere: dict[torch.device, list[int]] = {}
    for i, (value, device) in enumerate(zip(values, devices, strict=True)):
        if device.type != "cpu":
            elsewhere.setdefault(device, []).append(i)
        elif isinstance(value, torch.Tensor):
            out[i] = value
        else:
            out[i] = torch.tensor(value, dtype=torch.float64)
    for device, idx in elsewhere.items():
        on_device = host_to_device([float(values[i]) for i in idx], device)
        for i, tensor in zip(idx, on_device.unbind(), strict=True):
            out[i] = tensor
    return out  # type: ignore[return-value]


def effective_grads(
    params: list[torch.Tensor], grads: list[torch.Tensor], weight_decay: float, maximize: bool
) -> list[torch.Tensor]:
    """``g' = (-g if maximize else g) + weight_decay * theta`` (new tensors only where needed):
    the gradient a kernel used, for a fast path's pass after it."""
    out = []
    for p, g in zip(params, grads, strict=True):
        if maximize:
            g = g.neg()
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        out.append(g)
    return out
