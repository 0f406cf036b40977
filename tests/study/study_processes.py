"""The study command as a process of its own, for tests that kill it and resume.

``start_study`` runs ``python -m demon_optim run`` in its own session (process group: the
driver and its workers), so a test can kill the whole group as a terminal or a scheduler
would; ``wait_for_rows`` waits for the store to hold some trials; ``snapshot`` gives each
stored trial's numbers (clocks aside), to compare a resumed store with an uninterrupted one.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

from demon_optim.study.store import ResultStore


def study_command(study: pathlib.Path, store: pathlib.Path, *extra: str) -> list[str]:
    """``demon-optim run STUDY --store STORE --workers 2`` and ``extra``."""
    run = [sys.executable, "-m", "demon_optim", "run", str(study)]
    return [*run, "--store", str(store), "--workers", "2", *extra]


def start_study(command: list[str]) -> subprocess.Popen:
    """``command`` in its own process group, with SIGINT as a terminal delivers it."""
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: driver and workers
        # a shell's background jobs inherit SIGINT ignored, and Python then keeps ignoring
        # it: give the study the disposition a terminal gives it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the study's whole process group; the driver's exit is checked."""
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def stored(store: pathlib.Path) -> int:
    """Rows in the store's trials table (0 before the store exists)."""
    try:
        db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return 0


def wait_for_rows(process: subprocess.Popen, store: pathlib.Path, rows: int) -> int:
    """Wait (120 s at most) until the store holds ``rows`` trials; how many it then holds."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        count = stored(store)
        if count >= rows:
            return count
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"fewer than {rows} rows after 120 s")


def group_gone(pgid: int, timeout: float = 20.0) -> bool:
    """Whether every process of the group has exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def snapshot(store: pathlib.Path, execution: bool = False) -> dict[str, tuple]:
    """Each trial's status, metrics and per-epoch history (clocks aside), by trial id;
    ``execution``: with how it was executed (alone, or the batch it shared)."""
    with ResultStore(store, readonly=True) as results:
        rows = results.rows()
    assert len({r["trial_id"] for r in rows}) == len(rows)
    return {
        r["trial_id"]: (
            r["status"],
            r["val_metric"],
            r["test_metric"],
            [(h["train_loss"], h["val_metric"], h["lr"], h["momentum"]) for h in r["history"]],
            *((r["execution"],) if execution else ()),
        )
        for r in rows
    }
