"""The store when the environment fails: read-only file systems, full disks, unwritable
folders. Each uses a real mount (tests/mounts.py): skipped where mounting is not
possible, required under CI=true."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterable, Iterator

import pytest

from demon_optim.errors import EnvironmentFailure
from demon_optim.study.executors import run_study
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import SCHEMA_VERSION, ResultStore
from demon_optim.study.trial import TrialResult
from tests.mounts import fill, read_only, tmpfs
from tests.study.test_store import result, spec

SRC = str(pathlib.Path(__file__).resolve().parents[2] / "src")


def trials(n: int) -> list[TrialSpec]:
    return [spec(seed) for seed in range(n)]


def killed_writer(path: pathlib.Path, n: int) -> None:
    """Write ``n`` results in another process that then dies without closing the store,
    as a SIGKILLed driver does: the rows are committed but still in the -wal file."""
    code = (
        "import os, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "from demon_optim.study.store import ResultStore\n"
        "from tests.study.test_store import result, spec\n"
        "store = ResultStore(sys.argv[3])\n"
        "for seed in range(int(sys.argv[4])): store.write(result(spec(seed)))\n"
        "os._exit(0)\n"
    )
    root = str(pathlib.Path(__file__).resolve().parents[2])
    subprocess.run([sys.executable, "-c", code, SRC, root, str(path), str(n)], check=True)
    assert (path.parent / f"{path.name}-wal").stat().st_size > 0


def test_a_store_on_a_read_only_file_system_is_read(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "disk"
    source.mkdir()
    with ResultStore(source / "s.sqlite") as store:
        for seed in range(3):
            store.write(result(spec(seed)))
    assert sorted(p.name for p in source.iterdir()) == ["s.sqlite"]  # closed cleanly
    with read_only(source, tmp_path / "ro") as ro, ResultStore(ro / "s.sqlite", readonly=True) as s:
        assert s.count() == 3 and s.meta()["schema_version"] == str(SCHEMA_VERSION)
        assert [r["seed"] for r in s.rows()] == [0, 1, 2]


def test_a_killed_writers_store_on_a_read_only_file_system(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "disk"
    source.mkdir()
    killed_writer(source / "s.sqlite", 3)
    # -wal and -shm both there: SQLite reads the committed rows of the -wal file
    with read_only(source, tmp_path / "ro") as ro, ResultStore(ro / "s.sqlite", readonly=True) as s:
        assert s.count() == 3
    # without its -shm file SQLite could only open it as immutable, which would skip the
    # rows in the -wal file: refused, in one line that says what to do
    (source / "s.sqlite-shm").unlink()
    with read_only(source, tmp_path / "ro") as ro, pytest.raises(EnvironmentFailure) as caught:
        ResultStore(ro / "s.sqlite", readonly=True)
    message = str(caught.value)
    assert f"store '{tmp_path / 'ro' / 's.sqlite'}'" in message and "\n" not in message
    assert "committed results are still in" in message and "s.sqlite-wal" in message
    assert "where it is writable" in message and "copy it together with its -wal" in message
    # once opened where it is writable, the rows are in the main file and it reads anywhere
    with ResultStore(source / "s.sqlite") as store:
        assert store.count() == 3
    with read_only(source, tmp_path / "ro") as ro, ResultStore(ro / "s.sqlite", readonly=True) as s:
        assert s.count() == 3


def test_writing_into_a_read_only_folder_is_one_line(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "disk"
    source.mkdir()
    with ResultStore(source / "s.sqlite") as store:
        store.write(result(spec(0)))
    with read_only(source, tmp_path / "ro") as ro:
        for path in (ro / "new.sqlite", ro / "s.sqlite", ro / "sub" / "new.sqlite"):
            with pytest.raises(EnvironmentFailure) as caught:
                ResultStore(path)
            message = str(caught.value)
            assert f"store '{path}': cannot" in message and "\n" not in message
            assert "read-only" in message.lower() or "readonly" in message
    assert sorted(p.name for p in source.iterdir()) == ["s.sqlite"]


def test_a_full_disk_at_creation_is_one_line_and_leaves_nothing(tmp_path: pathlib.Path) -> None:
    with tmpfs(tmp_path / "full", "256k") as disk:
        fill(disk)
        with pytest.raises(EnvironmentFailure) as caught:
            ResultStore(disk / "s.sqlite")
        message = str(caught.value)
        assert f"store '{disk / 's.sqlite'}': cannot" in message and "full" in message
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


class FillingExecutor:
    """Returns made-up results at once; fills the disk after the first ``after`` of them."""

    workers = 2

    def __init__(self, disk: pathlib.Path | None = None, after: int = 0) -> None:
        self.disk, self.after = disk, after
        self.taken: list[TrialSpec] = []
        self.closed = False

    def map_unordered(self, specs: Iterable[TrialSpec]) -> Iterator[TrialResult]:
        try:
            for spec_ in specs:
                self.taken.append(spec_)
                if self.disk is not None and len(self.taken) == self.after + 1:
                    fill(self.disk)
                yield result(spec_)
        finally:
            self.closed = True


def test_a_full_disk_mid_run_loses_no_result(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    specs = trials(6)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        path = disk / "s.sqlite"
        executor = FillingExecutor(disk, after=2)
        with ResultStore(path, retry_delays=(0.01, 0.01)) as store:
            with pytest.raises(EnvironmentFailure) as caught:
                run_study(specs, store, executor)
            assert executor.closed and len(executor.taken) == 3  # stopped dispatching
        message = str(caught.value)
        [saved] = (tmp_path / "cache" / "demon-optim" / "pending").iterdir()
        assert f"store '{path}'" in message and "database or disk is full" in message
        assert f"saved to '{saved}'" in message and "\n" not in message
        assert json.loads(saved.read_text())["row"]["trial_id"] == executor.taken[2].trial_id
        (disk / "filler").unlink()
        with ResultStore(path) as store:  # imports the pending result
            assert store.count() == 3 and not saved.exists()
            report = run_study(specs, store, FillingExecutor())
            assert (report.skipped, report.written) == (3, 3)
            rows = store.rows()
    assert sorted(r["seed"] for r in rows) == list(range(6))
    assert all(r["attempts"] == 1 and r["status"] == "done" for r in rows)
