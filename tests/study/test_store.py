"""The SQLite results store: schema, upserts, resume bookkeeping, refusing foreign files."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import pathlib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest

from demon_optim.errors import ConfigError, EnvironmentFailure
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import (
    APPLICATION,
    CLAIMED,
    HELD,
    SCHEMA_VERSION,
    SETTLED,
    NotAStoreError,
    ResultStore,
    new_owner,
    owner_is_gone,
)
from demon_optim.study.trial import TrialResult


def spec(seed: int = 0, method: str = "sgdm") -> TrialSpec:
    config = (("lr", 0.1), ("momentum", 0.9), ("weight_decay", 0.0))
    if method == "sgdm+onecycle":
        config = (("lr", 0.1), ("momentum_range", (0.95, 0.85)), ("weight_decay", 0.0))
    return TrialSpec("digits-mlp", method, config, seed, 2, 100)


def result(trial: TrialSpec, status: str = "done", val: float | None = 0.5) -> TrialResult:
    history = (
        {"epoch": 1, "train_loss": 1.0, "val_metric": 0.4, "lr": 0.1, "momentum": 0.9},
        {"epoch": 2, "train_loss": float("nan"), "val_metric": val, "lr": 0.1, "momentum": 0.9},
    )
    return TrialResult(
        spec=trial,
        status=status,
        val_metric=val if status == "done" else None,
        test_metric=0.6 if status == "done" else None,
        history=history,
        wall_time_s=1.5,
        started_at=time.time(),
        versions={"torch": "x"},
        error=None if status == "done" else f"{status} here",
        traceback="Traceback..." if status == "failed" else None,
    )


def digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_and_read_back(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sub" / "store.sqlite"
    with ResultStore(path) as store:
        store.write(result(spec(0)))
        store.write(result(spec(1, "sgdm+onecycle"), "diverged"))
        rows = store.rows()
    assert [r["status"] for r in rows] == ["done", "diverged"]
    row = rows[0]
    assert row["trial_id"] == spec(0).trial_id
    assert (row["task"], row["method"], row["seed"], row["epochs"], row["batch_size"]) == (
        "digits-mlp",
        "sgdm",
        0,
        2,
        100,
    )
    assert row["hyperparameters"] == {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}
    assert TrialSpec.from_json(row["spec"]) == spec(0)
    assert row["history"][1]["train_loss"] is None  # NaN stored as JSON null
    assert (row["val_metric"], row["test_metric"], row["epochs_run"]) == (0.5, 0.6, 2)
    assert row["attempts"] == 1 and row["finished_at"].endswith("+00:00")
    assert rows[1]["hyperparameters"]["momentum_range"] == [0.95, 0.85]
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        assert meta["application"] == APPLICATION
        assert meta["schema_version"] == str(SCHEMA_VERSION)
        assert set(meta) == {"application", "schema_version", "created_at", "store_id"}
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_pending_skips_final_rows_and_reruns_failed(tmp_path: pathlib.Path) -> None:
    specs = [spec(seed) for seed in range(4)]
    with ResultStore(tmp_path / "s.sqlite") as store:
        assert store.pending(specs) == specs
        store.write(result(specs[0], "done"))
        store.write(result(specs[1], "diverged"))
        store.write(result(specs[2], "failed"))
        assert store.pending(specs) == [specs[2], specs[3]]
        # a failed row is replaced by the re-run; a final row is never replaced
        store.write(result(specs[2], "done", val=0.7))
        store.write(result(specs[0], "failed"))
        rows = {r["seed"]: r for r in store.rows()}
        assert store.count() == 3
    assert rows[2]["status"] == "done" and rows[2]["val_metric"] == 0.7
    assert rows[2]["attempts"] == 2 and rows[2]["error"] is None
    assert rows[0]["status"] == "done" and rows[0]["attempts"] == 1


def test_reopen_keeps_rows(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        store.write(result(spec(0)))
    with ResultStore(path) as store:
        assert store.statuses() == {spec(0).trial_id: "done"}
    with ResultStore(path, readonly=True) as store:
        assert store.count() == 1


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"name,score\nalice,3\n", "not an SQLite database"),
        (b"SQLite format 3\x00" + b"\x00" * 100, "SQLite cannot read it"),
    ],
)
def test_foreign_file_is_refused_and_untouched(
    tmp_path: pathlib.Path, content: bytes, why: str
) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(content)
    before = digest(path)
    for readonly in (False, True):
        with pytest.raises(NotAStoreError) as caught:
            ResultStore(path, readonly=readonly)
        assert why in str(caught.value) and str(path) in str(caught.value)
        assert isinstance(caught.value, ConfigError)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_other_sqlite_database_is_refused_and_untouched(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (name TEXT)")
        db.execute("INSERT INTO people VALUES ('ada')")
    db.close()
    before = digest(path)
    with pytest.raises(NotAStoreError, match="without demon-optim's tables"):
        ResultStore(path)
    assert digest(path) == before
    # a database with tables of these names but another application marker
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        db.execute("CREATE TABLE trials (x)")
        db.execute("INSERT INTO meta VALUES ('application', 'something else')")
    db.close()
    before = digest(path)
    with pytest.raises(NotAStoreError, match="application='something else'"):
        ResultStore(path)
    assert digest(path) == before


def test_directory_newer_schema_and_missing_store(tmp_path: pathlib.Path) -> None:
    with pytest.raises(NotAStoreError, match="directory"):
        ResultStore(tmp_path)
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        store.write(result(spec(0)))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(ConfigError, match="schema_version '99'"):
        ResultStore(path)
    missing = tmp_path / "absent.sqlite"
    with pytest.raises(ConfigError, match="an existing results store"):
        ResultStore(missing, readonly=True)
    assert not missing.exists()


def test_empty_file_becomes_a_store(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "new.sqlite"
    path.touch()
    with ResultStore(path) as store:
        assert store.count() == 0


def test_export_csv(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        store.write(result(spec(0)))
        store.write(result(spec(1, "sgdm+onecycle"), "failed"))
        assert store.export_csv(tmp_path / "out" / "t.csv") == 2
    with open(tmp_path / "out" / "t.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "trial_id",
        "task",
        "method",
        "seed",
        "epochs",
        "batch_size",
        "lr",
        "momentum",
        "weight_decay",
        "momentum_range",
        "status",
        "val_metric",
        "test_metric",
        "epochs_run",
        "wall_time_s",
        "error",
    ]
    assert rows[0]["trial_id"] == spec(0).trial_id and rows[0]["status"] == "done"
    assert (rows[0]["val_metric"], rows[0]["test_metric"], rows[0]["momentum_range"]) == (
        "0.5",
        "0.6",
        "",
    )
    assert rows[1]["momentum_range"] == "[0.95, 0.85]" and rows[1]["momentum"] == ""
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "failed here"
    assert rows[1]["val_metric"] == ""


# The schema of version 1 (demon-optim before several drivers could share a store).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    trial_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    seed INTEGER NOT NULL,
    epochs INTEGER NOT NULL,
    batch_size INTEGER NOT NULL,
    hyperparameters TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'diverged', 'failed')),
    val_metric REAL,
    test_metric REAL,
    epochs_run INTEGER NOT NULL,
    history TEXT NOT NULL,
    wall_time_s REAL NOT NULL,
    versions TEXT NOT NULL,
    error TEXT,
    traceback TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX trials_by_task_method ON trials (task, method);
"""


def v1_store(path: pathlib.Path) -> list[tuple]:
    """A version-1 store as the first release wrote it (WAL, two rows); returns its rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(V1_SCHEMA)
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("application", APPLICATION), ("schema_version", "1"), ("created_at", "2025-01-01")],
    )
    for trial, status in ((spec(0), "done"), (spec(1), "failed")):
        db.execute(
            "INSERT INTO trials VALUES (?, 'digits-mlp', 'sgdm', ?, 2, 100, '{\"lr\": 0.1}', ?,"
            " ?, 0.5, 0.6, 2, '[]', 1.5, '{}', NULL, NULL, 'a', 'b', 3)",
            (trial.trial_id, trial.seed, json.dumps(trial.to_json()), status),
        )
    rows = db.execute("SELECT * FROM trials ORDER BY rowid").fetchall()
    db.close()
    return rows


def test_version_1_store_is_migrated_in_place_after_a_backup(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.sqlite"
    before = v1_store(path)
    with caplog.at_level(logging.WARNING), ResultStore(path) as store:
        meta = store.meta()
        assert meta["schema_version"] == str(SCHEMA_VERSION) and len(meta["store_id"]) == 32
        assert meta["created_at"] == "2025-01-01"
        assert store.claims() == []
        assert store.pending([spec(0), spec(1)]) == [spec(1)]
        rows = store.rows()
    backup = tmp_path / "old.sqlite.v1-backup"
    assert f"'{backup}'" in caplog.text and "migrated from schema version 1" in caplog.text
    with sqlite3.connect(path) as db:
        after = db.execute("SELECT * FROM trials ORDER BY rowid").fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    # every v1 row intact; the columns added since (owner, metrics, samples, origin, source,
    # execution) NULL
    width = len(before[0])
    assert [row[:width] for row in after] == before
    assert all(set(row[width:]) == {None} for row in after) and rows[0]["owner"] is None
    assert len(after[0]) - width == 6 and rows[0]["origin"] is None
    assert rows[0]["execution"] is None
    # a row from before version 3 reads with its one metric, named as its task names it
    assert rows[0]["metrics"] == {"val": {"metric": 0.5}, "test": {"metric": 0.6}}
    assert rows[1]["metrics"] == {} and rows[0]["samples"] is None
    with sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("SELECT * FROM trials ORDER BY rowid").fetchall() == before
        assert dict(db.execute("SELECT * FROM meta"))["schema_version"] == "1"
    db.close()
    # opening it again migrates nothing more and keeps the store id
    caplog.clear()
    with caplog.at_level(logging.WARNING), ResultStore(path) as store:
        assert store.meta()["store_id"] == meta["store_id"]
    assert "migrated" not in caplog.text
    assert not (tmp_path / "old.sqlite.v1-backup.1").exists()


def test_version_1_store_is_read_as_it_is(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.sqlite"
    v1_store(path)
    before = digest(path)
    with ResultStore(path, readonly=True) as store:
        assert store.meta()["schema_version"] == "1"
        assert [r["status"] for r in store.rows()] == ["done", "failed"]
        assert store.claims() == []
    assert digest(path) == before
    assert not (tmp_path / "old.sqlite.v1-backup").exists()


def test_claims_are_held_released_settled_and_taken_over(tmp_path: pathlib.Path) -> None:
    a, b = new_owner(), new_owner()
    assert a != b and a.split(":")[:2] == b.split(":")[:2]
    trial = spec(0).trial_id
    with ResultStore(tmp_path / "s.sqlite") as store:
        assert store.claim(trial, a, lease_s=60) == CLAIMED
        assert store.claim(trial, b, lease_s=60) == HELD
        assert store.claim(trial, a, lease_s=60) == CLAIMED  # its own claim: renewed
        [claim] = store.claims()
        assert claim["owner"] == a and claim["expires_at"] > time.time() + 50
        store.release(a)
        assert store.claims() == [] and store.claim_state(trial, b) == CLAIMED
        # an expired claim (its driver was killed) is taken over
        assert store.claim(trial, a, lease_s=0.05) == CLAIMED
        time.sleep(0.1)
        assert store.claim(trial, b, lease_s=60) == CLAIMED
        assert store.claims()[0]["owner"] == b
        # writing the result releases the writer's claim; the trial is then settled
        store.write(result(spec(0)), b)
        assert store.claims() == []
        assert store.claim(trial, a, lease_s=60) == SETTLED
        assert store.rows()[0]["owner"] == b
        # a failed row is claimable again, unless it was rewritten since the caller looked
        failed = spec(1)
        store.write(result(failed, "failed"), a)
        assert store.claim_state(failed.trial_id, b, seen_attempts=1) == CLAIMED
        assert store.claim_state(failed.trial_id, b, seen_attempts=0) == SETTLED


def test_a_claim_whose_driver_process_is_gone_is_taken_over_at_once(
    tmp_path: pathlib.Path,
) -> None:
    """A SIGKILLed driver on this host need not hold its trials for a whole lease."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    try:
        owners = {
            "gone": f"{host}:{dead.pid}:00000000",
            "alive": f"{host}:{alive.pid}:00000000",
            "elsewhere": f"another-{host}:{dead.pid}:00000000",
        }
        assert owner_is_gone(owners["gone"])
        assert not owner_is_gone(owners["alive"]) and not owner_is_gone(owners["elsewhere"])
        with ResultStore(tmp_path / "s.sqlite") as store:
            trials = {name: spec(i).trial_id for i, name in enumerate(owners)}
            for name, owner in owners.items():
                assert store.claim(trials[name], owner, lease_s=600) == CLAIMED
            assert store.held_elsewhere() == {trials["alive"], trials["elsewhere"]}
            me = new_owner()
            assert store.claim(trials["gone"], me, lease_s=60) == CLAIMED
            assert store.claim(trials["alive"], me, lease_s=60) == HELD
            assert store.claim(trials["elsewhere"], me, lease_s=60) == HELD
            assert store.held_elsewhere(me) == {trials["alive"], trials["elsewhere"]}
    finally:
        alive.kill()
        alive.wait()


def test_leases_are_renewed_while_inside(tmp_path: pathlib.Path) -> None:
    owner = new_owner()
    with ResultStore(tmp_path / "s.sqlite") as store:
        assert store.claim(spec(0).trial_id, owner, lease_s=0.3) == CLAIMED
        with store.keep_leases(owner, lease_s=0.3, every_s=0.05):
            time.sleep(0.6)
            assert store.claim(spec(0).trial_id, new_owner(), lease_s=1) == HELD
        time.sleep(0.4)
        assert store.claim(spec(0).trial_id, new_owner(), lease_s=1) == CLAIMED


def test_anything_but_a_regular_file_is_refused_untouched() -> None:
    with pytest.raises(NotAStoreError, match=r"'/dev/null'.*a character device"):
        ResultStore("/dev/null")
    with pytest.raises(NotAStoreError, match="character device"):
        ResultStore("/dev/null", readonly=True)
    assert not pathlib.Path("/dev/null-journal").exists()
    assert not pathlib.Path("/dev/null-wal").exists()


def test_a_parent_that_is_a_file_is_one_line(tmp_path: pathlib.Path) -> None:
    parent = tmp_path / "file.txt"
    parent.write_text("x")
    for readonly in (False, True):
        with pytest.raises(EnvironmentFailure) as caught:
            ResultStore(parent / "x.sqlite", readonly=readonly)
        message = str(caught.value)
        assert f"'{parent / 'x.sqlite'}'" in message and "is a file, not a folder" in message
        assert "\n" not in message
    assert parent.read_text() == "x"


def test_a_lock_held_too_long_saves_the_result_to_a_pending_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "s.sqlite"
    with ResultStore(path, timeout=0.05, retry_delays=(0.01, 0.02)) as store:
        store.write(result(spec(0)))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        started = time.monotonic()
        with pytest.raises(EnvironmentFailure) as caught:
            store.write(result(spec(1)), new_owner())
        assert time.monotonic() - started < 5
        other.execute("ROLLBACK")
        other.close()
        message = str(caught.value)
        [saved] = (tmp_path / "cache" / "demon-optim" / "pending").iterdir()
        assert f"store '{path}'" in message and "database is locked" in message
        assert "3 attempts" in message and f"saved to '{saved}'" in message
        assert "\n" not in message
        record = json.loads(saved.read_text())
        assert record["store_path"] == str(path.resolve())
        assert record["store_id"] == store.meta()["store_id"]
        assert store.count() == 1  # the store itself has not got it yet
    with ResultStore(path) as store:  # the next open for writing imports it
        assert sorted(store.statuses().values()) == ["done", "done"]
        assert [r["attempts"] for r in store.rows()] == [1, 1]
    assert not saved.exists()
    with ResultStore(path) as store:  # and only once
        assert store.count() == 2


def test_pending_results_of_another_store_are_left_alone(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        saved = store.save_pending({"trial_id": spec(0).trial_id, "owner": None, "status": "done"})
    copy = tmp_path / "copy.sqlite"  # same store id, another path: not its result
    with sqlite3.connect(path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    source.close()
    target.close()
    with ResultStore(copy) as store:
        assert store.count() == 0
    assert "'" in saved and len(list((tmp_path / "cache").rglob("*.json"))) == 1


def test_with_no_folder_to_write_the_result_is_one_json_line_on_stderr(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker))
    with ResultStore(tmp_path / "s.sqlite") as store:
        where = store.save_pending({"trial_id": spec(0).trial_id, "owner": None, "status": "done"})
    assert where.startswith("stderr as one JSON line")
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["row"]["trial_id"] == spec(0).trial_id


def test_version_2_store_is_migrated_to_keep_every_metric(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store of the release before metrics: its rows read with their one metric (named by
    the task, as the spec recorded it), it gains the columns in place after a backup."""
    path = tmp_path / "v2.sqlite"
    with ResultStore(path) as store:
        store.write(result(spec(0)))
    with sqlite3.connect(path, isolation_level=None) as db:  # what version 2 wrote
        db.execute("ALTER TABLE trials DROP COLUMN execution")
        db.execute("ALTER TABLE trials DROP COLUMN source")
        db.execute("ALTER TABLE trials DROP COLUMN origin")
        db.execute("ALTER TABLE trials DROP COLUMN samples")
        db.execute("ALTER TABLE trials DROP COLUMN metrics")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.close()
    with ResultStore(path, readonly=True) as store:  # read as it is, not migrated
        (old,) = store.rows()
        assert store.meta()["schema_version"] == "2"
    name = (old["spec"].get("about") or {}).get("metric", "metric")
    assert old["metrics"] == {"val": {name: 0.5}, "test": {name: 0.6}}
    with caplog.at_level(logging.WARNING), ResultStore(path) as store:
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
        (row,) = store.rows()
        metrics = {"val": {"f1": 0.5, "accuracy": 0.7}, "test": {"f1": 0.6, "accuracy": 0.8}}
        store.write(dataclasses.replace(result(spec(1)), metrics=metrics))
        new = store.rows()[1]
    assert row["metrics"] == old["metrics"] and row["samples"] is None
    assert new["metrics"] == metrics
    assert (tmp_path / "v2.sqlite.v2-backup").is_file()
    assert f"migrated from schema version 2 to {SCHEMA_VERSION}" in caplog.text


def test_version_4_store_gains_the_execution_column_in_place(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store of the release before batched trials: read as it is (every trial trained
    alone), migrated in place after a backup, its rows intact; a batched result's execution
    is kept, and a batch is written in one transaction."""
    path = tmp_path / "v4.sqlite"
    with ResultStore(path) as store:
        store.write(result(spec(0)))
    with sqlite3.connect(path, isolation_level=None) as db:  # what version 4 wrote
        db.execute("ALTER TABLE trials DROP COLUMN execution")
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
        before = db.execute("SELECT * FROM trials").fetchall()
    db.close()
    with ResultStore(path, readonly=True) as store:
        assert store.meta()["schema_version"] == "4"
        assert [row["execution"] for row in store.rows()] == [None]
    execution = {"mode": "batched", "batch": "0123456789abcdef", "size": 2}
    batch = [dataclasses.replace(result(spec(s)), execution=execution) for s in (1, 2)]
    with caplog.at_level(logging.WARNING), ResultStore(path) as store:
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION) == "5"
        owner = new_owner()
        assert store.claim_many([s.spec.trial_id for s in batch], owner, 60) == {
            s.spec.trial_id: CLAIMED for s in batch
        }
        store.write_batch(batch, owner)
        rows = store.rows()
        assert store.claims() == []
    assert f"migrated from schema version 4 to {SCHEMA_VERSION}" in caplog.text
    assert [row["execution"] for row in rows] == [None, execution, execution]
    with sqlite3.connect(path) as db:
        assert [row[:-1] for row in db.execute("SELECT * FROM trials LIMIT 1")] == before
    db.close()
    backup = tmp_path / "v4.sqlite.v4-backup"
    with sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("SELECT * FROM trials").fetchall() == before
    db.close()


def test_a_batch_that_cannot_be_written_is_saved_whole_to_pending_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "s.sqlite"
    execution = {"mode": "batched", "batch": "0123456789abcdef", "size": 2}
    batch = [dataclasses.replace(result(spec(s)), execution=execution) for s in (0, 1)]
    with ResultStore(path, retry_delays=()) as store:
        store.write(result(spec(2)))
        locker = sqlite3.connect(path, timeout=0)
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        store._db.execute("PRAGMA busy_timeout = 0")
        with pytest.raises(EnvironmentFailure, match="results of 2 trials trained together"):
            store.write_batch(batch)
        locker.rollback()
        locker.close()
        assert store.count() == 1  # none of the batch
    pending = sorted((tmp_path / "cache" / "demon-optim" / "pending").glob("*.json"))
    assert len(pending) == 2
    with ResultStore(path) as store:  # the next open imports both
        assert [row["execution"] for row in store.rows()] == [None, execution, execution]
