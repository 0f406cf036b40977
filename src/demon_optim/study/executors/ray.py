"""Run trials as Ray tasks, on a Ray cluster or on a local one started here.

One Ray task per unit of work (a trial, or a batch of trials trained together), declaring
its CPU/GPU needs so Ray places it; at most ``workers`` tasks are in flight, and results
stream back in completion order (``ray.wait``). Each Ray worker process runs
:func:`~demon_optim.study.executors.base.setup_worker` once and then
:func:`~demon_optim.study.executors.base.execute_unit` per unit, so loaded data stays cached
in the worker between trials, as with the local executor. The driver alone writes to the store
(:func:`~demon_optim.study.executors.run_study`): workers only return results, so a cluster
needs no shared file system and no database server.

A task whose worker dies (killed, out of memory, its node lost) yields ``failed`` results
for its trials, and the study goes on; the next ``demon-optim run`` retries it. Closing the
iterator (Ctrl-C, an error in the driver) cancels the tasks still queued or running (on
the local cluster started here, by stopping that cluster; it starts again when needed).

Ray is an optional dependency: ``pip install 'demon-optim[ray]'``.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

from demon_optim.errors import ConfigError, invalid
from demon_optim.study.batched.plan import Unit, unit_specs
from demon_optim.study.executors.base import (
    each_result,
    execute_unit,
    failed_results,
    setup_worker,
)
from demon_optim.study.spec import TrialSpec
from demon_optim.study.trial import TrialResult

#: Fault injection for tests: a Ray worker that is asked to run the trial whose id is in
#: this environment variable (or a batch holding it) exits at once (``os._exit``), as a
#: worker killed by the system would. Read in the worker, so set it before the Ray cluster
#: starts.
CRASH_TRIAL_ENV = "DEMON_OPTIM_RAY_CRASH_TRIAL"

_worker_ready = False  # per Ray worker process: setup_worker() done


def _run_unit(unit: Unit, threads: int) -> list[TrialResult]:
    """The body of the Ray task: set the worker up once, then run one unit of work."""
    global _worker_ready
    if not _worker_ready:
        setup_worker()
        if threads > 1:
            import torch

            torch.set_num_threads(threads)
        _worker_ready = True
    if os.environ.get(CRASH_TRIAL_ENV) in {spec.trial_id for spec in unit_specs(unit)}:
        os._exit(1)
    return execute_unit(unit)


def _import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise invalid(
            "executor",
            "ray",
            "local, or ray once Ray is installed: install it with pip install 'demon-optim[ray]'",
        ) from None


class RayExecutor:
    """Trials as Ray tasks; ``workers`` of them in flight at a time.

    ``address``: the cluster to join (``"auto"``: the one ``ray start`` started on this
    machine; ``"ray://host:10001"``: Ray Client). None: a local cluster of this machine's
    cores (or ``workers * num_cpus_per_trial`` CPUs), started here and stopped with the
    process. If Ray is already initialised in this process, that connection is used.
    ``workers`` defaults to the cluster's CPUs / ``num_cpus_per_trial`` (and GPUs /
    ``num_gpus_per_trial`` when trials ask for GPUs). ``max_retries``: how often Ray re-runs
    a task whose worker died before its trial is reported failed.
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        num_cpus_per_trial: float = 1,
        num_gpus_per_trial: float = 0,
        *,
        max_retries: int = 0,
    ) -> None:
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
        ):
            raise invalid("workers", workers, "integers >= 1")
        if not num_cpus_per_trial > 0:
            raise invalid("num_cpus_per_trial", num_cpus_per_trial, "numbers > 0")
        if not num_gpus_per_trial >= 0:
            raise invalid("num_gpus_per_trial", num_gpus_per_trial, "numbers >= 0")
        ray = _import_ray()
        self._ray = ray
        self.num_cpus_per_trial = num_cpus_per_trial
        self.num_gpus_per_trial = num_gpus_per_trial
        self.max_retries = max_retries
        # the local cluster this executor starts itself (None: one it was given)
        self._own_cluster: dict[str, Any] | None = None
        if not ray.is_initialized():
            options: dict[str, Any] = {"address": address, "logging_level": "WARNING"}
            if address is None:
                options["include_dashboard"] = False
                if workers is not None:
                    options["num_cpus"] = math.ceil(workers * num_cpus_per_trial)
            try:
                ray.init(**options)
            except ConnectionError as error:
                raise ConfigError(
                    f"--address: cannot reach a Ray cluster at {address!r}: {error}"
                ) from None
            if address is None:
                self._own_cluster = options
        if workers is None:
            resources = ray.cluster_resources()
            workers = int(resources.get("CPU", 1) // num_cpus_per_trial)
            if num_gpus_per_trial > 0:
                workers = min(workers, int(resources.get("GPU", 0) // num_gpus_per_trial))
            if workers < 1:
                raise ConfigError(
                    f"executor ray: the cluster ({resources.get('CPU', 0)} CPUs, "
                    f"{resources.get('GPU', 0)} GPUs) cannot fit one trial of "
                    f"{num_cpus_per_trial} CPUs and {num_gpus_per_trial} GPUs"
                )
        self.workers = workers
        self._task = ray.remote(_run_unit).options(
            num_cpus=num_cpus_per_trial,
            num_gpus=num_gpus_per_trial,
            max_retries=max_retries,
        )
        self._threads = max(1, int(num_cpus_per_trial))

    def map_unordered(self, specs: Iterable[TrialSpec]) -> Iterator[TrialResult]:
        """Yield each spec's result as it finishes; closing the generator cancels the rest.

        ``specs`` is consumed lazily: the next spec is taken when fewer than ``workers``
        tasks are in flight (the driver claims a trial in the store as it hands it over).
        """
        return each_result(self.map_units(specs))

    def map_units(self, units: Iterable[Unit]) -> Iterator[list[TrialResult]]:
        """Yield the results of each unit of work (a trial, or a batch trained together) as
        one list, as it finishes; lazily, cancelling the rest when closed, as
        :meth:`map_unordered`."""
        ray = self._ray
        if self._own_cluster is not None and not ray.is_initialized():
            ray.init(**self._own_cluster)  # stopped after an interrupted run: start it again
        todo = iter(units)
        running: dict[Any, Unit] = {}
        more = True
        try:
            while more or running:
                while more and len(running) < self.workers:
                    unit = next(todo, None)
                    if unit is None:
                        more = False
                    else:
                        running[self._task.remote(unit, self._threads)] = unit
                if not running:
                    break
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    yield self._collect(ref, running.pop(ref))
        finally:
            if running:
                self._stop(list(running))

    def _stop(self, refs: list[Any]) -> None:
        """Stop the tasks still queued or running (the driver stopped iterating).

        On the local cluster this executor started, stop the cluster itself: in Ray 2.60,
        cancelling a task whose reply is on its way can abort the driver (a failed check in
        Ray's task manager, "Tried to complete task that was not pending"), which an
        interrupted run met now and then. On a cluster it was given, cancel the tasks
        (``force=True`` races replies the same way).
        """
        ray = self._ray
        if self._own_cluster is not None:
            with contextlib.suppress(Exception):
                ray.shutdown()
            return
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=False)

    def _collect(self, ref: Any, unit: Unit) -> list[TrialResult]:
        """A finished task's results; failed results if its worker died or Ray failed it."""
        ray = self._ray
        specs = unit_specs(unit)
        what = "this trial" if len(specs) == 1 else f"this trial's batch of {len(specs)}"
        try:
            return ray.get(ref)
        except ray.exceptions.WorkerCrashedError as error:
            message = (
                f"WorkerDied: the Ray worker running {what} died (killed, or out of "
                f"memory?): {_first_line(error)}"
            )
            return failed_results(unit, message)
        except ray.exceptions.RayError as error:
            message = f"{type(error).__name__}: {_first_line(error)}"
            return failed_results(unit, message, str(error))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
