"""Run one trial: seed, build the model and the method, train, evaluate, return a record.

The training loop is the only one in the harness and is kept lean (the harness overhead
benchmark compares it with a bare loop). Every task goes through it: what differs between
tasks (the batches of an epoch, augmentation, gradient clipping, state carried from batch
to batch as truncated BPTT needs) is asked of the task's hooks, documented on
:class:`~demon_optim.study.tasks.base.Task`. Per epoch it records the mean training loss,
the validation metric, the learning rate and momentum applied at the epoch's last step, the
optimizer steps so far and two clocks: ``elapsed_s`` since training began (evaluation
included) and ``train_s``, the time spent in the epochs' training steps alone (what a
time-to-target measures, ``docs/report.md``). Every evaluation runs between the method's
``before_eval`` and ``after_eval`` hooks (:class:`~demon_optim.study.methods.Training`;
Schedule-Free moves the weights to its average there). It stops at the first non-finite
training loss (status ``diverged``, before stepping on it) and turns any exception into
status ``failed`` with the traceback, so a study goes on.

The model is built on the CPU, then it and the task's splits go to the trial's device
(:mod:`demon_optim.study.devices`); with ``precision`` bf16 or fp16 the forward pass, the
loss and evaluation run under ``torch.autocast``, fp16 with a gradient scaler.

Determinism: ``torch.manual_seed(seed)`` before the model is built and private
``torch.Generator`` s seeded with ``seed`` for the order of the batches and with
``seed + 1_000_003`` for augmentation; deterministic algorithms are requested (warn-only)
for the trial. The same spec run on the same machine with the same
number of torch threads (the executors use one) gives the same metrics.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import math
import platform
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from demon_optim.study import devices
from demon_optim.study.methods import Budget, Training, applied_reader, get_method
from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import Task, TaskData, get_task

STATUSES = ("done", "diverged", "failed")


@dataclass(frozen=True)
class Samples:
    """Images a trial produced to be looked at: ``pixels`` is ``shape = (N, C, H, W)``
    8-bit values, row-major (what :attr:`FinalOutputs.images` becomes in the store)."""

    shape: tuple[int, int, int, int]
    pixels: bytes

    #: the most images a trial keeps (a grid of 8 x 8 in the report)
    LIMIT: ClassVar[int] = 64

    @classmethod
    def of(cls, images: torch.Tensor) -> Samples:
        """From ``[N, C, H, W]`` floats in [0, 1] (clamped; at most :attr:`LIMIT` kept)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"final_outputs().images: got shape {tuple(images.shape)}; "
                "allowed: [N, C, H, W] with C = 1 or 3"
            )
        kept = images[: cls.LIMIT].detach().float().cpu().clamp(0, 1)
        pixels = (kept * 255).round().to(torch.uint8).contiguous()
        n, c, h, w = pixels.shape
        return cls((n, c, h, w), pixels.numpy().tobytes())

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "uint8": base64.b64encode(self.pixels).decode()}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Samples:
        n, c, h, w = (int(x) for x in record["shape"])
        pixels = base64.b64decode(record["uint8"])
        if len(pixels) != n * c * h * w:
            raise ValueError(f"samples: {len(pixels)} bytes for shape {(n, c, h, w)}")
        return cls((n, c, h, w), pixels)

    def array(self) -> Any:
        """The pixels as a numpy ``uint8`` array of :attr:`shape`."""
        import numpy

        return numpy.frombuffer(self.pixels, dtype=numpy.uint8).reshape(self.shape)


@dataclass(frozen=True)
class TrialResult:
    """What one trial produced; ``history`` holds one dict per finished epoch:
    ``epoch, train_loss, val_metric, lr, momentum, steps, elapsed_s, train_s`` (and
    ``val_metrics``, all the validation metrics by name, for a task with more than one).

    ``steps``: optimizer steps taken by the end of the epoch (``epoch * steps_per_epoch``).
    ``elapsed_s``: seconds since training began, validation included. ``train_s``: seconds
    spent in the training steps of the epochs so far (batches, forward, backward, optimizer
    step, per-step schedules), validation and per-epoch schedules excluded; on a GPU the
    queued work is waited for before the epoch's clock stops.

    ``metrics``: every metric by where it was measured, ``{"val": {...}, "test": {...}}``
    of the final model, plus ``"final"`` for a task's :meth:`~Task.final_outputs`;
    ``val_metric``/``test_metric`` are the task's selection metric among them.

    ``execution``: how the trial was trained: None for a trial trained alone (by
    :func:`run_trial`), ``{"mode": "batched", "batch": <id>, "size": M}`` for one trained
    together with M - 1 others of its study (:mod:`demon_optim.study.batched`), whose
    clocks are then the batch's divided by M.
    """

    spec: TrialSpec
    status: str  # one of STATUSES
    val_metric: float | None = None  # final validation metric (of the last epoch)
    test_metric: float | None = None
    history: tuple[dict[str, float], ...] = ()
    wall_time_s: float = 0.0
    started_at: float = 0.0  # unix time
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # failed: "Type: message"; diverged: where the loss blew up
    traceback: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: Samples | None = None
    execution: dict[str, Any] | None = None

    @property
    def trial_id(self) -> str:
        return self.spec.trial_id


@functools.cache
def versions() -> dict[str, str]:
    """Versions that can change a trial's numbers."""
    import numpy

    import demon_optim

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "demon_optim": demon_optim.__version__,
    }


def run_trial(spec: TrialSpec, data: TaskData, task: Task | None = None) -> TrialResult:
    """Train ``spec``'s model with its method on ``data``; never raises for a failing trial.

    ``T = epochs * task.steps_per_epoch(...)`` optimizer steps (by default
    ``ceil(n_train / batch_size)`` per epoch, the last batch of an epoch may be smaller);
    the schedules are built for that T.
    """
    started_at = time.time()
    start = time.perf_counter()
    device_info: dict[str, str] = {}
    with deterministic_algorithms():
        try:
            device = devices.resolve(spec.device)
            device_info = devices.describe(device)
            task = task or get_task(spec.task)
            outcome = _train(spec, task, data, device)
        except Exception as exc:  # a failing trial is a result, the study goes on
            outcome = failed_outcome(exc)
    return result_of(spec, outcome, started_at, time.perf_counter() - start, device_info)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic algorithms requested (warn-only) inside, as they were after."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def result_of(
    spec: TrialSpec,
    outcome: Outcome,
    started_at: float,
    wall_time_s: float,
    device_info: dict[str, str],
    execution: dict[str, Any] | None = None,
) -> TrialResult:
    """The record of a trial that ended with ``outcome``."""
    return TrialResult(
        spec=spec,
        status=outcome.status,
        val_metric=outcome.selected("val"),
        test_metric=outcome.selected("test"),
        history=tuple(outcome.history),
        wall_time_s=wall_time_s,
        started_at=started_at,
        versions={**versions(), **device_info},
        error=outcome.note,
        traceback=outcome.traceback,
        metrics=outcome.metrics,
        samples=outcome.samples,
        execution=execution,
    )


def failed_outcome(exc: Exception) -> Outcome:
    """A trial that raised ``exc`` (call inside the ``except``: it keeps the traceback)."""
    return Outcome(
        "failed", [], note=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
    )


@dataclass
class Outcome:
    """What training ended with: a status, the history, the final model's metrics."""

    status: str
    history: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: Samples | None = None
    note: str | None = None  # diverged: where; failed: "Type: message"
    metric: str = ""  # the task's selection metric (done)
    traceback: str | None = None  # failed

    def selected(self, where: str) -> float | None:
        """The selection metric of the final model on ``where`` (None unless done)."""
        return self.metrics[where][self.metric] if self.status == "done" else None


def evaluate(task: Task, model: torch.nn.Module, split: Any, where: str) -> dict[str, float]:
    """All of a task's metrics on a split, its selection metric checked to be among them."""
    values = task.evaluate_metrics(model, split)
    if task.metric not in values:
        raise ValueError(
            f"task {task.name}: evaluate_metrics() on the {where} split gave "
            f"{sorted(values)}, without the task's metric {task.metric!r}"
        )
    return {name: float(value) for name, value in values.items()}


@contextlib.contextmanager
def _evaluation(training: Training | None) -> Iterator[None]:
    """Run an evaluation between the method's ``before_eval`` and ``after_eval`` hooks
    (Schedule-Free: evaluate at its averaged weights, then train on at its own)."""
    for hook in training.before_eval if training is not None else ():
        hook()
    yield
    for hook in training.after_eval if training is not None else ():
        hook()


# The last data set moved to a device, so that a worker's trials share one copy there.
_on_device: list[tuple[TaskData, torch.device, TaskData]] = []


def data_on(data: TaskData, device: torch.device) -> TaskData:
    """``data`` on ``device``, moved once per worker (the last data set moved is kept)."""
    if device.type == "cpu":
        return data
    if _on_device and _on_device[0][0] is data and _on_device[0][1] == device:
        return _on_device[0][2]
    moved = data.to(device)
    _on_device[:] = [(data, device, moved)]
    return moved


#: Added to the trial seed for the augmentation generator, so that augmentation never
#: changes the order of the examples.
AUGMENT_SEED_OFFSET = 1_000_003


def generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """A trial's private generators: ``(shuffle, augment)``, seeded with ``seed`` and
    ``seed + AUGMENT_SEED_OFFSET``."""
    shuffle = torch.Generator().manual_seed(seed)
    # a generator of its own, so that augmentation does not change the shuffling order
    return shuffle, torch.Generator().manual_seed(seed + AUGMENT_SEED_OFFSET)


def budget_of(spec: TrialSpec, task: Task, data: TaskData) -> Budget:
    """The run ``spec``'s schedules are built for: ``task.steps_per_epoch`` checked."""
    batch = spec.batch_size
    steps = task.steps_per_epoch(data.train, batch, spec.token_budget)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"task {task.name}: steps_per_epoch() gave {steps!r} for {len(data.train)} "
            f"training examples at batch size {batch}; a trial needs at least 1 step per epoch"
        )
    return Budget(spec.epochs, steps, task.higher_is_better)


def autocast_of(spec: TrialSpec, device: torch.device) -> Callable[[], Any]:
    """Mixed precision: a ``torch.autocast`` context for bf16/fp16, else a null context."""
    amp_dtype = devices.AMP_DTYPES.get(spec.precision)
    if amp_dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=amp_dtype)


def synchronizer(device: torch.device) -> Callable[[], None] | None:
    """What waits for a GPU's queued kernels (None on the CPU), so that an epoch's training
    clock stops after its last steps ran, not inside the evaluation."""
    if device.type == "cuda":
        return functools.partial(torch.cuda.synchronize, device)
    if device.type == "mps":
        return torch.mps.synchronize
    return None


def diverged_at(value: float, epoch: int, step: int) -> str:
    """The note of a trial whose training loss was not finite."""
    return f"non-finite training loss ({value}) at epoch {epoch}, step {step}"


def diverged_on_val(task: Task, value: float, epoch: int) -> str:
    """The note of a trial whose validation metric was not finite."""
    return f"non-finite validation {task.metric} ({value}) after epoch {epoch}"


def epoch_record(
    epoch: int,
    train_loss: float,
    val_metrics: dict[str, float],
    task: Task,
    applied: tuple[float, float],
    budget: Budget,
    elapsed_s: float,
    train_s: float,
) -> dict[str, Any]:
    """One epoch of a history (the keys :class:`TrialResult` documents)."""
    lr, momentum = applied
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_metric": val_metrics[task.metric],
        "lr": lr,
        "momentum": momentum,
        "steps": epoch * budget.steps_per_epoch,
        "elapsed_s": elapsed_s,
        "train_s": train_s,
    }
    if len(val_metrics) > 1:
        record["val_metrics"] = val_metrics
    return record


def _train(spec: TrialSpec, task: Task, data: TaskData, device: torch.device) -> Outcome:
    method = get_method(spec.method)
    config = method.check_config(spec.config)
    batch, token_budget = spec.batch_size, spec.token_budget
    budget = budget_of(spec, task, data)
    steps = budget.steps_per_epoch
    data = data_on(data, device)

    torch.manual_seed(spec.seed)
    model = task.build_model()  # built on the CPU, so its initial weights are the CPU's
    if device.type != "cpu":
        model = model.to(device)
    channels_last = spec.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    shuffle, augment = generators(spec.seed)
    training = method.build(model.parameters(), config, budget)
    optimizer, after_step = training.optimizer, training.after_step
    applied = applied_reader(optimizer)
    # mixed precision: forward and loss under autocast; fp16 with a gradient scaler
    autocast = autocast_of(spec, device)
    scaler = torch.amp.GradScaler(device.type) if spec.precision == "fp16" else None
    # the task's hooks, looked up once (the loop is kept lean)
    loss_fn, forward, detach = task.loss, task.forward, task.detach_state
    grad_clip, parameters = task.grad_clip, list(model.parameters())
    clip = torch.nn.utils.clip_grad_norm_
    last = steps - 1
    synchronize = synchronizer(device)
    start = time.perf_counter()
    train_s = 0.0  # training steps only, summed over epochs
    history: list[dict[str, Any]] = []
    val_metrics: dict[str, float] = {}
    for epoch in range(1, spec.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        state = task.initial_state(model, batch)
        batches = task.batches(
            data.train, batch, shuffle, augment_generator=augment, token_budget=token_budget
        )
        total = 0.0
        lr_momentum = (math.nan, math.nan)
        i = -1
        for i, (inputs, targets) in enumerate(batches):
            if i == steps:
                raise _miscounted(task, steps, epoch, f"more than {steps}")
            if channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast():
                outputs, state = forward(model, inputs, detach(state))
                loss = loss_fn(outputs, targets)
            value = loss.item()
            if not math.isfinite(value):
                note = diverged_at(value, epoch, (epoch - 1) * steps + i)
                return Outcome("diverged", history, note=note)
            total += value
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if grad_clip is not None:
                    clip(parameters, grad_clip)
                optimizer.step()
            else:  # a step with inf/nan gradients is skipped by the scaler, as torch does
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    clip(parameters, grad_clip)
                scaler.step(optimizer)
                scaler.update()
            if i == last:
                lr_momentum = applied()  # before the schedulers move them on
            for hook in after_step:
                hook()
        if i != last:
            raise _miscounted(task, steps, epoch, f"{i + 1}")
        if synchronize is not None:
            synchronize()
        train_s += time.perf_counter() - epoch_start
        with _evaluation(training), autocast():
            val_metrics = evaluate(task, model, data.val, "validation")
        val = val_metrics[task.metric]
        if not math.isfinite(val):
            return Outcome("diverged", history, note=diverged_on_val(task, val, epoch))
        for epoch_hook in training.after_epoch:
            epoch_hook(val)
        elapsed = time.perf_counter() - start
        history.append(
            epoch_record(
                epoch, total / steps, val_metrics, task, lr_momentum, budget, elapsed, train_s
            )
        )
    return finish(task, model, data, spec.seed, val_metrics, history, autocast, training)


def finish(
    task: Task,
    model: torch.nn.Module,
    data: TaskData,
    seed: int,
    val_metrics: dict[str, float],
    history: list[dict[str, Any]],
    autocast: Callable[[], Any],
    training: Training | None = None,
) -> Outcome:
    """The end of a trial that trained every epoch: the test metrics, then the task's
    final outputs (between ``training``'s evaluation hooks, when given)."""
    with _evaluation(training):
        with autocast():
            test_metrics = evaluate(task, model, data.test, "test")
        test = test_metrics[task.metric]
        if not math.isfinite(test):
            return Outcome("diverged", history, note=f"non-finite test {task.metric} ({test})")
        metrics = {"val": val_metrics, "test": test_metrics}
        samples = None
        model.eval()
        with torch.no_grad(), autocast():
            final = task.final_outputs(model, data, seed)
    if final is not None:
        metrics["final"] = {name: float(value) for name, value in final.metrics.items()}
        if final.images is not None:
            samples = Samples.of(final.images)
    return Outcome("done", history, metrics, samples, metric=task.metric)


def _miscounted(task: Task, steps: int, epoch: int, got: str) -> RuntimeError:
    """The schedules are built for ``steps`` per epoch: a task's two hooks must agree."""
    return RuntimeError(
        f"task {task.name}: batches() yielded {got} batches in epoch {epoch}, "
        f"steps_per_epoch() said {steps}"
    )
