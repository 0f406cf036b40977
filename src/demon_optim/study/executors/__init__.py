"""Executors run trials; :func:`run_study` drives one over a study and fills the store.

The driver alone writes the store: it asks which trials are still pending (not there, or
failed last time), plans which of them train together (:mod:`demon_optim.study.batched`,
``batch_trials``), hands the units of work (a trial, or a batch of trials) to the executor
one at a time as workers come free, claiming each unit's trials in the store as it goes (so
several drivers on one store share the work, and a trial another driver runs is skipped),
and writes each unit's results in one transaction as they arrive, releasing the claims. A
background thread renews the driver's leases while its trials run; a claim whose lease
expired (its driver was killed) is taken over. When only trials claimed by other live
drivers remain, the driver waits for them, so every driver's run ends with the whole study
in the store. A driver killed while a batch trains loses that batch's trials, which the
next run trains again; every unit written before stays written.

Ctrl-C stops it cleanly: no new trials start, the workers are stopped, its claims are
released, what was written stays written, and the report says so. A result the store cannot
take (disk full, I/O error, a lock held too long) is saved to a pending file and the run
stops with :class:`~demon_optim.errors.EnvironmentFailure` (see the store).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from demon_optim.errors import invalid
from demon_optim.study.batched.plan import Plan, TrialBatch, Unit, plan_batches, unit_specs
from demon_optim.study.executors.base import (
    Executor,
    execute,
    execute_unit,
    failed_result,
    setup_worker,
    sigint_deferred,
    sigint_ignored,
)
from demon_optim.study.executors.local import LocalExecutor, default_workers
from demon_optim.study.progress import Progress
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import CLAIMED, SETTLED, ResultStore, new_owner
from demon_optim.study.trial import TrialResult

__all__ = [
    "LEASE_S",
    "Executor",
    "LocalExecutor",
    "RunReport",
    "default_workers",
    "execute",
    "execute_unit",
    "failed_result",
    "run_study",
    "setup_worker",
]


#: Default lease of a claim (seconds); it is renewed every third of it while the trial runs.
LEASE_S = 60.0


@dataclass
class RunReport:
    """What one :func:`run_study` call did."""

    total: int  # trials in the study
    skipped: int  # already done or diverged in the store
    written: int = 0  # results written by this call
    counts: dict[str, int] = field(default_factory=dict)  # statuses written by this call
    failures: list[TrialResult] = field(default_factory=list)
    interrupted: bool = False
    wall_time_s: float = 0.0
    elsewhere: int = 0  # pending trials that other drivers on the store ran meanwhile
    batched: int = 0  # results written by this call of trials trained in batches
    batches: int = 0  # batches they came from
    plan: list[str] = field(default_factory=list)  # how the trials run, and why some alone


def run_study(
    specs: Sequence[TrialSpec],
    store: ResultStore,
    executor: Executor,
    *,
    progress: bool = False,
    lease_s: float = LEASE_S,
    poll_s: float | None = None,
    batch_trials: str | int = "off",
    echo: Callable[[str], None] | None = None,
) -> RunReport:
    """Run the specs not yet final in ``store`` on ``executor``; write each result as it comes.

    ``batch_trials`` (``"off"``, ``"auto"`` or the most trials at once) trains trials of
    ``specs`` that can share a batch together (:func:`~demon_optim.study.batched.plan.
    plan_batches`, planned over all of ``specs`` so that the batches do not depend on what
    is pending), on an executor with ``map_units``; ``echo`` receives one line on how the
    pending trials run and one per reason some of them run alone (also in
    :attr:`RunReport.plan`). Costlier units start first (epochs x trials: a shorter tail).
    ``progress`` draws a bar on stderr. Each trial is claimed for ``lease_s`` seconds as the
    executor takes its unit (renewed every ``lease_s / 3``); trials other drivers hold are
    skipped, and waited for (polling every ``poll_s``, default ``min(5, lease_s / 4)``) once
    nothing else is left. Returns with ``interrupted=True`` after Ctrl-C
    (KeyboardInterrupt) instead of raising it. Raises EnvironmentFailure, after stopping the
    workers, if a result cannot be written (the result is then in a pending file, see
    :meth:`ResultStore.write`).
    """
    if not lease_s > 0:
        raise invalid("lease_s", lease_s, "numbers > 0")
    poll_s = min(5.0, lease_s / 4) if poll_s is None else poll_s
    start = time.perf_counter()
    owner = new_owner()
    pending = store.pending(specs)
    seen = store.attempts()
    report = RunReport(total=len(specs), skipped=len(specs) - len(pending))
    plan, run_units = _plan(specs, {s.trial_id for s in pending}, executor, batch_trials, report)
    if echo is not None:
        for line in report.plan:
            echo(line)
    bar = Progress(len(pending), enabled=progress)

    def settled(spec: TrialSpec) -> None:  # another driver wrote it during this run
        report.elsewhere += 1
        bar.update("by another driver")

    def claimed(todo: list[Unit], held: list[TrialSpec]) -> Iterator[Unit]:
        """The units this driver may run, each unit's trials claimed together as the
        executor takes it (a batch keeps those this driver could claim)."""
        for unit in todo:
            members = unit_specs(unit)
            states = store.claim_many([s.trial_id for s in members], owner, lease_s, seen)
            mine = []
            for spec in members:
                state = states[spec.trial_id]
                if state == CLAIMED:
                    mine.append(spec)
                elif state == SETTLED:
                    settled(spec)
                else:
                    held.append(spec)
            if mine:
                yield TrialBatch(tuple(mine)) if isinstance(unit, TrialBatch) else unit

    todo = plan.for_trials({s.trial_id for s in pending})
    try:
        with store.keep_leases(owner, lease_s, lease_s / 3):
            while todo:
                held: list[TrialSpec] = []
                results = run_units(claimed(todo, held))
                try:
                    for unit_results in results:
                        with sigint_deferred():  # written and counted, or neither
                            _write(store, unit_results, owner, report, bar)
                finally:
                    with sigint_ignored():  # a second Ctrl-C must not cut the clean-up short
                        close = getattr(results, "close", None)
                        if close is not None:
                            close()
                again = _wait_for_others(store, held, owner, seen, poll_s, settled, bar)
                todo = plan.for_trials({s.trial_id for s in again})
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        with sigint_ignored(), contextlib.suppress(OSError):
            store.release(owner)  # others may take over at once (best effort: leases expire)
        bar.close()
    report.wall_time_s = time.perf_counter() - start
    return report


RunUnits = Callable[[Iterable[Unit]], Iterator[list[TrialResult]]]


def _plan(
    specs: Sequence[TrialSpec],
    pending: set[str],
    executor: Executor,
    batch_trials: str | int,
    report: RunReport,
) -> tuple[Plan, RunUnits]:
    """The execution plan and how the executor runs its units; its lines in ``report``."""
    map_units = getattr(executor, "map_units", None)
    if batch_trials in ("off", 1) or not pending:
        return plan_batches(specs, "off"), map_units or _one_by_one(executor)
    if map_units is None:
        report.plan.append(
            f"batch_trials {batch_trials}: every trial runs one at a time (executor "
            f"{type(executor).__name__} has no map_units to train batches)"
        )
        return plan_batches(specs, "off"), _one_by_one(executor)
    plan = plan_batches(specs, batch_trials)
    report.plan += [plan.describe(pending), *plan.notes(pending)]
    return plan, map_units


def _one_by_one(executor: Executor) -> RunUnits:
    """``map_units`` over an executor that only has ``map_unordered`` (trials, no batches)."""

    def run(units: Iterable[Unit]) -> Iterator[list[TrialResult]]:
        results = executor.map_unordered(u for u in units if isinstance(u, TrialSpec))
        try:
            for result in results:
                yield [result]
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    return run


def _write(
    store: ResultStore,
    results: list[TrialResult],
    owner: str,
    report: RunReport,
    bar: Progress,
) -> None:
    """Write one unit's results (a batch's in one transaction) and count them."""
    if len(results) == 1 and results[0].execution is None:
        store.write(results[0], owner)
    else:
        store.write_batch(results, owner)
        report.batches += 1
    for result in results:
        report.written += 1
        report.counts[result.status] = report.counts.get(result.status, 0) + 1
        if result.execution is not None:
            report.batched += 1
        if result.status == "failed":
            report.failures.append(result)
        bar.update(result.status, batched=result.execution is not None)


def _wait_for_others(
    store: ResultStore,
    held: list[TrialSpec],
    owner: str,
    seen: dict[str, int],
    poll_s: float,
    settled: Callable[[TrialSpec], None],
    bar: Progress,
) -> list[TrialSpec]:
    """Wait until some trials other drivers hold can be run here; returns those left to try.

    A trial is done with once its row is final or rewritten (the other driver finished it);
    it becomes runnable here when its claim is released or expires. Returns [] when every
    held trial was finished elsewhere. Meanwhile the progress bar says what it waits for.
    """
    try:
        while held:
            runnable, still = [], []
            for spec in held:
                state = store.claim_state(spec.trial_id, owner, seen.get(spec.trial_id, 0))
                if state == SETTLED:
                    settled(spec)
                else:
                    (runnable if state == CLAIMED else still).append(spec)
            if runnable:
                return runnable + still
            held = still
            if held:
                bar.set_note(
                    f"waiting for {len(held)} trial(s) claimed by another driver (taken over "
                    "if its lease expires)"
                )
                time.sleep(poll_s)
        return []
    finally:
        bar.set_note(None)
