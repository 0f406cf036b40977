"""Executors and the driver: in-process and process-pool runs agree, dead workers are
reported, the driver writes every result once and stops cleanly on Ctrl-C."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

import pytest

from demon_optim.errors import ConfigError
from demon_optim.study.executors import Executor, LocalExecutor, failed_result, run_study
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import CLAIMED, ResultStore, new_owner
from demon_optim.study.trial import TrialResult
from tests.conftest import requires

pytestmark = requires("sklearn", "(ships the digits data)")


def specs(n: int, epochs: int = 2) -> list[TrialSpec]:
    config = (("lr", 0.1), ("momentum", 0.9), ("weight_decay", 0.0))
    return [TrialSpec("digits-mlp", "sgdm", config, seed, epochs, 100) for seed in range(n)]


def metrics(results: Sequence[TrialResult]) -> dict[str, tuple]:
    return {
        r.trial_id: (r.status, r.val_metric, r.test_metric, [h["train_loss"] for h in r.history])
        for r in results
    }


def test_local_executor_is_an_executor() -> None:
    assert isinstance(LocalExecutor(2), Executor)
    assert LocalExecutor(1).in_process and not LocalExecutor(2).in_process
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match=f"workers: got {bad!r}"):
            LocalExecutor(bad)  # type: ignore[arg-type]


def test_pool_and_in_process_give_the_same_numbers() -> None:
    trials = specs(4)
    here = list(LocalExecutor(1).map_unordered(trials))
    pooled = list(LocalExecutor(2).map_unordered(trials))
    assert len(pooled) == 4 and all(r.status == "done" for r in pooled)
    assert metrics(here) == metrics(pooled)
    assert multiprocessing.active_children() == []  # the pool is gone


def test_kept_workers_outlive_each_call_and_end_with_the_block() -> None:
    """A search runs in rounds: inside kept() its workers start once and serve every round."""
    executor = LocalExecutor(2)
    reference = metrics(LocalExecutor(1).map_unordered(specs(4)))
    with executor.kept():
        first = metrics(executor.map_unordered(specs(2)))
        pids = sorted(w.process.pid for w in executor._kept)
        assert all(w.process.is_alive() for w in executor._kept)
        second = metrics(executor.map_unordered(specs(4)[2:]))
        assert sorted(w.process.pid for w in executor._kept) == pids  # the same processes
        kept = list(executor._kept)
    assert {**first, **second} == reference
    assert executor._kept is None and not any(w.process.is_alive() for w in kept)


def test_a_killed_worker_fails_its_trial_and_the_rest_go_on() -> None:
    # One short trial, then long ones (about a second each): when the short one comes back,
    # both workers are early in a long trial, so killing either kills a running trial.
    trials = specs(1, epochs=1) + specs(5, epochs=100)[1:]
    results = []
    for result in LocalExecutor(2).map_unordered(trials):
        results.append(result)
        if len(results) == 1:
            assert result.spec.epochs == 1
            victim = multiprocessing.active_children()[0]
            os.kill(victim.pid, signal.SIGKILL)
    assert sorted(r.spec.seed for r in results) == list(range(5))
    died = [r for r in results if r.status == "failed"]
    assert len(died) == 1 and died[0].error.startswith("WorkerDied:")
    assert "-9" in died[0].error
    assert sum(r.status == "done" for r in results) == 4
    assert multiprocessing.active_children() == []


def test_run_study_writes_each_result_once_and_resumes(tmp_path: pathlib.Path) -> None:
    trials = specs(3)
    with ResultStore(tmp_path / "s.sqlite") as store:
        first = run_study(trials[:2], store, LocalExecutor(1))
        assert (first.total, first.skipped, first.written) == (2, 0, 2)
        second = run_study(trials, store, LocalExecutor(1))
        assert (second.total, second.skipped, second.written) == (3, 2, 1)
        assert second.counts == {"done": 1} and not second.interrupted
        assert store.count() == 3


class InterruptedExecutor:
    """Yields results, then raises KeyboardInterrupt as Ctrl-C would; records its clean-up."""

    workers = 1

    def __init__(self) -> None:
        self.closed = False

    def map_unordered(self, specs: Sequence[TrialSpec]) -> Iterator[TrialResult]:
        inner = LocalExecutor(1).map_unordered(specs)
        try:
            for i, result in enumerate(inner):
                if i == 2:
                    raise KeyboardInterrupt
                yield result
        finally:
            self.closed = True


def test_ctrl_c_stops_the_driver_cleanly(tmp_path: pathlib.Path) -> None:
    executor = InterruptedExecutor()
    with ResultStore(tmp_path / "s.sqlite") as store:
        report = run_study(specs(5), store, executor)
        assert report.interrupted and report.written == 2
        assert executor.closed
        assert store.count() == 2


class InterruptedAfterCommit(ResultStore):
    """Ctrl-C arrives just after the second result is committed, still inside write()."""

    def write(self, result: TrialResult, owner: str | None = None) -> None:
        super().write(result, owner)
        if self.count() == 2:
            signal.raise_signal(signal.SIGINT)  # raised at the next bytecode, here


def test_ctrl_c_right_after_a_write_still_counts_it(tmp_path: pathlib.Path) -> None:
    with InterruptedAfterCommit(tmp_path / "s.sqlite") as store:
        report = run_study(specs(4, epochs=1), store, LocalExecutor(1))
        assert report.interrupted
        assert report.written == store.count() == 2
        assert store.claims() == []  # released on the way out


class LazyExecutor:
    """Takes one spec at a time and records which trials were claimed when it took each."""

    workers = 1

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.claimed_at_take: list[int] = []

    def map_unordered(self, specs: Iterable[TrialSpec]) -> Iterator[TrialResult]:
        for spec in specs:
            self.claimed_at_take.append(len(self.store.claims()))
            yield failed_result(spec, "Skipped: not run in this test")


def test_trials_are_claimed_one_at_a_time_as_the_executor_takes_them(
    tmp_path: pathlib.Path,
) -> None:
    trials = specs(3)
    with ResultStore(tmp_path / "s.sqlite") as store:
        other = new_owner()  # another live driver runs trials[1] (for 0.5 s more)
        assert store.claim(trials[1].trial_id, other, lease_s=0.5) == CLAIMED
        executor = LazyExecutor(store)
        started = time.monotonic()
        report = run_study(trials, store, executor, lease_s=0.4, poll_s=0.05)
        # each spec was claimed when taken (the other driver's claim + this one), released
        # with its result; trials[1] was skipped, waited for, and taken over once its
        # lease ran out
        assert executor.claimed_at_take == [2, 2, 1]
        assert time.monotonic() - started >= 0.4
        assert (report.written, report.elsewhere) == (3, 0)
        assert [r["seed"] for r in store.rows()] == [0, 2, 1]
        assert store.claims() == []


def test_a_trial_another_driver_finishes_meanwhile_is_not_run_again(
    tmp_path: pathlib.Path,
) -> None:
    trials = specs(2)
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        other = new_owner()
        assert store.claim(trials[0].trial_id, other, lease_s=60) == CLAIMED

        def finish_it() -> None:  # the other driver, 0.3 s later
            time.sleep(0.3)
            with ResultStore(path) as theirs:
                theirs.write(next(LocalExecutor(1).map_unordered(trials[:1])), other)

        thread = threading.Thread(target=finish_it)
        thread.start()
        executor = LazyExecutor(store)
        report = run_study(trials, store, executor, lease_s=0.4, poll_s=0.05)
        thread.join()
        assert (report.written, report.elsewhere) == (1, 1)
        rows = {r["seed"]: r for r in store.rows()}
        assert rows[0]["owner"] == other and rows[0]["status"] == "done"
        assert rows[1]["status"] == "failed" and rows[0]["attempts"] == 1
