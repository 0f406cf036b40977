"""Train the trials of one batch together: the trial loop of ``study/trial.py``, for M models.

:func:`run_batch` keeps every part of a trial's meaning (``docs/study.md``, "The protocol"),
model by model: ``torch.manual_seed(seed)`` before each model is built (on the CPU), each
model's own shuffling and augmentation generators (:func:`~demon_optim.study.trial.
generators`), its own hyperparameters and schedules (:class:`~demon_optim.study.batched.
schedules.ModelSchedules`), its training loss checked every step before stepping on it, its
validation metric after every epoch and its test metric at the end, through
:meth:`~demon_optim.study.batched.models.BatchedModel.member` and the task's own
``evaluate_metrics``. What is shared is the arithmetic: one forward and backward pass of the
stacked models on the stacked batches (model m reads batch i of its own order), one
optimizer update for all (:class:`~demon_optim.study.batched.optim.BatchedOptimizer`).

The step minimises the sum of the running models' losses, ``L = sum_m [running_m] L_m``
(``torch.where``, so a diverged model's NaN never reaches the sum): model m's gradient is
exactly that of ``L_m``, as the models share no parameter. A model whose loss is not finite
is recorded ``diverged`` at that step and stops (its parameters and optimizer state no
longer change) while the others go on; gradient clipping, where a task asks for it, is per
model (each model's global norm).

Clocks: one batch trains M models in one process, so each model's ``elapsed_s``,
``train_s`` and wall time are the batch's divided by M (the models it started with): the
cost each trial had, so that time to target stays comparable with trials trained alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from demon_optim.study import devices
from demon_optim.study.batched.plan import TrialBatch
from demon_optim.study.methods import get_method
from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import Task, TaskData, get_task
from demon_optim.study.tasks.base import ClassificationTask
from demon_optim.study.trial import (
    Outcome,
    TrialResult,
    autocast_of,
    budget_of,
    data_on,
    deterministic_algorithms,
    diverged_at,
    diverged_on_val,
    epoch_record,
    evaluate,
    failed_outcome,
    finish,
    generators,
    result_of,
    synchronizer,
)

LossFunction = Callable[[Any, torch.Tensor], torch.Tensor]


def run_batch(batch: TrialBatch, data: TaskData, task: Task | None = None) -> list[TrialResult]:
    """Train the batch's trials together on ``data``; one result per trial, in its order.

    Never raises for the trials' own problems: a model that diverges is ``diverged``, an
    evaluation that raises fails that trial, and an error in the shared step fails them all
    (the next run retries them). Raises
    :class:`~demon_optim.study.batched.models.NotBatchable` if the task's model cannot be
    batched after all, before any training (the caller then trains them one at a time).
    """
    from demon_optim.study.batched.models import NotBatchable

    specs = batch.specs
    started_at = time.time()
    start = time.perf_counter()
    device_info: dict[str, str] = {}
    with deterministic_algorithms():
        try:
            device = devices.resolve(specs[0].device)
            device_info = devices.describe(device)
            task = task or get_task(specs[0].task)
            outcomes = _train(specs, task, data, device)
        except NotBatchable:
            raise
        except Exception as exc:  # the shared step failed: every trial of the batch did
            outcomes = [failed_outcome(exc)] * len(specs)
    wall_time_s = (time.perf_counter() - start) / len(specs)
    execution = batch.execution()
    return [
        result_of(spec, outcome, started_at, wall_time_s, device_info, execution)
        for spec, outcome in zip(specs, outcomes, strict=True)
    ]


def _train(
    specs: Sequence[TrialSpec], task: Task, data: TaskData, device: torch.device
) -> list[Outcome]:
    from demon_optim.study.batched.models import batch_models
    from demon_optim.study.batched.optim import BatchedOptimizer
    from demon_optim.study.batched.schedules import ModelSchedules

    size = len(specs)
    methods = [get_method(spec.method) for spec in specs]
    configs = [
        method.check_config(spec.config) for method, spec in zip(methods, specs, strict=True)
    ]
    # the plan batches only trials with one task, batch size, epochs and token budget
    budget = budget_of(specs[0], task, data)
    steps, batch, epochs = budget.steps_per_epoch, specs[0].batch_size, specs[0].epochs
    data = data_on(data, device)

    built = []
    for spec in specs:
        torch.manual_seed(spec.seed)
        built.append(task.build_model())  # on the CPU, so its initial weights are the CPU's
    model = batch_models(built)
    del built
    if device.type != "cpu":
        model = model.to(device)
    parameters = model.stacked_parameters()
    schedules = ModelSchedules(
        [(method, config, budget) for method, config in zip(methods, configs, strict=True)],
        device=device,
        dtype=parameters[0].dtype,
    )
    stack = _Stack(model, BatchedOptimizer(parameters, schedules.kind), range(size), device)
    shuffles, augments = zip(*(generators(spec.seed) for spec in specs), strict=True)
    autocast = autocast_of(specs[0], device)
    synchronize = synchronizer(device)
    losses_of = _loss_function(task)
    augment = None if type(task).augment is Task.augment else task.augment
    grad_clip = task.grad_clip

    train = data.train
    n, last = len(train), steps - 1
    outcomes: list[Outcome | None] = [None] * size
    histories: list[list[dict[str, Any]]] = [[] for _ in specs]
    val_metrics: list[dict[str, float]] = [{} for _ in specs]
    running = list(range(size))  # the models still training (by their index in specs)
    zero = torch.zeros((), device=device)

    def stop(m: int, outcome: Outcome) -> None:
        outcomes[m] = outcome
        running.remove(m)
        stack.active[stack.position[m]] = False

    start = time.perf_counter()
    train_s = 0.0  # the batch's training steps only, summed over epochs
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        stack.model.train()
        keep = stack.keep
        # each model's order of the epoch, as Task.batches draws it from its generator
        order = torch.stack([torch.randperm(n, generator=shuffles[m]) for m in keep])
        order = order.to(device)
        totals = [0.0] * size
        applied = [(math.nan, math.nan)] * size
        for i, begin in enumerate(range(0, n, batch)):
            index = order[:, begin : begin + batch]
            inputs, targets = train.inputs[index], train.targets[index]
            if augment is not None:
                inputs = _augmented(augment, inputs, stack, running, augments)
            with autocast():
                losses = losses_of(stack.model(inputs), targets)
            values = losses.detach().tolist()
            for m in tuple(running):
                value = values[stack.position[m]]
                if math.isfinite(value):
                    totals[m] += value
                else:
                    step = (epoch - 1) * steps + i
                    stop(m, Outcome("diverged", histories[m], note=diverged_at(value, epoch, step)))
            if not running:
                break
            stack.optimizer.zero_grad()
            torch.where(stack.active, losses, zero).sum().backward()
            if grad_clip is not None:
                _clip_per_model(stack.parameters, grad_clip, len(keep))
            stack.optimizer.step(stack.hyperparameters(schedules.current()), stack.active)
            schedules.after_step()
            if i == last:
                applied = schedules.applied()  # what the epoch's last step used
        if not running:
            break
        if synchronize is not None:
            synchronize()
        train_s += time.perf_counter() - epoch_start
        for m in tuple(running):
            try:
                with autocast():
                    val_metrics[m] = evaluate(task, stack.member(m), data.val, "validation")
            except Exception as exc:  # this trial fails, as alone; the others go on
                stop(m, failed_outcome(exc))
                continue
            val = val_metrics[m][task.metric]
            if not math.isfinite(val):
                stop(m, Outcome("diverged", histories[m], note=diverged_on_val(task, val, epoch)))
        if not running:
            break
        schedules.after_epoch(
            [val_metrics[m][task.metric] if m in running else math.nan for m in range(size)]
        )
        elapsed = (time.perf_counter() - start) / size
        for m in running:
            histories[m].append(
                epoch_record(
                    epoch,
                    totals[m] / steps,
                    val_metrics[m],
                    task,
                    applied[m],
                    budget,
                    elapsed,
                    train_s / size,
                )
            )
        if len(running) < len(stack.keep) and epoch < epochs:
            stack = stack.without_stopped(running, batch_models)
    for m in tuple(running):
        try:
            outcomes[m] = finish(
                task, stack.member(m), data, specs[m].seed, val_metrics[m], histories[m], autocast
            )
        except Exception as exc:
            outcomes[m] = failed_outcome(exc)
    ended = [outcome for outcome in outcomes if outcome is not None]
    assert len(ended) == size, "every model of the batch ends with an outcome"
    return ended


class _Stack:
    """The models still stacked together: position k holds model ``keep[k]`` (its index in
    the batch). Models that stopped are dropped at the end of an epoch
    (:meth:`without_stopped`), so that they cost nothing more: the others' weights and
    optimizer state move to a smaller stack, bit for bit, and train on exactly as before
    (each model's arithmetic does not depend on the others)."""

    def __init__(self, model: Any, optimizer: Any, keep: Sequence[int], device: torch.device):
        self.model, self.optimizer = model, optimizer
        self.keep = list(keep)
        self.position = {m: k for k, m in enumerate(self.keep)}
        self.parameters = model.stacked_parameters()
        self.active = torch.ones(len(self.keep), dtype=torch.bool, device=device)
        self._index = torch.tensor(self.keep, dtype=torch.long, device=device)
        self._selected: tuple[Any, Any] = (None, None)  # the last hyperparameters and ours

    def member(self, m: int) -> torch.nn.Module:
        """Model ``m`` as an ordinary module, its weights views of the stack's."""
        return self.model.member(self.position[m])

    def hyperparameters(self, every: Any) -> Any:
        """The batch's hyperparameters for this step (one per model of the batch), for the
        models in the stack."""
        if every.size == len(self.keep):
            return every
        if self._selected[0] is not every:  # they move only when a schedule moves them
            self._selected = (every, _selected(every, self.keep, self._index))
        return self._selected[1]

    def without_stopped(self, running: Sequence[int], batch_models: Callable[..., Any]) -> _Stack:
        """A stack of the running models only (their current weights and state)."""
        positions = [self.position[m] for m in sorted(running, key=self.position.__getitem__)]
        model = batch_models([self.model.member(k) for k in positions])
        optimizer = self.optimizer.select(positions, model.stacked_parameters())
        return _Stack(model, optimizer, [self.keep[k] for k in positions], self.active.device)


def _selected(hp: Any, keep: Sequence[int], index: torch.Tensor) -> Any:
    """``BatchedHyperparameters`` of the models ``keep`` only."""
    fields = {
        name: None if getattr(hp, name) is None else getattr(hp, name).index_select(0, index)
        for name in ("lr", "momentum", "weight_decay", "beta2", "eps")
    }
    host = {name: tuple(values[m] for m in keep) for name, values in hp.host.items()}
    return type(hp)(**fields, host=host)


def _loss_function(task: Task) -> LossFunction:
    """Each model's training loss, ``[M]``, from stacked outputs and targets.

    A classification task's cross-entropy, ``L_m = -(1/B) sum_i log softmax(z_mi)[y_mi]``,
    runs over all M x B rows at once, with the classes as the leading dimension: a log
    softmax over a short last dimension (MNIST-1D's 10 classes) is several times slower on
    the CPU than over a leading one, forward and backward. Any other task's ``loss`` is
    called model by model.
    """
    if type(task).loss is ClassificationTask.loss:

        def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            classes = outputs.shape[-1]
            # [C, M B]: the classes leading, each row's log softmax down its column
            log_p = torch.log_softmax(outputs.reshape(-1, classes).t().contiguous(), dim=0)
            picked = log_p.gather(0, targets.reshape(1, -1)).view(targets.shape[:2])
            return -picked.mean(dim=1)

        return cross_entropy

    def each(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        models = range(targets.shape[0])
        return torch.stack([task.loss(_model_slice(outputs, m), targets[m]) for m in models])

    return each


def _model_slice(value: Any, m: int) -> Any:
    """Model ``m``'s part of stacked outputs (tensors in nested tuples, lists and dicts)."""
    if isinstance(value, torch.Tensor):
        return value[m]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_model_slice(v, m) for v in value))
    if isinstance(value, tuple | list):
        return type(value)(_model_slice(v, m) for v in value)
    if isinstance(value, dict):
        return {key: _model_slice(v, m) for key, v in value.items()}
    return value


def _augmented(
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    inputs: torch.Tensor,
    stack: _Stack,
    running: Sequence[int],
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Each running model's batch through the task's ``augment``, with its own generator."""
    rows = list(inputs.unbind(0))
    for m in running:
        k = stack.position[m]
        rows[k] = augment(rows[k], generators[m])
    return torch.stack(rows)


def _clip_per_model(parameters: Sequence[torch.Tensor], max_norm: float, size: int) -> None:
    """``clip_grad_norm_`` for each model on its own: with ``n_m`` the 2-norm of all of model
    m's gradients, multiply them by ``min(1, max_norm / (n_m + 1e-6))``."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.reshape(size, -1).norm(dim=1) for g in grads])  # [P, M]
    coefficient = (max_norm / (norms.norm(dim=0) + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(coefficient.view(size, *([1] * (grad.ndim - 1))))
