"""Several drivers on one store share the work: each trial is trained once, and a driver
killed mid-run loses nothing (the others take over its claims once their lease expires).

Each driver is a real process running :func:`run_study` on the same store (one in-process
worker each: the test machine has two cores).
"""

from __future__ import annotations

import json
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
from tests.study.test_resume import group_gone, snapshot, stored

pytestmark = requires("sklearn", "(ships the digits data)")

STUDY = """
name = "shared"
tasks = ["digits-mlp"]
methods = ["sgdm", "adam"]
seeds = [0, 1]
epochs = 20

[grid.sgdm]
lr = [0.03, 0.1]
momentum = 0.9

[grid.adam]
lr = [1e-3, 3e-3]
momentum = 0.9
"""
TOTAL = 8

DRIVER = """
import json, sys
from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore
study, path, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
with ResultStore(path) as store:
    report = run_study(expand(load_study(study)), store, LocalExecutor(1), lease_s=lease)
print(json.dumps({"written": report.written, "elsewhere": report.elsewhere,
                  "skipped": report.skipped}))
"""


@pytest.fixture
def study(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "shared.toml"
    path.write_text(STUDY)
    return path


def driver(study: pathlib.Path, store: pathlib.Path, lease_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(study), str(store), str(lease_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen) -> dict[str, int]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def query(store: pathlib.Path, sql: str) -> list[tuple]:
    try:
        db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return []


def owned_by(pid: int) -> str:
    return f"owner LIKE '%:{pid}:%'"


def reference(study: pathlib.Path, tmp_path: pathlib.Path) -> dict[str, tuple]:
    path = tmp_path / "reference.sqlite"
    with ResultStore(path) as store:
        assert run_study(expand(load_study(study)), store, LocalExecutor(1)).written == TOTAL
    return snapshot(path)


def test_two_drivers_train_each_trial_once(study: pathlib.Path, tmp_path: pathlib.Path) -> None:
    store = tmp_path / "shared.sqlite"
    ResultStore(store).close()  # created first, so both drivers open an existing store
    first, second = driver(study, store, 60), driver(study, store, 60)
    reports = [finish(first), finish(second)]
    # every trial written by exactly one of them; each accounts for the whole study
    assert sum(r["written"] for r in reports) == TOTAL
    for r in reports:
        assert r["skipped"] + r["written"] + r["elsewhere"] == TOTAL
    rows = query(store, "SELECT COUNT(*), MAX(attempts), COUNT(DISTINCT trial_id) FROM trials")
    assert rows == [(TOTAL, 1, TOTAL)]
    for process, r in zip((first, second), reports, strict=True):
        [(mine,)] = query(store, f"SELECT COUNT(*) FROM trials WHERE {owned_by(process.pid)}")
        assert mine == r["written"]
    assert query(store, "SELECT * FROM claims") == []
    assert snapshot(store) == reference(study, tmp_path)


def test_a_killed_drivers_trials_are_taken_over(
    study: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = tmp_path / "shared.sqlite"
    ResultStore(store).close()
    victim, survivor = driver(study, store, 1.5), driver(study, store, 1.5)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        held = query(store, f"SELECT trial_id FROM claims WHERE {owned_by(victim.pid)}")
        if held and stored(store) >= 2:
            break
        assert victim.poll() is None, victim.communicate()
        time.sleep(0.05)
    else:
        raise AssertionError("the first driver never held a claim after two results")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert group_gone(victim.pid)
    orphaned = {
        t for (t,) in query(store, f"SELECT trial_id FROM claims WHERE {owned_by(victim.pid)}")
    }
    assert orphaned, "the kill came when the driver held no claim"
    report = finish(survivor)  # waits for the dead driver's lease to expire, then runs it
    [(by_victim,)] = query(store, f"SELECT COUNT(*) FROM trials WHERE {owned_by(victim.pid)}")
    assert report["written"] + by_victim == TOTAL
    assert query(store, "SELECT COUNT(*), MAX(attempts) FROM trials") == [(TOTAL, 1)]
    taken_over = query(
        store,
        f"SELECT trial_id FROM trials WHERE {owned_by(survivor.pid)} AND trial_id IN "
        f"({', '.join(repr(t) for t in orphaned)})",
    )
    assert {t for (t,) in taken_over} == orphaned
    assert query(store, "SELECT * FROM claims") == []
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
