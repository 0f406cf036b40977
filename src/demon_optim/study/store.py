"""The results store: one SQLite file, one row per trial keyed by its trial id.

Schema (version :data:`SCHEMA_VERSION`; see ``docs/study.md``)::

    meta(key TEXT PRIMARY KEY, value TEXT)
        application = 'demon-optim results store', schema_version = '1', created_at
    trials(trial_id TEXT PRIMARY KEY,             -- sha256 of the trial spec's canonical JSON
           task, method TEXT, seed, epochs, batch_size INTEGER,
           hyperparameters TEXT,                  -- JSON object
           spec TEXT,                             -- JSON of the whole TrialSpec
           status TEXT,                           -- done | diverged | failed
           val_metric, test_metric REAL,          -- NULL unless done
           epochs_run INTEGER, history TEXT,      -- JSON list, one object per epoch
           wall_time_s REAL, versions TEXT,       -- JSON object
           error TEXT, traceback TEXT,
           started_at, finished_at TEXT,          -- ISO 8601, UTC
           attempts INTEGER)                      -- runs of this trial (failed ones re-run)

Durability: WAL journal, ``synchronous=FULL``, and every result is written in its own
transaction by the one process that drives the study, so a study killed at any moment
(SIGKILL included) keeps every result written before the kill, and nothing half-written.
A done or diverged row is final: writing it again changes nothing. A failed row is replaced
when the trial is run again.

Opening a file that is not a results store raises a ConfigError before anything is written.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import pathlib
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from demon_optim.errors import ConfigError
from demon_optim.study.spec import TrialSpec
from demon_optim.study.trial import TrialResult

APPLICATION = "demon-optim results store"
SCHEMA_VERSION = 1
FINAL_STATUSES = ("done", "diverged")  # never re-run
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
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
CREATE INDEX IF NOT EXISTS trials_by_task_method ON trials (task, method);
"""

_COLUMNS = (
    "trial_id",
    "task",
    "method",
    "seed",
    "epochs",
    "batch_size",
    "hyperparameters",
    "spec",
    "status",
    "val_metric",
    "test_metric",
    "epochs_run",
    "history",
    "wall_time_s",
    "versions",
    "error",
    "traceback",
    "started_at",
    "finished_at",
)
_JSON_COLUMNS = ("hyperparameters", "spec", "history", "versions")

# A failed row is replaced by the new result (and its attempts counted); a final row is kept.
_UPSERT = f"""
INSERT INTO trials ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" * len(_COLUMNS))})
ON CONFLICT (trial_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])},
    attempts = trials.attempts + 1
WHERE trials.status = 'failed'
"""


class NotAStoreError(ConfigError):
    """The file exists but is not a demon-optim results store; it was left untouched."""


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def _not_a_store(path: pathlib.Path, why: str) -> NotAStoreError:
    return NotAStoreError(
        f"store: got '{path}'; allowed: a demon-optim results store or a new file "
        f"({why}; the file was not changed - choose another path with --store)"
    )


def _check_existing(path: pathlib.Path) -> bool:
    """True if ``path`` is an existing results store, False if it is new (absent or empty).

    Raises NotAStoreError for anything else, having opened it read-only.
    """
    if path.is_dir():
        raise _not_a_store(path, "it is a directory")
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as handle:
        if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            raise _not_a_store(path, "it is not an SQLite database")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            if not tables:
                return False  # an empty SQLite database: nothing to overwrite
            if "meta" not in tables or "trials" not in tables:
                raise _not_a_store(path, "an SQLite database without demon-optim's tables")
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise _not_a_store(path, f"SQLite cannot read it: {error}") from None
    if meta.get("application") != APPLICATION:
        raise _not_a_store(path, f"its meta table says application={meta.get('application')!r}")
    version = meta.get("schema_version", "")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise ConfigError(
            f"store: '{path}' has schema_version {version!r}; allowed: <= {SCHEMA_VERSION} "
            "(written by a newer demon-optim; upgrade to read it)"
        )
    return True


class ResultStore:
    """A results store on disk; open it once per process (``with ResultStore(path) as s``).

    ``readonly=True`` requires an existing store and never writes (export, reports).
    """

    def __init__(self, path: str | pathlib.Path, *, readonly: bool = False) -> None:
        self.path = pathlib.Path(path)
        exists = _check_existing(self.path)
        if readonly:
            if not exists:
                raise ConfigError(
                    f"store: got '{self.path}'; allowed: an existing results store "
                    "(run a study first: demon-optim run STUDY --store PATH)"
                )
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        if not exists:
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("application", APPLICATION),
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("created_at", _iso(datetime.datetime.now().timestamp())),
                    ],
                )

    # -- plumbing -------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------

    def write(self, result: TrialResult) -> None:
        """Record one result in its own transaction (a final row is never replaced)."""
        spec = result.spec
        row = (
            spec.trial_id,
            spec.task,
            spec.method,
            spec.seed,
            spec.epochs,
            spec.batch_size,
            json.dumps(spec.identity()["hyperparameters"]),
            json.dumps(spec.to_json(), sort_keys=True),
            result.status,
            _finite_or_none(result.val_metric),
            _finite_or_none(result.test_metric),
            len(result.history),
            json.dumps([_clean(r) for r in result.history]),
            result.wall_time_s,
            json.dumps(result.versions, sort_keys=True),
            result.error,
            result.traceback,
            _iso(result.started_at),
            _iso(datetime.datetime.now().timestamp()),
        )
        with self._transaction():
            self._db.execute(_UPSERT, row)

    # -- reading --------------------------------------------------------------------------

    def statuses(self) -> dict[str, str]:
        """trial id -> status, for every row."""
        return dict(self._db.execute("SELECT trial_id, status FROM trials").fetchall())

    def pending(self, specs: Sequence[TrialSpec]) -> list[TrialSpec]:
        """The specs still to run: not in the store, or failed last time."""
        statuses = self.statuses()
        return [s for s in specs if statuses.get(s.trial_id) not in FINAL_STATUSES]

    def rows(self, trial_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts (JSON columns decoded), in insertion order; optionally only ``ids``."""
        cursor = self._db.execute("SELECT * FROM trials ORDER BY rowid")
        names = [d[0] for d in cursor.description]
        wanted = None if trial_ids is None else set(trial_ids)
        rows = []
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            if wanted is not None and row["trial_id"] not in wanted:
                continue
            for column in _JSON_COLUMNS:
                row[column] = json.loads(row[column])
            rows.append(row)
        return rows

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    def export_csv(self, out: str | pathlib.Path) -> int:
        """Write one CSV row per trial; returns the number of rows.

        Columns: trial_id, task, method, seed, epochs, batch_size, one column per
        hyperparameter name found in the store (empty where a method lacks it; pairs written
        as JSON lists), status, val_metric, test_metric, epochs_run, wall_time_s, error.
        """
        rows = self.rows()
        hyper_names: list[str] = []
        for row in rows:
            for name in row["hyperparameters"]:
                if name not in hyper_names:
                    hyper_names.append(name)
        head = ["trial_id", "task", "method", "seed", "epochs", "batch_size"]
        tail = ["status", "val_metric", "test_metric", "epochs_run", "wall_time_s", "error"]
        out = pathlib.Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(head + hyper_names + tail)
            for row in rows:
                hyper = row["hyperparameters"]
                writer.writerow(
                    [row[c] for c in head]
                    + [_csv_value(hyper.get(name)) for name in hyper_names]
                    + [row[c] for c in tail]
                )
        return len(rows)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, list) else value


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats become None, so the history column is standard JSON."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception, Ctrl-C included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
