"""The results store: one SQLite file, one row per trial keyed by its trial id.

Schema (version :data:`SCHEMA_VERSION`; see ``docs/study.md``)::

    meta(key TEXT PRIMARY KEY, value TEXT)
        application = 'demon-optim results store', schema_version = '5', created_at,
        store_id                                  -- random; names this store's pending files
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
           attempts INTEGER,                      -- runs of this trial (failed ones re-run)
           owner TEXT,                            -- the driver that wrote it (v2; NULL before)
           metrics TEXT,                          -- JSON {"val": {name: value}, "test": ...,
                                                  --   "final": ...} (v3; NULL before)
           samples TEXT,                          -- JSON images to look at, or NULL (v3)
           origin TEXT,                           -- NULL: run here; 'import:algoperf' or
                                                  --   'import:deepobs': imported (v4)
           source TEXT,                           -- JSON: the imported file, its sha256 (v4)
           execution TEXT)                        -- JSON {"mode": "batched", "batch", "size"}:
                                                  --   trained with others; NULL: alone (v5)
    claims(trial_id TEXT PRIMARY KEY,             -- a trial some driver is running now
           owner TEXT,                            -- host:pid:token of that driver
           expires_at REAL,                       -- Unix time; renewed while it runs
           claimed_at TEXT)
    searches(search_id TEXT PRIMARY KEY, ...)     -- sampled configurations (search axis):
    search_draws(search_id, draw, ...)            --   created when a study first samples

The two search tables (:data:`_SEARCH_TABLES`) are created with ``CREATE TABLE IF NOT
EXISTS`` by the first study that samples configurations, so they need no schema version: a
store without them has no searches, and a demon-optim that does not know them ignores them.

Version 1 had no ``claims`` table, no ``owner`` column and no ``store_id``; version 2 had no
``metrics`` and ``samples`` columns (a trial had one metric); version 3 had no ``origin`` and
``source`` columns (every trial was run here); version 4 had no ``execution`` column (every
trial was trained alone). Opening an older store for
writing migrates it in place after copying it to ``<store>.v<N>-backup`` (SQLite's backup
API); opening it read-only reads it as it is (the missing columns read as NULL).

Durability: WAL journal, ``synchronous=FULL``, every result written in its own transaction,
so a driver killed at any moment (SIGKILL included) keeps every result written before the
kill, and nothing half-written. A done or diverged row is final: writing it again changes
nothing. A failed row is replaced when the trial is run again. Several drivers on one
machine may share a store: each claims a trial when it dispatches it (:meth:`claim`), keeps
the lease alive while it runs (:meth:`keep_leases`) and releases it with the result; a
claim whose lease expired (its driver was killed) is taken over.

A result that cannot be written (disk full, I/O error, a lock held past the busy timeout) is
retried with backoff, then saved to a pending file outside the store (:func:`pending_dirs`)
that the next open for writing of the same store imports, and :meth:`write` raises
:class:`~demon_optim.errors.EnvironmentFailure`. No public method lets an ``sqlite3.Error``
out: causes in the environment are EnvironmentFailure, a file that is not a results store
is a ConfigError (:class:`NotAStoreError`) raised before anything is written.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import logging
import math
import os
import pathlib
import secrets
import socket
import sqlite3
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from demon_optim.errors import ConfigError, EnvironmentFailure
from demon_optim.study.spec import TrialSpec
from demon_optim.study.trial import TrialResult

APPLICATION = "demon-optim results store"
SCHEMA_VERSION = 5
FINAL_STATUSES = ("done", "diverged")  # never re-run
_SQLITE_HEADER = b"SQLite format 3\x00"

#: Seconds one write waits for another process's lock before it counts as failed.
BUSY_TIMEOUT_S = 30.0
#: Pauses between the attempts to write a result (4 attempts over about 20 s).
RETRY_DELAYS_S = (1.0, 4.0, 15.0)

#: Outcomes of :meth:`ResultStore.claim`.
CLAIMED, SETTLED, HELD = "claimed", "settled", "held"

log = logging.getLogger(__name__)

_TRIALS = """
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
    attempts INTEGER NOT NULL DEFAULT 1,
    owner TEXT,
    metrics TEXT,
    samples TEXT,
    origin TEXT,
    source TEXT,
    execution TEXT
)"""
_CLAIMS = """
CREATE TABLE IF NOT EXISTS claims (
    trial_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    claimed_at TEXT NOT NULL
)"""
# The search axis (demon_optim.study.search): one row per search (a sampled method on one
# setting) and one per configuration it drew, in the order the sampler asked them.
_SEARCH_TABLES = (
    """
CREATE TABLE IF NOT EXISTS searches (
    search_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    epochs INTEGER NOT NULL,
    batch_size INTEGER NOT NULL,
    sampler TEXT NOT NULL,
    search_seed INTEGER NOT NULL,
    search_batch INTEGER NOT NULL,
    definition TEXT NOT NULL,
    tuning_budgets TEXT NOT NULL,
    versions TEXT NOT NULL,
    created_at TEXT NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS search_draws (
    search_id TEXT NOT NULL REFERENCES searches (search_id),
    draw INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    params TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    trial_ids TEXT NOT NULL,
    state TEXT CHECK (state IN ('complete', 'fail')),
    value REAL,
    asked_at TEXT NOT NULL,
    told_at TEXT,
    PRIMARY KEY (search_id, draw)
)""",
)
_SEARCH_JSON = ("definition", "tuning_budgets", "versions")
_DRAW_JSON = ("params", "hyperparameters", "trial_ids")
#: ``state`` of a told draw: its value was told to the sampler, or a failure (diverged).
COMPLETE, FAIL = "complete", "fail"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    _TRIALS,
    "CREATE INDEX IF NOT EXISTS trials_by_task_method ON trials (task, method)",
    _CLAIMS,
)
# What each version added (the schema of version 1 is the above without all of them): the
# statements that migrate a store from the version before.
_MIGRATIONS = {
    2: ("ALTER TABLE trials ADD COLUMN owner TEXT", _CLAIMS),
    3: ("ALTER TABLE trials ADD COLUMN metrics TEXT", "ALTER TABLE trials ADD COLUMN samples TEXT"),
    # published results imported beside the user's own (demon_optim.study.imports)
    4: ("ALTER TABLE trials ADD COLUMN origin TEXT", "ALTER TABLE trials ADD COLUMN source TEXT"),
    # trials trained together in batches (demon_optim.study.batched)
    5: ("ALTER TABLE trials ADD COLUMN execution TEXT",),
}

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
    "owner",
    "metrics",
    "samples",
    "origin",
    "source",
    "execution",
)
_JSON_COLUMNS = ("hyperparameters", "spec", "history", "versions")
# NULL in rows written before the version that added them (metrics, samples: 3; source: 4;
# execution: 5), and where they do not apply (execution of a trial trained alone)
_NULLABLE_JSON_COLUMNS = ("metrics", "samples", "source", "execution")
#: ``origin`` of an imported trial: ``IMPORT_PREFIX + format`` (the user's own trials: NULL).
IMPORT_PREFIX = "import:"

# An imported row is written once: importing the same file again changes nothing.
_INSERT_NEW = (
    f"INSERT INTO trials ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (trial_id) DO NOTHING"
)

# A failed row is replaced by the new result (and its attempts counted); a final row is kept.
_UPSERT = f"""
INSERT INTO trials ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" * len(_COLUMNS))})
ON CONFLICT (trial_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])},
    attempts = trials.attempts + 1
WHERE trials.status = 'failed'
"""

# SQLite's primary result codes that mean "the environment", not "not a store".
_NOT_A_STORE_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_CANTOPEN, _READONLY = 14, 8


class NotAStoreError(ConfigError):
    """The file exists but is not a demon-optim results store; it was left untouched."""


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def _now_iso() -> str:
    return _iso(time.time())


def _code(error: sqlite3.Error) -> int:
    """SQLite's primary result code of ``error`` (0 if unknown)."""
    return (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF


def _cause(error: BaseException) -> str:
    """One line: the OS or SQLite message (``[Errno 28] No space left...`` reduced)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _failure(path: pathlib.Path, action: str, error: BaseException) -> EnvironmentFailure:
    return EnvironmentFailure(f"store '{path}': cannot {action}: {_cause(error)}")


def _not_a_store(path: pathlib.Path, why: str) -> NotAStoreError:
    return NotAStoreError(
        f"store: got '{path}'; allowed: a demon-optim results store or a new file "
        f"({why}; the file was not changed - choose another path with --store)"
    )


@contextlib.contextmanager
def _guard(path: pathlib.Path, action: str) -> Iterator[None]:
    """Turn an sqlite3/OS error inside the block into one line (never a traceback)."""
    try:
        yield
    except sqlite3.Error as error:
        if _code(error) in _NOT_A_STORE_CODES:
            raise _not_a_store(path, f"SQLite cannot read it: {error}") from None
        raise _failure(path, action, error) from None
    except EnvironmentFailure:
        raise
    except OSError as error:
        raise _failure(path, action, error) from None


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _open_readonly(path: pathlib.Path) -> sqlite3.Connection:
    """A read-only connection that has read the schema, on a writable or read-only disk.

    WAL mode needs the ``-shm`` file; where it is missing and cannot be created (a read-only
    file system or folder), the store is opened ``immutable=1``, which is exact only when no
    committed rows wait in a ``-wal`` file: a non-empty one is refused, not silently skipped.
    """
    uri = path.resolve().as_uri()
    connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
    try:
        connection.execute("SELECT name FROM sqlite_master").fetchall()
        return connection
    except sqlite3.Error as error:
        connection.close()
        if _code(error) not in (_CANTOPEN, _READONLY) or os.access(path.parent, os.W_OK):
            raise
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise EnvironmentFailure(
            f"store '{path}': cannot read it on a read-only file system: committed results "
            f"are still in '{wal}' (the last driver was killed), which SQLite can only apply "
            "where it may write; open the store once where it is writable (e.g. demon-optim "
            "export there) or copy it together with its -wal file to a writable place"
        )
    connection = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
    connection.execute("SELECT name FROM sqlite_master").fetchall()
    return connection


def _why_unwritable(path: pathlib.Path) -> str | None:
    """The OS's reason why ``path`` (or a new file beside it) cannot be written, if any."""
    try:
        if path.exists():
            os.close(os.open(path, os.O_RDWR))
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        return _cause(error)
    return None


def _inspect(path: pathlib.Path) -> tuple[sqlite3.Connection | None, dict[str, str]]:
    """Check what ``path`` holds, read-only: (connection, meta) for a store, (None, {}) if new.

    A new path is absent, an empty file or an empty SQLite database. Anything else that is
    not a results store raises NotAStoreError (ConfigError); a schema newer than this
    version's too. The caller closes the connection.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return None, {}
    except NotADirectoryError:
        raise EnvironmentFailure(
            f"store '{path}': cannot create it: a parent of it is a file, not a folder"
        ) from None
    except OSError as error:
        raise _failure(path, "read it", error) from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_a_store(path, f"it is {_file_kind(info.st_mode)}")
    if info.st_size == 0:
        return None, {}
    with _guard(path, "read it"), path.open("rb") as handle:
        if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            raise _not_a_store(path, "it is not an SQLite database")
    try:
        connection = _open_readonly(path)
    except sqlite3.Error as error:
        if _code(error) in _NOT_A_STORE_CODES:
            raise _not_a_store(path, f"SQLite cannot read it: {error}") from None
        raise _failure(path, "read it", error) from None
    try:
        with _guard(path, "read it"):
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            if not tables:
                connection.close()
                return None, {}  # an empty SQLite database: nothing to overwrite
            if "meta" not in tables or "trials" not in tables:
                raise _not_a_store(path, "an SQLite database without demon-optim's tables")
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except BaseException:
        connection.close()
        raise
    if meta.get("application") != APPLICATION:
        connection.close()
        raise _not_a_store(path, f"its meta table says application={meta.get('application')!r}")
    version = meta.get("schema_version", "")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        connection.close()
        raise ConfigError(
            f"store: '{path}' has schema_version {version!r}; allowed: <= {SCHEMA_VERSION} "
            "(written by a newer demon-optim; upgrade to read it)"
        )
    return connection, meta


def new_owner() -> str:
    """A driver's claim owner: ``host:pid:token`` (the token tells two runs of a pid apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_gone(owner: str) -> bool:
    """True if ``owner`` was a driver on this host whose process no longer exists.

    Its claims need not wait for their lease to expire (a driver killed with SIGKILL would
    otherwise hold its trials for up to a lease). Anything uncertain (another host, a pid
    that exists, even if reused, or one we may not signal) counts as alive.
    """
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, under another user
        return False
    return False


def pending_dirs() -> list[pathlib.Path]:
    """Where results that could not be written to their store are saved, in order of choice.

    ``$XDG_CACHE_HOME/demon-optim/pending`` (else ``~/.cache/demon-optim/pending``), then
    ``<temporary folder>/demon-optim-pending``. The first one that can be written is used.
    """
    cache = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(cache) if cache else pathlib.Path.home() / ".cache"
    return [
        base / "demon-optim" / "pending",
        pathlib.Path(tempfile.gettempdir()) / "demon-optim-pending",
    ]


class ResultStore:
    """A results store on disk; open it once per process (``with ResultStore(path) as s``).

    ``readonly=True`` requires an existing store and never writes (export, reports); it
    reads a version-1 store as it is, and a store on a read-only file system. Opening for
    writing creates the store, migrates a version-1 store (backup first) and imports the
    results that an earlier run could not write to it (pending files). ``timeout``: seconds a
    statement waits for another process's lock; ``retry_delays``: pauses between the
    attempts to write one result.
    """

    def __init__(
        self,
        path: str | pathlib.Path,
        *,
        readonly: bool = False,
        timeout: float = BUSY_TIMEOUT_S,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        self.path = pathlib.Path(path)
        self.readonly = readonly
        self.timeout = timeout
        self.retry_delays = tuple(retry_delays)
        probe, meta = _inspect(self.path)
        if readonly:
            if probe is None:
                raise ConfigError(
                    f"store: got '{self.path}'; allowed: an existing results store "
                    "(run a study first: demon-optim run STUDY --store PATH)"
                )
            self._db = probe
            self._meta = meta
            return
        if probe is not None:
            probe.close()
        created = not self.path.exists()
        try:
            self._db = self._connect()
        except EnvironmentFailure:
            if created:  # leave no half-made store behind (e.g. the disk was full)
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(OSError):
                        self.path.with_name(self.path.name + suffix).unlink()
            raise
        try:
            with _guard(self.path, "open it for writing"):
                self._meta = self._prepare()
                self._import_pending()
        except BaseException:
            self._db.close()
            raise

    # -- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise EnvironmentFailure(
                f"store '{self.path}': cannot create it: a parent of it is a file, not a folder"
            ) from None
        except OSError as error:
            raise _failure(self.path, "create its folder", error) from None
        try:
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
            except BaseException:
                db.close()
                raise
            return db
        except sqlite3.Error as error:
            if _code(error) in (_CANTOPEN, _READONLY):  # SQLite's words say little: ask the OS
                why = _why_unwritable(self.path)
                if why is not None:
                    raise EnvironmentFailure(
                        f"store '{self.path}': cannot open it for writing: {why}"
                    ) from None
            with _guard(self.path, "open it for writing"):
                raise

    def _prepare(self) -> dict[str, str]:
        """Create a new store or migrate a version-1 one; returns the meta table."""
        with self._transaction():  # under the write lock: two drivers cannot both do it
            current = self.meta() if self._has_table("meta") else {}
            version = current.get("schema_version")
            if version is None:
                for statement in _SCHEMA:
                    self._db.execute(statement)
                current = {
                    "application": APPLICATION,
                    "schema_version": str(SCHEMA_VERSION),
                    "created_at": _now_iso(),
                    "store_id": uuid.uuid4().hex,
                }
                self._db.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", current.items()
                )
            elif int(version) < SCHEMA_VERSION:
                backup = self._backup(version)
                for step in range(int(version) + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        self._db.execute(statement)
                current["schema_version"] = str(SCHEMA_VERSION)
                current.setdefault("store_id", uuid.uuid4().hex)
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [(k, current[k]) for k in ("schema_version", "store_id")],
                )
                log.warning(
                    "store '%s': migrated from schema version %s to %d; the version-%s store "
                    "was copied to '%s' first",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                    version,
                    backup,
                )
        return current

    def _backup(self, version: str) -> pathlib.Path:
        """Copy the store (as committed) beside it, with SQLite's backup API."""
        backup = self.path.with_name(f"{self.path.name}.v{version}-backup")
        number = 1
        while backup.exists():
            backup = self.path.with_name(f"{self.path.name}.v{version}-backup.{number}")
            number += 1
        source = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        target = sqlite3.connect(backup)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        except BaseException:
            target.close()
            for suffix in ("", "-journal", "-wal", "-shm"):  # no half-made backup left
                with contextlib.suppress(OSError):
                    backup.with_name(backup.name + suffix).unlink()
            raise
        finally:
            target.close()
            source.close()
        return backup

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------

    def write(self, result: TrialResult, owner: str | None = None) -> None:
        """Record one result in its own transaction (a final row is never replaced).

        ``owner``: the driver that ran it; its claim on the trial is released in the same
        transaction. A failure is retried after each of ``retry_delays``; if the result still
        cannot be written, it is saved to a pending file (imported by the next open for
        writing of this store) and EnvironmentFailure says where.
        """
        self.write_batch([result], owner)

    def write_batch(self, results: Sequence[TrialResult], owner: str | None = None) -> None:
        """Record the results of one unit of work in one transaction: one trial, or the
        trials of a batch trained together (all of them or none), as :meth:`write` does.

        If they cannot be written, each is saved to a pending file of its own.
        """
        if not results:
            return
        rows = [_row(result, owner) for result in results]
        error: sqlite3.Error | None = None
        for delay in (*self.retry_delays, None):
            try:
                self._write_rows(rows)
                return
            except sqlite3.Error as caught:
                error = caught
                log.debug("store %s: write failed (%s)", self.path, caught)
            if delay is not None:
                time.sleep(delay)
        assert error is not None
        places = [self.save_pending(row) for row in rows]
        attempts = len(self.retry_delays) + 1
        what = f"the result of trial {results[0].spec.trial_id[:12]}"
        where = f"the result was saved to {places[0]}"
        if len(rows) > 1:
            what = f"the results of {len(rows)} trials trained together"
            where = f"the results were saved to {places[0]} and {len(rows) - 1} more beside it"
        raise EnvironmentFailure(
            f"store '{self.path}': cannot write {what}: {_cause(error)} ({attempts} attempts "
            f"over {sum(self.retry_delays):.0f} s); {where}"
        )

    def _write_row(self, row: Mapping[str, Any]) -> None:
        self._write_rows([row])

    def _write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._transaction():
            for row in rows:
                self._db.execute(_UPSERT, [row[c] for c in _COLUMNS])
                if row["owner"] is not None:
                    self._db.execute(
                        "DELETE FROM claims WHERE trial_id = ? AND owner = ?",
                        (row["trial_id"], row["owner"]),
                    )

    def import_rows(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write imported trials (published results) in one transaction; returns how many
        were new.

        Each row holds every column of the ``trials`` table (JSON columns as Python values),
        ``origin`` starting with :data:`IMPORT_PREFIX`. A row whose trial id is already in
        the store is left as it is (importing a file twice adds nothing); a failure writes
        none of them (one transaction), raised as EnvironmentFailure.
        """
        encoded = []
        for row in rows:
            if set(row) != set(_COLUMNS) or not str(row["origin"]).startswith(IMPORT_PREFIX):
                raise ValueError(f"import_rows: not an imported trial row: {sorted(row)}")
            values = dict(row)
            for column in (*_JSON_COLUMNS, *_NULLABLE_JSON_COLUMNS):
                if values[column] is not None:
                    values[column] = json.dumps(_json_safe(values[column]), sort_keys=True)
            encoded.append([values[c] for c in _COLUMNS])
        with _guard(self.path, "import trials"), self._transaction():
            before = self._db.total_changes
            self._db.executemany(_INSERT_NEW, encoded)
            return self._db.total_changes - before

    def save_pending(self, row: Mapping[str, Any]) -> str:
        """Save a row that could not be written outside the store; returns where (in words)."""
        record = {
            "application": APPLICATION,
            "store_id": self._meta.get("store_id"),
            "store_path": str(self.path.resolve()),
            "saved_at": _now_iso(),
            "row": dict(row),
        }
        text = json.dumps(record, sort_keys=True)
        name = f"{record['store_id']}-{row['trial_id'][:16]}-{secrets.token_hex(4)}.json"
        for folder in pending_dirs():
            target = folder / name
            try:
                folder.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(".part")
                with partial.open("w", encoding="utf-8") as handle:
                    handle.write(text + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                partial.replace(target)
            except OSError as error:
                log.debug("pending folder %s: %s", folder, error)
                with contextlib.suppress(OSError):
                    target.with_suffix(".part").unlink()
                continue
            return f"'{target}' (the next run on this store imports it)"
        print(text, file=sys.stderr, flush=True)
        return (
            "stderr as one JSON line (no folder could be written; keep that line: it is the result)"
        )

    def _import_pending(self) -> None:
        """Write the results saved for this store by runs that could not write them."""
        store_id = self._meta.get("store_id")
        here = str(self.path.resolve())
        imported = []
        for folder in pending_dirs():
            try:
                files = sorted(folder.glob(f"{store_id}-*.json"))
            except OSError:
                continue
            for file in files:
                try:
                    record = json.loads(file.read_text(encoding="utf-8"))
                except (OSError, ValueError) as error:
                    log.warning("pending result '%s' cannot be read (%s); left there", file, error)
                    continue
                if record.get("store_id") != store_id or record.get("store_path") != here:
                    continue  # a copy of this store elsewhere: not ours to import
                row = record["row"]
                self._write_row({c: row.get(c) for c in _COLUMNS})
                with contextlib.suppress(OSError):
                    file.unlink()
                imported.append(file)
        if imported:
            log.warning(
                "store '%s': imported %d result(s) an earlier run could not write (from %s)",
                self.path,
                len(imported),
                ", ".join(sorted({str(f.parent) for f in imported})),
            )

    # -- claims (several drivers on one store) ----------------------------------------------

    def claim(self, trial_id: str, owner: str, lease_s: float, seen_attempts: int = 0) -> str:
        """Claim a trial for ``owner`` for ``lease_s`` seconds, if nobody else runs it.

        Returns :data:`CLAIMED`; :data:`SETTLED` if its row is final or was written since
        the caller looked (its attempts are no longer ``seen_attempts``: another driver ran
        it in the meantime); :data:`HELD` if another owner's lease on it is still running.
        An expired claim is taken over.
        """
        return self.claim_many([trial_id], owner, lease_s, {trial_id: seen_attempts})[trial_id]

    def claim_many(
        self,
        trial_ids: Sequence[str],
        owner: str,
        lease_s: float,
        seen_attempts: Mapping[str, int] | None = None,
    ) -> dict[str, str]:
        """Claim several trials at once (a batch trained together), in one transaction:
        ``{trial id: CLAIMED | SETTLED | HELD}``, each as :meth:`claim` says (``seen_attempts``:
        trial id -> attempts the caller saw, 0 where absent)."""
        seen = seen_attempts or {}
        states = {}
        with _guard(self.path, "claim a trial"), self._transaction():
            for trial_id in trial_ids:
                state = self._claim_state(trial_id, owner, seen.get(trial_id, 0))
                if state == CLAIMED:
                    self._db.execute(
                        "INSERT OR REPLACE INTO claims (trial_id, owner, expires_at, claimed_at) "
                        "VALUES (?, ?, ?, ?)",
                        (trial_id, owner, time.time() + lease_s, _now_iso()),
                    )
                states[trial_id] = state
        return states

    def claim_state(self, trial_id: str, owner: str, seen_attempts: int = 0) -> str:
        """What :meth:`claim` would return now, without claiming."""
        with _guard(self.path, "read the claims"):
            return self._claim_state(trial_id, owner, seen_attempts)

    def _claim_state(self, trial_id: str, owner: str, seen_attempts: int) -> str:
        row = self._db.execute(
            "SELECT status, attempts FROM trials WHERE trial_id = ?", (trial_id,)
        ).fetchone()
        if row is not None and (row[0] in FINAL_STATUSES or row[1] != seen_attempts):
            return SETTLED
        holder = self._db.execute(
            "SELECT owner FROM claims WHERE trial_id = ? AND owner != ? AND expires_at > ?",
            (trial_id, owner, time.time()),
        ).fetchone()
        return HELD if holder and not owner_is_gone(holder[0]) else CLAIMED

    def attempts(self) -> dict[str, int]:
        """trial id -> attempts, for every row (0 for a trial not in the store)."""
        with _guard(self.path, "read it"):
            return dict(self._db.execute("SELECT trial_id, attempts FROM trials").fetchall())

    def held_elsewhere(self, owner: str | None = None) -> set[str]:
        """Ids of the trials another live driver holds now (lease running, process alive)."""
        return {
            c["trial_id"]
            for c in self.claims()
            if c["owner"] != owner
            and c["expires_at"] > time.time()
            and not owner_is_gone(c["owner"])
        }

    def claims(self) -> list[dict[str, Any]]:
        """The claims now in the store (expired ones included); empty for a version-1 store."""
        with _guard(self.path, "read the claims"):
            if not self._has_table("claims"):
                return []
            cursor = self._db.execute("SELECT * FROM claims ORDER BY trial_id")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, values, strict=True)) for values in cursor]

    def release(self, owner: str) -> None:
        """Drop every claim of ``owner`` (a driver that stops), so others need not wait."""
        with _guard(self.path, "release its claims"), self._transaction():
            self._db.execute("DELETE FROM claims WHERE owner = ?", (owner,))

    @contextlib.contextmanager
    def keep_leases(self, owner: str, lease_s: float, every_s: float) -> Iterator[None]:
        """Renew ``owner``'s claims every ``every_s`` seconds from a thread while inside.

        The thread has its own connection (trials may run for hours; the driver's thread is
        busy with the executor). A failed renewal is logged and retried at the next tick.
        """
        stop = threading.Event()

        def renew() -> None:
            try:
                db = sqlite3.connect(self.path, timeout=min(self.timeout, every_s))
            except sqlite3.Error as error:
                log.warning("store '%s': cannot renew leases: %s", self.path, error)
                return
            try:
                while not stop.wait(every_s):
                    try:
                        with db:
                            db.execute(
                                "UPDATE claims SET expires_at = ? WHERE owner = ?",
                                (time.time() + lease_s, owner),
                            )
                    except sqlite3.Error as error:
                        log.warning("store '%s': cannot renew leases: %s", self.path, error)
            finally:
                db.close()

        thread = threading.Thread(target=renew, name="demon-optim-leases", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # -- searches (sampled configurations) --------------------------------------------------

    def record_search(self, search: Mapping[str, Any]) -> None:
        """Record a search (creating the search tables if the store has none yet).

        ``search`` holds the ``searches`` columns but ``created_at`` (JSON columns as Python
        values). A search
        already recorded keeps its row; its ``tuning_budgets`` become the given ones (the
        budget is not part of a search's identity: a larger one continues it).
        """
        values = {**search, "created_at": _now_iso()}
        for column in _SEARCH_JSON:
            values[column] = json.dumps(values[column], sort_keys=True)
        columns = list(values)
        with _guard(self.path, "record a search"), self._transaction():
            for statement in _SEARCH_TABLES:
                self._db.execute(statement)
            self._db.execute(
                f"INSERT INTO searches ({', '.join(columns)}) VALUES "
                f"({', '.join('?' * len(columns))}) ON CONFLICT (search_id) DO UPDATE SET "
                "tuning_budgets = excluded.tuning_budgets",
                [values[c] for c in columns],
            )

    def record_draws(self, search_id: str, draws: Sequence[Mapping[str, Any]]) -> None:
        """Record configurations a search drew (``draw``, ``batch``, ``params``,
        ``hyperparameters``, ``trial_ids``), in one transaction, before their trials run.

        A draw already recorded (another driver of this store drew it first) is kept as it
        is: the record, not this call, is the search's sequence.
        """
        now = _now_iso()
        rows = [
            (
                search_id,
                d["draw"],
                d["batch"],
                *(json.dumps(d[c], sort_keys=True) for c in _DRAW_JSON),
                now,
            )
            for d in draws
        ]
        with _guard(self.path, "record a search's draws"), self._transaction():
            self._db.executemany(
                "INSERT INTO search_draws (search_id, draw, batch, params, hyperparameters, "
                "trial_ids, asked_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (search_id, draw) DO NOTHING",
                rows,
            )

    def record_tells(self, search_id: str, tells: Sequence[tuple[int, str, float | None]]) -> None:
        """Record what was told to a search's sampler: ``(draw, state, value)`` with state
        :data:`COMPLETE` (``value``: the mean validation metric over seeds) or :data:`FAIL`,
        in one transaction; a draw told before keeps its first record."""
        now = _now_iso()
        with _guard(self.path, "record a search's results"), self._transaction():
            self._db.executemany(
                "UPDATE search_draws SET state = ?, value = ?, told_at = ? "
                "WHERE search_id = ? AND draw = ? AND state IS NULL",
                [(state, value, now, search_id, draw) for draw, state, value in tells],
            )

    def search_draws(self, search_id: str) -> list[dict[str, Any]]:
        """A search's draws in order (JSON columns decoded); [] if none or no search tables."""
        with _guard(self.path, "read a search"):
            if not self._has_table("search_draws"):
                return []
            cursor = self._db.execute(
                "SELECT * FROM search_draws WHERE search_id = ? ORDER BY draw", (search_id,)
            )
            return _decoded(cursor, _DRAW_JSON)

    def searches(self) -> list[dict[str, Any]]:
        """Every search in the store, each with its ``draws`` (in order); [] for a store
        without the search tables."""
        with _guard(self.path, "read the searches"):
            if not self._has_table("searches"):
                return []
            searches = _decoded(
                self._db.execute("SELECT * FROM searches ORDER BY created_at, search_id"),
                _SEARCH_JSON,
            )
            draws: dict[str, list[dict[str, Any]]] = {}
            cursor = self._db.execute("SELECT * FROM search_draws ORDER BY search_id, draw")
            for draw in _decoded(cursor, _DRAW_JSON):
                draws.setdefault(draw["search_id"], []).append(draw)
        for search in searches:
            search["draws"] = draws.get(search["search_id"], [])
        return searches

    # -- reading --------------------------------------------------------------------------

    def _has_table(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._db.execute(query, (name,)).fetchone() is not None

    def meta(self) -> dict[str, str]:
        """The meta table (application, schema_version, created_at, store_id)."""
        with _guard(self.path, "read it"):
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def outcomes(self, trial_ids: Iterable[str]) -> dict[str, tuple[str, float | None]]:
        """trial id -> (status, val_metric) of those of ``trial_ids`` in the store."""
        ids = list(dict.fromkeys(trial_ids))
        found: dict[str, tuple[str, float | None]] = {}
        with _guard(self.path, "read it"):
            for start in range(0, len(ids), 500):  # under SQLite's limit on parameters
                chunk = ids[start : start + 500]
                cursor = self._db.execute(
                    "SELECT trial_id, status, val_metric FROM trials WHERE trial_id IN "
                    f"({', '.join('?' * len(chunk))})",
                    chunk,
                )
                found.update((i, (status, val)) for i, status, val in cursor)
        return found

    def statuses(self) -> dict[str, str]:
        """trial id -> status, for every row."""
        with _guard(self.path, "read it"):
            return dict(self._db.execute("SELECT trial_id, status FROM trials").fetchall())

    def pending(self, specs: Sequence[TrialSpec]) -> list[TrialSpec]:
        """The specs still to run: not in the store, or failed last time."""
        statuses = self.statuses()
        return [s for s in specs if statuses.get(s.trial_id) not in FINAL_STATUSES]

    def rows(self, trial_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts (JSON columns decoded), in insertion order; optionally only ``ids``."""
        with _guard(self.path, "read it"):
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
                for column in _NULLABLE_JSON_COLUMNS:
                    text = row.get(column)  # absent from a version-1 or -2 store read as is
                    row[column] = None if text is None else json.loads(text)
                if row["metrics"] is None:  # written before version 3: the one metric
                    row["metrics"] = _metrics_of_old_row(row)
                rows.append(row)
            return rows

    def count(self) -> int:
        with _guard(self.path, "read it"):
            return self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    def export_csv(self, out: str | pathlib.Path) -> int:
        """Write one CSV row per trial; returns the number of rows.

        Columns: trial_id, task, method, seed, epochs, batch_size, one column per
        hyperparameter name found in the store (empty where a method lacks it; pairs written
        as JSON lists), status, val_metric, test_metric, epochs_run, wall_time_s, error.
        Only the trials run here: imported ones (``origin`` set) came from files the user
        has, and an export row has no column to tell them apart.
        """
        rows = [row for row in self.rows() if row.get("origin") is None]
        hyper_names: list[str] = []
        for row in rows:
            for name in row["hyperparameters"]:
                if name not in hyper_names:
                    hyper_names.append(name)
        head = ["trial_id", "task", "method", "seed", "epochs", "batch_size"]
        tail = ["status", "val_metric", "test_metric", "epochs_run", "wall_time_s", "error"]
        out = pathlib.Path(out)
        try:
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
        except OSError as error:
            raise EnvironmentFailure(f"export '{out}': cannot write it: {_cause(error)}") from None
        return len(rows)


def _row(result: TrialResult, owner: str | None) -> dict[str, Any]:
    """The store row of a result (plain JSON values: it may go to a pending file)."""
    spec = result.spec
    values = (
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
        json.dumps(_json_safe(list(result.history))),
        result.wall_time_s,
        json.dumps(result.versions, sort_keys=True),
        result.error,
        result.traceback,
        _iso(result.started_at),
        _now_iso(),
        owner,
        json.dumps(_json_safe(result.metrics)),
        None if result.samples is None else json.dumps(result.samples.to_json()),
        None,  # origin: run here
        None,  # source
        None if result.execution is None else json.dumps(result.execution, sort_keys=True),
    )
    return dict(zip(_COLUMNS, values, strict=True))


def _decoded(cursor: sqlite3.Cursor, json_columns: Sequence[str]) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    rows = []
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        for column in json_columns:
            row[column] = json.loads(row[column])
        rows.append(row)
    return rows


def _metrics_of_old_row(row: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """A version-2 row's metrics: its one metric, named by the task as its spec says."""
    if row["status"] != "done":
        return {}
    about = row["spec"].get("about") or {}
    name = about.get("metric", "metric")
    return {"val": {name: row["val_metric"]}, "test": {name: row["test_metric"]}}


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, list) else value


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (in nested dicts and lists) made None, so that
    the JSON columns are standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception, Ctrl-C included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except BaseException:  # e.g. disk full at commit: leave no transaction open
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
