"""Executors and the driver: in-process and process-pool runs agree, dead workers are
reported, the driver writes every result once and stops cleanly on Ctrl-C."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import signal
from collections.abc import Iterator, Sequence

import pytest

from demon_optim.errors import ConfigError
from demon_optim.study.executors import Executor, LocalExecutor, run_study
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import ResultStore
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
