"""A study killed at any moment resumes with nothing lost or duplicated; Ctrl-C stops cleanly.

The study runs as `python -m demon_optim run` in its own session (process group) with two
workers; the whole group is killed with SIGKILL once some trials are stored, the command is
run again, and the store must then equal one from an uninterrupted run.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import subprocess

import pytest

from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore
from tests.conftest import requires
from tests.study.study_processes import (
    group_gone,
    kill_group,
    snapshot,
    start_study,
    stored,
    study_command,
    wait_for_rows,
)

pytestmark = requires("sklearn", "(ships the digits data)")

STUDY = """
name = "killme"
tasks = ["digits-mlp"]
methods = ["sgdm", "demon-sgdm", "adam", "demon-adam"]
seeds = [0, 1]
epochs = 40

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


@pytest.fixture
def study(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "killme.toml"
    path.write_text(STUDY)
    return path


def test_sigkill_of_the_process_group_loses_nothing(
    study: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = tmp_path / "killed.sqlite"
    process = start_study(study_command(study, store))
    before = wait_for_rows(process, store, 3)
    kill_group(process)
    assert group_gone(process.pid), "workers outlived the kill"
    partial = stored(store)
    assert before <= partial < TOTAL, "the kill came too late to test anything"

    resumed = subprocess.run(
        study_command(study, store, "--no-progress"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{partial} already in" in resumed.stderr
    assert f"running {TOTAL - partial} on 2 worker(s)" in resumed.stderr

    reference = tmp_path / "reference.sqlite"
    parsed = load_study(study)
    specs = expand(parsed)
    with ResultStore(reference) as results:  # trained as the command trains them (batched)
        report = run_study(specs, results, LocalExecutor(1), batch_trials=parsed.batch_trials)
    assert report.written == TOTAL
    assert snapshot(store) == snapshot(reference)
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*), MAX(attempts) FROM trials").fetchone() == (TOTAL, 1)
    db.close()


def test_ctrl_c_stops_cleanly_and_keeps_what_was_saved(
    study: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = tmp_path / "interrupted.sqlite"
    process = start_study(study_command(study, store))
    wait_for_rows(process, store, 2)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Interrupted:" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err
    assert group_gone(process.pid)
    saved = stored(store)
    assert 2 <= saved < TOTAL
    assert f"trials are in {store}" in err and f"{saved} of {TOTAL}" in err
    assert all(status == "done" for status, *_ in snapshot(store).values())
