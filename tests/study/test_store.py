"""The SQLite results store: schema, upserts, resume bookkeeping, refusing foreign files."""

from __future__ import annotations

import csv
import hashlib
import pathlib
import sqlite3
import time

import pytest

from demon_optim.errors import ConfigError
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import APPLICATION, SCHEMA_VERSION, NotAStoreError, ResultStore
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
