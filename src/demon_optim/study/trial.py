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
from collections.abc import Iterator
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
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    device_info: dict[str, str] = {}
    try:
        device = devices.resolve(spec.device)
        device_info = devices.describe(device)
        task = task or get_task(spec.task)
        outcome = _train(spec, task, data, device)
        error, tb = outcome.note, None
    except Exception as exc:  # a failing trial is a result, the study goes on
        outcome = _Outcome("failed", [])
        error = f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc()
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    return TrialResult(
        spec=spec,
        status=outcome.status,
        val_metric=outcome.selected("val"),
        test_metric=outcome.selected("test"),
        history=tuple(outcome.history),
        wall_time_s=time.perf_counter() - start,
        started_at=started_at,
        versions={**versions(), **device_info},
        error=error,
        traceback=tb,
        metrics=outcome.metrics,
        samples=outcome.samples,
    )


@dataclass
class _Outcome:
    """What training ended with: a status, the history, the final model's metrics."""

    status: str
    history: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: Samples | None = None
    note: str | None = None  # diverged: where
    metric: str = ""  # the task's selection metric (done)

    def selected(self, where: str) -> float | None:
        """The selection metric of the final model on ``where`` (None unless done)."""
        return self.metrics[where][self.metric] if self.status == "done" else None


def _evaluate(task: Task, model: torch.nn.Module, split: Any, where: str) -> dict[str, float]:
    """All of a task's metrics on a split, its selection metric checked to be among them."""
    values = task.evaluate_metrics(model, split)
    if task.metric not in values:
        raise ValueError(
            f"task {task.name}: evaluate_metrics() on the {where} split gave "
            f"{sorted(values)}, without the task's metric {task.metric!r}"
        )
    return {name: float(value) for name, value in values.items()}


@contextlib.contextmanager
def _evaluation(training: Training) -> Iterator[None]:
    """Run an evaluation between the method's ``before_eval`` and ``after_eval`` hooks
    (Schedule-Free: evaluate at its averaged weights, then train on at its own)."""
    for hook in training.before_eval:
        hook()
    yield
    for hook in training.after_eval:
        hook()


# The last data set moved to a device, so that a worker's trials share one copy there.
_on_device: list[tuple[TaskData, torch.device, TaskData]] = []


def _data_on(data: TaskData, device: torch.device) -> TaskData:
    if device.type == "cpu":
        return data
    if _on_device and _on_device[0][0] is data and _on_device[0][1] == device:
        return _on_device[0][2]
    moved = data.to(device)
    _on_device[:] = [(data, device, moved)]
    return moved


def _train(spec: TrialSpec, task: Task, data: TaskData, device: torch.device) -> _Outcome:
    method = get_method(spec.method)
    config = method.check_config(spec.config)
    batch, token_budget = spec.batch_size, spec.token_budget
    steps = task.steps_per_epoch(data.train, batch, token_budget)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"task {task.name}: steps_per_epoch() gave {steps!r} for {len(data.train)} "
            f"training examples at batch size {batch}; a trial needs at least 1 step per epoch"
        )
    budget = Budget(spec.epochs, steps, task.higher_is_better)
    data = _data_on(data, device)

    torch.manual_seed(spec.seed)
    model = task.build_model()  # built on the CPU, so its initial weights are the CPU's
    if device.type != "cpu":
        model = model.to(device)
    channels_last = spec.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    shuffle = torch.Generator().manual_seed(spec.seed)
    # a generator of its own, so that augmentation does not change the shuffling order
    augment = torch.Generator().manual_seed(spec.seed + 1_000_003)
    training = method.build(model.parameters(), config, budget)
    optimizer, after_step = training.optimizer, training.after_step
    applied = applied_reader(optimizer)
    # mixed precision: forward and loss under autocast; fp16 with a gradient scaler
    amp_dtype = devices.AMP_DTYPES.get(spec.precision)
    if amp_dtype is None:
        autocast: Any = contextlib.nullcontext
    else:
        autocast = functools.partial(torch.autocast, device.type, dtype=amp_dtype)
    scaler = torch.amp.GradScaler(device.type) if spec.precision == "fp16" else None
    # the task's hooks, looked up once (the loop is kept lean)
    loss_fn, forward, detach = task.loss, task.forward, task.detach_state
    grad_clip, parameters = task.grad_clip, list(model.parameters())
    clip = torch.nn.utils.clip_grad_norm_
    last = steps - 1
    # a GPU runs the last steps' kernels asynchronously: wait for them before the epoch's
    # training clock stops, so that evaluation does not absorb them
    synchronize: Any = None
    if device.type == "cuda":
        synchronize = functools.partial(torch.cuda.synchronize, device)
    elif device.type == "mps":
        synchronize = torch.mps.synchronize
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
        lr = momentum = math.nan
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
                step = (epoch - 1) * steps + i
                note = f"non-finite training loss ({value}) at epoch {epoch}, step {step}"
                return _Outcome("diverged", history, note=note)
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
                lr, momentum = applied()  # before the schedulers move them on
            for hook in after_step:
                hook()
        if i != last:
            raise _miscounted(task, steps, epoch, f"{i + 1}")
        if synchronize is not None:
            synchronize()
        train_s += time.perf_counter() - epoch_start
        with _evaluation(training), autocast():
            val_metrics = _evaluate(task, model, data.val, "validation")
        val = val_metrics[task.metric]
        if not math.isfinite(val):
            note = f"non-finite validation {task.metric} ({val}) after epoch {epoch}"
            return _Outcome("diverged", history, note=note)
        for epoch_hook in training.after_epoch:
            epoch_hook(val)
        record = {
            "epoch": epoch,
            "train_loss": total / steps,
            "val_metric": val,
            "lr": lr,
            "momentum": momentum,
            "steps": epoch * steps,
            "elapsed_s": time.perf_counter() - start,
            "train_s": train_s,
        }
        if len(val_metrics) > 1:
            record["val_metrics"] = val_metrics
        history.append(record)
    with _evaluation(training):
        with autocast():
            test_metrics = _evaluate(task, model, data.test, "test")
        test = test_metrics[task.metric]
        if not math.isfinite(test):
            return _Outcome("diverged", history, note=f"non-finite test {task.metric} ({test})")
        metrics = {"val": val_metrics, "test": test_metrics}
        samples = None
        model.eval()
        with torch.no_grad(), autocast():
            final = task.final_outputs(model, data, spec.seed)
    if final is not None:
        metrics["final"] = {name: float(value) for name, value in final.metrics.items()}
        if final.images is not None:
            samples = Samples.of(final.images)
    return _Outcome("done", history, metrics, samples, metric=task.metric)


def _miscounted(task: Task, steps: int, epoch: int, got: str) -> RuntimeError:
    """The schedules are built for ``steps`` per epoch: a task's two hooks must agree."""
    return RuntimeError(
        f"task {task.name}: batches() yielded {got} batches in epoch {epoch}, "
        f"steps_per_epoch() said {steps}"
    )
