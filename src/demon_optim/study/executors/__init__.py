"""Executors run trials; :func:`run_study` drives one over a study and fills the store.

The driver is the only writer: it asks the store which trials are still pending (not there,
or failed last time), feeds them to the executor, and writes each result in its own
transaction as it arrives. Ctrl-C stops it cleanly: no new trials start, the workers are
stopped, what was written stays written, and the report says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from demon_optim.study.executors.base import (
    Executor,
    execute,
    failed_result,
    setup_worker,
    sigint_ignored,
)
from demon_optim.study.executors.local import LocalExecutor, default_workers
from demon_optim.study.progress import Progress
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.trial import TrialResult

__all__ = [
    "Executor",
    "LocalExecutor",
    "RunReport",
    "default_workers",
    "execute",
    "failed_result",
    "run_study",
    "setup_worker",
]


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


def run_study(
    specs: Sequence[TrialSpec],
    store: ResultStore,
    executor: Executor,
    *,
    progress: bool = False,
) -> RunReport:
    """Run the specs not yet final in ``store`` on ``executor``; write each result as it comes.

    Longer budgets start first (shorter tail). ``progress`` draws a bar on stderr. Returns
    with ``interrupted=True`` after Ctrl-C (KeyboardInterrupt) instead of raising it.
    """
    start = time.perf_counter()
    pending = sorted(store.pending(specs), key=lambda spec: -spec.epochs)
    report = RunReport(total=len(specs), skipped=len(specs) - len(pending))
    bar = Progress(len(pending), enabled=progress)
    results = executor.map_unordered(pending)
    try:
        for result in results:
            store.write(result)
            report.written += 1
            report.counts[result.status] = report.counts.get(result.status, 0) + 1
            if result.status == "failed":
                report.failures.append(result)
            bar.update(result.status)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        with sigint_ignored():  # a second Ctrl-C must not cut the clean-up short
            close = getattr(results, "close", None)
            if close is not None:
                close()
            bar.close()
    report.wall_time_s = time.perf_counter() - start
    return report
