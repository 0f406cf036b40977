"""The execution plan: which trials of a study are trained together, in batches.

Trials join one batch when they share everything a batched step needs in common (the
:data:`GROUP_FIELDS` of their specs: task, epochs, batch size, token budget, device,
precision, data folder, plugins) and their methods have the same batched form
(:func:`~demon_optim.study.batched.schedules.batched_kind`: the SGDM family with any lr or
momentum schedule, Demon included, and likewise the Adam family). A group is cut into
``ceil(G / N)`` batches of near-equal size, its trials in the study's order, where N is the
study's ``batch_trials``; ``"auto"`` takes N from the model's parameter count
(:func:`auto_size`), never from the machine or the worker count, so a study batches the
same way everywhere and a batched re-run repeats an earlier batched run.

What cannot batch runs one trial at a time, as before, and the plan says why, once per
method or task (:meth:`Plan.notes`): a method without a batched form (the reference
optimizers, a user's own), a task that trains through its own hooks (``batches``,
``forward``, ``initial_state``, ``detach_state``, ``steps_per_epoch``) or sets
``batchable = False``, a model :func:`~demon_optim.study.batched.models.batch_models`
refuses, fp16 (its gradient scaler skips steps per trial), channels-last models, and with
``auto`` a model too large for batching to pay.

A batch is identified by a hash of its members' trial ids (:attr:`TrialBatch.batch_id`),
recorded with each of them in the store (``execution``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import Task, get_task

#: ``auto``: a batch holds at most ``AUTO_PARAMETERS // parameters`` models (at most
#: :data:`AUTO_MAX_SIZE`); below 2, the task's trials run one at a time. Set from
#: ``benchmarks/batched_trials.py``: past this many parameters per batch the step's tensors
#: leave the CPU's caches and a model step costs as much batched as alone.
AUTO_PARAMETERS = 250_000
AUTO_MAX_SIZE = 32

#: What the trials of one batch share (besides their method's batched form).
GROUP_FIELDS = (
    "task",
    "epochs",
    "batch_size",
    "token_budget",
    "device",
    "precision",
    "channels_last",
    "data_dir",
    "plugins",
)

#: The task hooks the batched loop does itself; a task that overrides one trains alone.
BATCHED_HOOKS = ("steps_per_epoch", "batches", "initial_state", "detach_state", "forward")


@dataclass(frozen=True)
class TrialBatch:
    """Trials trained together as one unit of work, each still its own trial (its seed, data
    order, hyperparameters, schedules, row in the store)."""

    specs: tuple[TrialSpec, ...]

    def __post_init__(self) -> None:
        if not self.specs:
            raise ValueError("TrialBatch: no trials")

    def __len__(self) -> int:
        return len(self.specs)

    @functools.cached_property
    def batch_id(self) -> str:
        """16 hex digits of the sha256 of the members' sorted trial ids."""
        members = "\n".join(sorted(spec.trial_id for spec in self.specs))
        return hashlib.sha256(members.encode()).hexdigest()[:16]

    def execution(self) -> dict[str, Any]:
        """What the store records with each member: ``{"mode", "batch", "size"}``."""
        return {"mode": "batched", "batch": self.batch_id, "size": len(self.specs)}

    def restricted(self, trial_ids: Collection[str]) -> TrialBatch | None:
        """The members among ``trial_ids`` (None if none), in the batch's order."""
        kept = tuple(spec for spec in self.specs if spec.trial_id in trial_ids)
        return None if not kept else TrialBatch(kept)

    def label(self) -> str:
        first = self.specs[0]
        return f"batch {self.batch_id} ({len(self.specs)} trials of {first.task})"


#: One unit of work for an executor: a trial alone, or a batch.
Unit = TrialSpec | TrialBatch


def unit_specs(unit: Unit) -> tuple[TrialSpec, ...]:
    """The trials of a unit of work."""
    return unit.specs if isinstance(unit, TrialBatch) else (unit,)


@dataclass(frozen=True)
class Plan:
    """A study's trials as units of work, and why some run alone.

    ``units`` cover every trial given to :func:`plan_batches` once; ``alone`` maps the id
    of each trial that could not batch to ``(what, why)``, e.g. ``("method qhm+lr-step",
    "no batched form")``.
    """

    setting: str | int
    units: tuple[Unit, ...]
    alone: dict[str, tuple[str, str]] = field(default_factory=dict)

    def for_trials(self, trial_ids: Collection[str]) -> list[Unit]:
        """The units restricted to ``trial_ids`` (a batch keeps its members among them),
        costliest first (epochs x trials), the plan's order otherwise."""
        units: list[Unit] = []
        for unit in self.units:
            if isinstance(unit, TrialBatch):
                kept = unit.restricted(trial_ids)
                if kept is not None:
                    units.append(kept)
            elif unit.trial_id in trial_ids:
                units.append(unit)
        return sorted(units, key=lambda u: -unit_specs(u)[0].epochs * len(unit_specs(u)))

    def notes(self, trial_ids: Collection[str] | None = None) -> list[str]:
        """One line per reason some of ``trial_ids`` (default: all) run one at a time."""
        counts: dict[tuple[str, str], int] = {}
        for trial_id, reason in self.alone.items():
            if trial_ids is None or trial_id in trial_ids:
                counts[reason] = counts.get(reason, 0) + 1
        return [
            f"{n} trial{'s' if n != 1 else ''} of {what} run one at a time: {why}"
            for (what, why), n in counts.items()
        ]

    def describe(self, trial_ids: Collection[str] | None = None) -> str:
        """One line: how ``trial_ids`` (default: all) are executed."""
        units = self.for_trials(
            trial_ids
            if trial_ids is not None
            else {s.trial_id for u in self.units for s in unit_specs(u)}
        )
        batches = [len(u) for u in units if isinstance(u, TrialBatch)]
        alone = len(units) - len(batches)
        text = f"batch_trials {self.setting}: "
        if not batches:
            return text + f"{alone} trial{'s' if alone != 1 else ''} one at a time"
        sizes = (
            f"{min(batches)}-{max(batches)}" if min(batches) != max(batches) else f"{batches[0]}"
        )
        return (
            text
            + f"{sum(batches)} trials in {len(batches)} batch{'es' if len(batches) != 1 else ''} "
            f"of {sizes} models, {alone} one at a time"
        )


def plan_batches(specs: Sequence[TrialSpec], batch_trials: str | int) -> Plan:
    """Group ``specs`` into batches of at most ``batch_trials`` trials (``"auto"``: from the
    model's size, :func:`auto_size`; ``"off"`` or 1: none), deterministically: the same
    specs in the same order give the same plan on every machine."""
    if batch_trials in ("off", 1):
        return Plan(batch_trials, tuple(specs))
    groups: dict[tuple[Any, ...], list[TrialSpec]] = {}
    alone: dict[str, tuple[str, str]] = {}
    sizes: dict[tuple[Any, ...], int] = {}
    units: list[Unit | tuple[Any, ...]] = []  # a group's key where its batches go
    for spec in specs:
        reason, kind = _why_alone(spec)
        size = 1
        if reason is None:
            size, reason = _size(spec, batch_trials)
        if reason is not None:
            alone[spec.trial_id] = reason
        if size < 2:
            units.append(spec)
            continue
        key = (*(getattr(spec, name) for name in GROUP_FIELDS), kind)
        if key not in groups:
            groups[key] = []
            sizes[key] = size
            units.append(key)
        groups[key].append(spec)
    planned: list[Unit] = []
    for unit in units:
        if isinstance(unit, TrialSpec):
            planned.append(unit)
        else:
            planned.extend(_cut(groups[unit], sizes[unit]))
    return Plan(batch_trials, tuple(planned), alone)


def _cut(group: list[TrialSpec], size: int) -> Iterable[Unit]:
    """``ceil(G / size)`` batches of near-equal size (a lone trial stays a trial)."""
    if len(group) == 1:
        return group
    count = -(-len(group) // size)
    base, extra = divmod(len(group), count)
    batches, start = [], 0
    for index in range(count):
        end = start + base + (index < extra)
        batches.append(TrialBatch(tuple(group[start:end])))
        start = end
    return batches


def _why_alone(spec: TrialSpec) -> tuple[tuple[str, str] | None, str | None]:
    """``(reason, None)`` if ``spec`` cannot batch, else ``(None, its batched kind)``."""
    from demon_optim.study.batched.schedules import batched_kind, batched_reason
    from demon_optim.study.methods import get_method

    method = get_method(spec.method)
    kind = batched_kind(method)
    if kind is None:
        return (f"method {spec.method}", batched_reason(method) or "no batched form"), None
    if spec.precision == "fp16":
        return ("precision fp16", "its gradient scaler skips steps trial by trial"), None
    if spec.channels_last:
        return ("channels_last", "batched models keep their own memory format"), None
    why = task_reason(get_task(spec.task))
    if why is not None:
        return (f"task {spec.task}", why), None
    return None, kind


def _size(spec: TrialSpec, batch_trials: str | int) -> tuple[int, tuple[str, str] | None]:
    """The most trials of ``spec``'s task per batch, and why 1 if it cannot batch."""
    task = get_task(spec.task)
    parameters = model_parameters(task)
    size = auto_size(parameters) if batch_trials == "auto" else int(batch_trials)
    if size < 2 and parameters:
        return 1, (
            f"task {spec.task}",
            f"its model has {parameters:,} parameters, too many for batch_trials = auto "
            f"(at most {AUTO_PARAMETERS // 2:,}); batch_trials = N batches them anyway",
        )
    why = model_refusal(task)
    if why is not None:
        return 1, (f"task {spec.task}", why)
    return size, None


def auto_size(parameters: int) -> int:
    """``auto``'s batch size for a model of ``parameters`` trainable scalars:
    ``min(AUTO_MAX_SIZE, AUTO_PARAMETERS // parameters)`` (1: no batching)."""
    return max(1, min(AUTO_MAX_SIZE, AUTO_PARAMETERS // max(1, parameters)))


def task_reason(task: Task) -> str | None:
    """Why ``task``'s trials cannot be trained together, or None."""
    if not getattr(task, "batchable", True):
        return "the task sets batchable = False"
    own = [hook for hook in BATCHED_HOOKS if getattr(type(task), hook) is not getattr(Task, hook)]
    if own:
        return f"it trains through its own {', '.join(f'{hook}()' for hook in own)}"
    return None


@dataclass
class _Probe:
    """A task's model, built once per task class and process to plan its trials."""

    parameters: int  # trainable scalars (0: it could not be built)
    model: torch.nn.Module | None  # kept until batch_models has been tried on it
    refusal: str | None = None  # why its trials cannot batch
    tried: bool = False  # batch_models tried


_PROBED: dict[type, _Probe] = {}


def _probe(task: Task) -> _Probe:
    cls = type(task)
    if cls not in _PROBED:
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            torch.manual_seed(0)
            try:
                model = task.build_model()
            except Exception as error:  # its trials will fail, and say more
                why = f"building its model failed ({type(error).__name__}: {error})"
                _PROBED[cls] = _Probe(0, None, why, tried=True)
                return _PROBED[cls]
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        _PROBED[cls] = _Probe(parameters, model)
    return _PROBED[cls]


def model_parameters(task: Task) -> int:
    """The trainable scalars of the task's model (0 if it cannot be built)."""
    return _probe(task).parameters


def model_refusal(task: Task) -> str | None:
    """Why :func:`~demon_optim.study.batched.models.batch_models` cannot stack the task's
    model, or None (tried once per task class and process, on two copies of it)."""
    probe = _probe(task)
    if not probe.tried:
        from demon_optim.study.batched.models import NotBatchable, batch_models

        try:
            batch_models([probe.model, copy.deepcopy(probe.model)])
        except NotBatchable as error:
            probe.refusal = f"its model cannot be batched ({error})"
        probe.tried, probe.model = True, None  # no weights kept around
    return probe.refusal
