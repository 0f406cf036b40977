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
import sys
import time

import pytest

from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore
from tests.conftest import requires

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


def command(study: pathlib.Path, store: pathlib.Path, *extra: str) -> list[str]:
    run = [sys.executable, "-m", "demon_optim", "run", str(study)]
    return [*run, "--store", str(store), "--workers", "2", *extra]


def start(study: pathlib.Path, store: pathlib.Path) -> subprocess.Popen:
    return subprocess.Popen(
        command(study, store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: driver and workers
        # a shell's background jobs inherit SIGINT ignored, and Python then keeps ignoring
        # it: give the study the disposition a terminal gives it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def stored(store: pathlib.Path) -> int:
    try:
        db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return 0


def wait_for_rows(process: subprocess.Popen, store: pathlib.Path, rows: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        count = stored(store)
        if count >= rows:
            return count
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"fewer than {rows} rows after 120 s")


def group_gone(pgid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def snapshot(store: pathlib.Path) -> dict[str, tuple]:
    with ResultStore(store, readonly=True) as results:
        rows = results.rows()
    assert len({r["trial_id"] for r in rows}) == len(rows)
    return {
        r["trial_id"]: (
            r["status"],
            r["val_metric"],
            r["test_metric"],
            [(h["train_loss"], h["val_metric"], h["lr"], h["momentum"]) for h in r["history"]],
        )
        for r in rows
    }


@pytest.fixture
def study(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "killme.toml"
    path.write_text(STUDY)
    return path


def test_sigkill_of_the_process_group_loses_nothing(
    study: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = tmp_path / "killed.sqlite"
    process = start(study, store)
    before = wait_for_rows(process, store, 3)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert group_gone(process.pid), "workers outlived the kill"
    partial = stored(store)
    assert before <= partial < TOTAL, "the kill came too late to test anything"

    resumed = subprocess.run(
        command(study, store, "--no-progress"),
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
    process = start(study, store)
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
