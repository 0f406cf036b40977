"""Run trials on this machine: N worker processes, or in this process when N = 1.

Each worker is a ``spawn``-ed process (no fork: torch's thread pools do not survive it) with
one torch thread, that ignores SIGINT (Ctrl-C is the driver's to handle) and runs
:func:`~demon_optim.study.executors.base.execute_unit` on one unit of work at a time (a
trial, or a batch of trials trained together), keeping loaded data between them. The
driver hands each idle worker the next unit over the worker's own pipe, so it always knows
what each worker runs: a worker that dies (killed, out of memory) yields ``failed`` results
for its unit's trials and is replaced, instead of hanging the study. Workers exit on their
own when the driver process disappears.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.context import BaseContext

import torch

from demon_optim.errors import invalid
from demon_optim.study.batched.plan import Unit
from demon_optim.study.devices import PINNED_ENV
from demon_optim.study.executors.base import (
    each_result,
    execute_unit,
    failed_results,
    setup_worker,
    sigint_ignored,
)
from demon_optim.study.spec import TrialSpec
from demon_optim.study.trial import TrialResult


def default_workers() -> int:
    """One worker per CPU core available to this process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """A process pool of ``workers`` processes (default: one per core, or per GPU).

    ``in_process`` (default: ``workers == 1``) runs trials in the calling process instead,
    with one torch thread: no start-up cost, and monkeypatching works in tests.
    ``gpus``: host GPU indices to spread the workers over, ``workers_per_gpu`` of them each
    (default ``workers``: ``len(gpus) * workers_per_gpu``); each worker process sees only its
    GPU (``CUDA_VISIBLE_DEVICES``), where a trial's ``cuda:N`` is ``cuda:0``.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        in_process: bool | None = None,
        start_method: str = "spawn",
        gpus: Sequence[int] = (),
        workers_per_gpu: int = 1,
    ) -> None:
        if isinstance(workers_per_gpu, bool) or not isinstance(workers_per_gpu, int):
            raise invalid("workers_per_gpu", workers_per_gpu, "integers >= 1")
        if workers_per_gpu < 1:
            raise invalid("workers_per_gpu", workers_per_gpu, "integers >= 1")
        self.gpus = tuple(gpus)
        if workers is None:
            workers = len(self.gpus) * workers_per_gpu if self.gpus else default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise invalid("workers", workers, "integers >= 1")
        self.workers = workers
        self.workers_per_gpu = workers_per_gpu
        self.in_process = workers == 1 if in_process is None else in_process
        self.start_method = start_method
        self._kept: list[_Worker] | None = None  # workers that outlive map_unordered (kept())

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Keep the worker processes (and the data they loaded) between ``map_unordered``
        calls inside the block, instead of starting new ones each time: a study that runs
        in rounds (a search's batches) pays the start-up once. They end when it exits."""
        if self._kept is not None:  # already inside
            yield
            return
        self._kept = []
        try:
            yield
        finally:
            workers, self._kept = self._kept, None
            for worker in workers:
                worker.release()
            for worker in workers:
                worker.stop(wait=True)

    def gpu_of(self, slot: int) -> int | None:
        """The host GPU worker ``slot`` is pinned to (None: no GPUs, all visible)."""
        if not self.gpus:
            return None
        return self.gpus[(slot // self.workers_per_gpu) % len(self.gpus)]

    def map_unordered(self, specs: Iterable[TrialSpec]) -> Iterator[TrialResult]:
        """Yield each spec's result as it finishes; closing the generator stops the workers.

        ``specs`` is consumed lazily: the next spec is taken only when a worker is free to
        start it (the driver claims a trial in the store as it hands it over).
        """
        return each_result(self.map_units(specs))

    def map_units(self, units: Iterable[Unit]) -> Iterator[list[TrialResult]]:
        """Yield the results of each unit of work (a trial, or a batch trained together) as
        it finishes, as one list; lazily, and stopping the workers when closed, as
        :meth:`map_unordered`."""
        if self.in_process:
            return self._run_here(units)
        return self._run_pool(units)

    def _run_here(self, units: Iterable[Unit]) -> Iterator[list[TrialResult]]:
        threads = torch.get_num_threads()
        setup_worker()
        try:
            for unit in units:
                yield execute_unit(unit)
        finally:
            torch.set_num_threads(threads)

    def _run_pool(self, units: Iterable[Unit]) -> Iterator[list[TrialResult]]:
        todo = iter(units)
        context = multiprocessing.get_context(self.start_method)
        kept = self._kept is not None
        workers: list[_Worker] = self._kept if self._kept is not None else []
        finished = False
        try:
            for worker in workers:  # kept from an earlier call, idle
                if (unit := next(todo, None)) is None:
                    break
                if not worker.process.is_alive():
                    with sigint_ignored():
                        worker.restart(context)
                worker.assign(unit)
            while len(workers) < self.workers and (unit := next(todo, None)) is not None:
                with sigint_ignored():  # children inherit SIG_IGN across spawn's exec
                    workers.append(_Worker(context, self.gpu_of(len(workers))))
                workers[-1].assign(unit)
            while busy := [w for w in workers if w.current is not None]:
                waiting = {}
                for worker in busy:
                    waiting[worker.connection] = worker
                    waiting[worker.process.sentinel] = worker
                ready = multiprocessing.connection.wait(list(waiting))
                for worker in {waiting[r] for r in ready}:
                    results = worker.collect()
                    if worker.current is None and (unit := next(todo, None)) is not None:
                        if not worker.process.is_alive():
                            with sigint_ignored():
                                worker.restart(context)
                        worker.assign(unit)
                    if results is not None:
                        yield results
            finished = True
        finally:
            if kept and finished:
                pass  # all idle, kept for the next call (kept() ends them)
            else:
                if finished:  # all idle: ask every worker to exit, then wait for them together
                    for worker in workers:
                        worker.release()
                for worker in workers:
                    worker.stop(wait=finished)
                workers.clear()  # a kept list too: the next call starts new workers


class _Worker:
    """One worker process and the driver's end of its pipe."""

    def __init__(self, context: BaseContext, gpu: int | None = None) -> None:
        self.current: Unit | None = None
        self.gpu = gpu
        self.restart(context)

    def restart(self, context: BaseContext) -> None:
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_end, self.gpu), daemon=True)
        self.process.start()
        child_end.close()

    def assign(self, unit: Unit) -> None:
        self.current = unit
        with contextlib.suppress(OSError):  # a dead worker: collect() reports its trials
            self.connection.send(unit)

    def collect(self) -> list[TrialResult] | None:
        """The finished unit's results; failed results if the process died running it."""
        unit = self.current
        if unit is None:
            return None
        try:
            if self.connection.poll():
                result = self.connection.recv()
                self.current = None
                return result
        except (EOFError, OSError):
            pass
        if self.process.is_alive():
            return None  # woken by something else; keep waiting
        self.process.join()
        self.current = None
        what = "this trial" if isinstance(unit, TrialSpec) else f"this trial's {unit.label()}"
        error = (
            f"WorkerDied: the worker process running {what} exited with code "
            f"{self.process.exitcode} (killed, or out of memory?)"
        )
        return failed_results(unit, error)

    def release(self) -> None:
        """Ask an idle worker to exit."""
        with contextlib.suppress(OSError):
            self.connection.send(None)

    def stop(self, wait: bool) -> None:
        """End the process: wait briefly for it to exit if released, else terminate it."""
        if wait:
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
        if self.process.is_alive():  # pragma: no cover - a worker stuck in C code
            self.process.kill()
            self.process.join()
        self.connection.close()


def _worker_main(connection: multiprocessing.connection.Connection, gpu: int | None) -> None:
    """A worker's loop: receive a unit of work, send back its results; None (or no driver)
    ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu is not None:  # before CUDA's first use in this process, which reads it once
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
        os.environ[PINNED_ENV] = str(gpu)
    setup_worker()
    driver = multiprocessing.parent_process()
    while True:
        if not connection.poll(1.0):
            if driver is not None and not driver.is_alive():
                return
            continue
        try:
            unit = connection.recv()
        except (EOFError, OSError):
            return
        if unit is None:
            # Every result has been sent (send() returns once written) and nothing else needs
            # flushing: skip the interpreter's slow teardown of torch.
            os._exit(0)
        connection.send(execute_unit(unit))
