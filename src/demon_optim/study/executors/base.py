"""What an executor is, and the one function every executor runs per unit of work.

An executor takes trial specs and yields their results in completion order::

    class Executor(Protocol):
        workers: int
        def map_unordered(self, specs: Iterable[TrialSpec]) -> Iterator[TrialResult]: ...

An executor that also trains batches of trials together (:mod:`demon_optim.study.batched`)
has ``map_units(units) -> Iterator[list[TrialResult]]``: a unit is a trial spec or a
:class:`~demon_optim.study.batched.plan.TrialBatch`, and it yields the results of each unit
together, as one list (its workers call :func:`execute_unit`). The driver claims all of a
batch's trials when the executor takes it and writes its results in one transaction.
The local and Ray executors have it; another executor without it runs every trial alone.

``specs`` is consumed lazily: an executor takes the next spec only when it can start it at
once (a worker is free), because the driver claims each trial in the store as the executor
takes it, so that several drivers on one store share the work. The executor never writes to
the store: the driver (:func:`demon_optim.study.executors.run_study`) does, one transaction
per result, from its own process. If the driver stops iterating (Ctrl-C, an error,
``close()`` of the generator), ``map_unordered`` must stop its workers
before returning. Each worker runs :func:`execute` and keeps its data between trials (tasks
cache loaded data per process and ``data_key``). A distributed executor (Ray: one remote task
or actor per worker calling :func:`execute`) implements the same two members.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import signal
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

import torch

from demon_optim.study.batched.plan import TrialBatch, Unit, unit_specs
from demon_optim.study.devices import deterministic_cuda
from demon_optim.study.plugins import import_plugins
from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import get_task
from demon_optim.study.trial import TrialResult, run_trial, versions

log = logging.getLogger(__name__)


@runtime_checkable
class Executor(Protocol):
    """Runs trials somewhere and yields their results as they finish."""

    workers: int

    def map_unordered(self, specs: Iterable[TrialSpec]) -> Iterator[TrialResult]:
        """Yield one result per spec, in completion order; stop all work when closed.

        Take a spec from ``specs`` only when it can start at once (see the module).
        """
        ...


def setup_worker() -> None:
    """Per-process set-up of a worker: one torch thread (workers are the parallelism), and
    CUDA asked for determinism before its first use (``devices.deterministic_cuda``)."""
    torch.set_num_threads(1)
    deterministic_cuda()


def execute(spec: TrialSpec) -> TrialResult:
    """Run one trial in this process: load (or reuse) the task's data, then train.

    Imports the spec's plugins first. Never raises for a trial's own problems: a plugin that
    fails, a missing data set or a crash is a result with status ``failed``.
    """
    (result,) = execute_unit(spec)
    return result


def execute_unit(unit: Unit) -> list[TrialResult]:
    """Run one unit of work in this process, a trial or a batch trained together; one
    result per trial, as :func:`execute` (a batch whose model turns out not to batch is
    trained one trial at a time)."""
    specs = unit_specs(unit)
    started_at = time.time()
    try:
        import_plugins(specs[0].plugins)  # a spawned or remote worker has not imported them
        task = get_task(specs[0].task)
        data_dir = None if specs[0].data_dir is None else pathlib.Path(specs[0].data_dir)
        data = task.load_data(data_dir)
    except Exception as exc:
        return failed_results(
            unit, f"{type(exc).__name__}: {exc}", traceback.format_exc(), started_at
        )
    if isinstance(unit, TrialSpec):
        return [run_trial(unit, data, task)]
    from demon_optim.study.batched.models import NotBatchable
    from demon_optim.study.batched.train import run_batch

    try:
        return run_batch(unit, data, task)
    except NotBatchable as why:  # the driver's plan thought it would: train them alone
        log.warning("%s runs one trial at a time: %s", unit.label(), why)
        return [run_trial(spec, data, task) for spec in unit.specs]


def failed_result(
    spec: TrialSpec,
    error: str,
    tb: str | None = None,
    started_at: float | None = None,
    execution: dict[str, object] | None = None,
) -> TrialResult:
    """A result with status ``failed`` (for errors outside the training loop);
    ``execution``: the batch it was to train in (:meth:`TrialBatch.execution`)."""
    now = time.time()
    return TrialResult(
        spec=spec,
        status="failed",
        started_at=now if started_at is None else started_at,
        wall_time_s=0.0 if started_at is None else now - started_at,
        versions=versions(),
        error=error,
        traceback=tb,
        execution=execution,
    )


def failed_results(
    unit: Unit, error: str, tb: str | None = None, started_at: float | None = None
) -> list[TrialResult]:
    """A failed result for each trial of ``unit`` (those of a batch say which batch)."""
    execution = unit.execution() if isinstance(unit, TrialBatch) else None
    return [failed_result(spec, error, tb, started_at, execution) for spec in unit_specs(unit)]


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT inside the block (main thread only; elsewhere a no-op).

    Workers started inside it inherit SIG_IGN, so Ctrl-C in a terminal reaches only the
    driver; the driver also uses it while it cleans up after a Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a SIGINT that arrives inside the block; raise it as KeyboardInterrupt after it.

    For a step that must happen whole (a result written and counted): Ctrl-C then takes
    effect just after it, never between its parts. Main thread only; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
    if not caught or previous == signal.SIG_IGN:
        return
    if callable(previous):
        previous(signal.SIGINT, None)  # default_int_handler: raises KeyboardInterrupt
    else:
        raise KeyboardInterrupt


def each_result(units: Iterator[list[TrialResult]]) -> Iterator[TrialResult]:
    """The results of a stream of units' result lists, one by one, in order (what
    ``map_unordered`` yields from ``map_units``); closing it closes ``units``, which stops
    the executor's workers."""
    try:
        for results in units:
            yield from results
    finally:
        units.close()
