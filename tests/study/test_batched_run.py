"""Batched execution through the driver and the command: the store, resume, kills, output.

A study may mix trials trained alone and in batches and resume either way under the same
trial ids; a batched run is deterministic and independent of the worker count; SIGKILL of
the whole process group during a batch loses only the batches that were training; what
cannot batch is announced once per reason; bad values of the option or the study key are
one line naming them.
"""

from __future__ import annotations

import pathlib
import subprocess
from collections import Counter

import pytest

from demon_optim.cli import main
from demon_optim.study import register_task
from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.progress import Progress
from demon_optim.study.runner import run
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore
from demon_optim.study.tasks import get_task
from tests.conftest import requires
from tests.study.study_processes import (
    kill_group,
    snapshot,
    start_study,
    study_command,
    wait_for_rows,
)

pytestmark = requires("mnist1d", "(generates the MNIST-1D data)")

STUDY = """
name = "batched"
tasks = ["mnist1d-mlp"]
methods = ["sgdm", "demon-sgdm", "adam", "demon-adam"]
seeds = [0, 1]
epochs = {epochs}
batch_trials = {batch_trials}

[grid.sgdm]
lr = [0.03, 0.1]
momentum = 0.9

[grid.demon-sgdm]
lr = [0.03, 0.1]
momentum = 0.9

[grid.adam]
lr = [1e-3, 3e-3]
momentum = 0.9

[grid.demon-adam]
lr = [1e-4, 3e-4]
momentum = 0.9
"""
TOTAL = 16


def write_study(
    folder: pathlib.Path, epochs: int = 2, batch_trials: str = '"auto"'
) -> pathlib.Path:
    path = folder / "batched.toml"
    path.write_text(STUDY.format(epochs=epochs, batch_trials=batch_trials))
    return path


def test_a_study_run_half_alone_resumes_in_batches_under_the_same_ids(
    tmp_path: pathlib.Path,
) -> None:
    path = write_study(tmp_path)
    specs = expand(load_study(path))
    store = tmp_path / "mixed.sqlite"
    with ResultStore(store) as results:
        first = run_study(specs[: TOTAL // 2], results, LocalExecutor(1), batch_trials="off")
    assert first.written == TOTAL // 2 and first.batched == 0
    lines: list[str] = []
    resumed = run(path, store=store, workers=1, echo=lines.append)
    assert resumed.progress is not None and resumed.exit_code == 0
    assert resumed.progress.written == TOTAL // 2 == resumed.progress.batched
    assert any(line.startswith(f"batch_trials auto: {TOTAL // 2} trials in ") for line in lines)
    rows = {r["trial_id"]: r for r in resumed.rows}
    assert set(rows) == {s.trial_id for s in specs}
    assert {r["status"] for r in rows.values()} == {"done"}
    assert [rows[s.trial_id]["execution"] for s in specs[: TOTAL // 2]] == [None] * (TOTAL // 2)
    batched = [rows[s.trial_id]["execution"] for s in specs[TOTAL // 2 :]]
    assert all(e["mode"] == "batched" for e in batched)
    members = Counter(e["batch"] for e in batched)
    assert all(members[e["batch"]] == e["size"] for e in batched)
    # the report says how the trials were trained
    index = (resumed.report or pathlib.Path()).read_text()
    assert f"{TOTAL // 2} trials trained in" in index and f"{TOTAL // 2} alone" in index
    # and running it again, either way, has nothing left to do
    again = run(path, store=store, workers=1, batch_trials="off")
    assert again.progress is not None and again.progress.written == 0


def test_a_batched_run_is_deterministic_whatever_the_workers(tmp_path: pathlib.Path) -> None:
    specs = expand(load_study(write_study(tmp_path)))
    stores = []
    for name, workers in (("one", 1), ("two", 2), ("again", 1)):
        store = tmp_path / f"{name}.sqlite"
        with ResultStore(store) as results:
            report = run_study(specs, results, LocalExecutor(workers), batch_trials="auto")
        assert report.written == report.batched == TOTAL and report.batches >= 2
        stores.append(snapshot(store, execution=True))
    assert stores[0] == stores[1] == stores[2]


def test_sigkill_during_a_batch_loses_only_the_batches_training(tmp_path: pathlib.Path) -> None:
    path = write_study(tmp_path, epochs=30, batch_trials="4")
    store = tmp_path / "killed.sqlite"
    command = study_command(path, store, "--no-progress")
    process = start_study(command)
    wait_for_rows(process, store, 4)
    kill_group(process)
    partial = snapshot(store, execution=True)
    sizes = Counter(execution["batch"] for *_, execution in partial.values())
    assert 4 <= len(partial) < TOTAL, "the kill came too late to test anything"
    assert set(sizes.values()) == {4}  # whole batches, never part of one

    resumed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"running {TOTAL - len(partial)} on 2 worker(s)" in resumed.stderr
    reference = tmp_path / "reference.sqlite"
    with ResultStore(reference) as results:
        run_study(expand(load_study(path)), results, LocalExecutor(1), batch_trials=4)
    assert snapshot(store, execution=True) == snapshot(reference, execution=True)


class OwnForward(type(get_task("mnist1d-mlp"))):  # type: ignore[misc]
    """MNIST-1D's MLP through a forward hook of its own: it cannot batch."""

    name = "test-own-forward"

    def forward(self, model, inputs, state):  # type: ignore[no-untyped-def]
        return model(inputs), state


def test_what_cannot_batch_is_announced_once_and_runs_alone(
    tmp_path: pathlib.Path, restore_registries: None
) -> None:
    register_task(OwnForward)
    study = {
        "name": "mixed",
        "tasks": ["mnist1d-mlp", "test-own-forward"],
        "methods": ["sgdm", "qhm+lr-step"],
        "seeds": [0, 1],
        "epochs": 1,
        "grid": {"sgdm": {"lr": 0.1, "momentum": 0.9}, "qhm+lr-step": {"lr": 0.3}},
    }
    lines: list[str] = []
    result = run(study, store=tmp_path / "m.sqlite", workers=1, echo=lines.append)
    assert result.exit_code == 0 and result.counts()["done"] == 8
    plan = [line for line in lines if "one at a time" in line or line.startswith("batch_trials")]
    assert plan == [
        "batch_trials auto: 2 trials in 1 batch of 2 models, 6 one at a time",
        "4 trials of method qhm+lr-step run one at a time: "
        + plan[1].split("one at a time: ", 1)[1],
        "2 trials of task test-own-forward run one at a time: it trains through its own forward()",
    ]
    executions = {(r["task"], r["method"]): r["execution"] for r in result.rows}
    assert executions[("mnist1d-mlp", "sgdm")]["size"] == 2
    assert executions[("test-own-forward", "sgdm")] is None


def test_bad_batch_trials_is_one_line_naming_it(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(tmp_path)
    for bad in ("sometimes", "0", "-2", "1.5"):
        code = main(
            ["run", str(path), "--store", str(tmp_path / "s.sqlite"), "--batch-trials", bad]
        )
        _, err = capsys.readouterr()
        assert code == 2, err
        assert err.startswith(f"demon-optim: error: --batch-trials: got {bad!r}") or err.startswith(
            f"demon-optim: error: --batch-trials: got {int(bad)}"
        ), err
        assert "allowed: auto, off, or an integer from 1 to" in err and "Traceback" not in err
    path.write_text(STUDY.format(epochs=2, batch_trials='"sometimes"'))
    code = main(["run", str(path), "--store", str(tmp_path / "s.sqlite")])
    _, err = capsys.readouterr()
    assert code == 2
    assert "batch_trials: got 'sometimes'; allowed: auto, off, or an integer from 1 to" in err
    assert not (tmp_path / "s.sqlite").exists()


def test_the_progress_bar_counts_batched_trials() -> None:
    bar = Progress(3, enabled=False)
    bar.update("done", batched=True)
    bar.update("diverged", batched=True)
    assert "2/3 trials (2 batched)" in bar.line() and "1 diverged" in bar.line()
    assert "batched" not in Progress(3, enabled=False).line()
