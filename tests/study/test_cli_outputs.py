"""What the commands write, and what they refuse to replace or cannot write.

``export --out`` replaces only a previous export (never the store), atomically; ``run``'s
table never replaces the store or a file it did not write; an operating-system error is one
line naming the path and the cause with exit code 3 (full disk: a 4 KiB tmpfs; read-only: a
read-only bind mount, see ``tests/mounts.py``), never a traceback with exit 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import subprocess
import sys
import time

import pytest

from demon_optim.cli import EXIT_ENVIRONMENT, EXIT_USAGE, main
from demon_optim.study.outputs import EXPORT_HEAD, EXPORT_TAIL, is_export
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.trial import TrialResult
from tests.conftest import requires
from tests.mounts import read_only, tmpfs

needs_sklearn = requires("sklearn", "(ships the digits data)")
needs_matplotlib = requires("matplotlib", "(draws the report)")

ONE_TRIAL = """
name = "tiny"
tasks = ["digits-mlp"]
methods = ["sgdm"]
seeds = [0]
epochs = 1

[grid.sgdm]
lr = 0.1
momentum = 0.9
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The error message, checked to be one line and no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("demon-optim: error:")]
    assert len(lines) == 1, err
    return lines[0]


def make_store(path: pathlib.Path, methods: tuple[str, ...] = ("sgdm",)) -> pathlib.Path:
    """A store with one finished trial per method, written without training."""
    with ResultStore(path) as store:
        for method in methods:
            config = (("lr", 0.1), ("momentum", 0.9), ("weight_decay", 0.0))
            if method.startswith("demon"):
                config += (("delay", 0.0),)
            spec = TrialSpec("digits-mlp", method, config, 0, 1, 100)
            epoch = {"epoch": 1, "train_loss": 0.5, "val_metric": 0.9}
            store.write(
                TrialResult(
                    spec=spec,
                    status="done",
                    val_metric=0.9,
                    test_metric=0.8,
                    history=({**epoch, "lr": 0.1, "momentum": 0.9, "elapsed_s": 0.1},),
                    wall_time_s=0.1,
                    started_at=time.time(),
                    versions={},
                )
            )
    return path


def digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_store(tmp_path / "s.sqlite")


# --- export: what --out may replace -----------------------------------------------------------


def test_export_never_replaces_the_store_itself_even_with_force(
    store: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    os.symlink("s.sqlite", "link.sqlite")
    os.link("s.sqlite", "hard.sqlite")
    with ResultStore(store) as writable:  # leaves the -wal/-shm files of an open store
        before = digest(store)
        for out in ("s.sqlite", "./s.sqlite", str(store), "link.sqlite", "hard.sqlite"):
            for force in ((), ("--force",)):
                code, _, err = run(capsys, "export", "--store", "s.sqlite", "--out", out, *force)
                assert code == EXIT_USAGE
                line = one_error_line(err)
                assert f"--out: '{pathlib.Path(out)}' is the results store ('s.sqlite')" in line
                assert "never replaced, even with --force" in line
        code, _, err = run(capsys, "export", "--store", "link.sqlite", "--out", "s.sqlite-wal")
        assert code == EXIT_USAGE and "is the results store's -wal file" in one_error_line(err)
        assert writable.count() == 1
    assert digest(store) == before
    with ResultStore(store, readonly=True) as again:
        assert again.count() == 1


def test_export_refuses_a_file_that_is_not_an_export_unless_forced(
    store: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n")
    other = make_store(tmp_path / "other.sqlite", ("adam",))
    before = digest(notes), digest(other)
    code, _, err = run(capsys, "export", "--store", str(store), "--out", str(notes))
    assert code == EXIT_USAGE
    line = one_error_line(err)
    assert f"'{notes}' exists and is not a previous export" in line and "--force" in line
    code, _, err = run(capsys, "export", "--store", str(store), "--out", str(other))
    assert code == EXIT_USAGE and "is an SQLite database" in one_error_line(err)
    assert (digest(notes), digest(other)) == before
    # --force replaces such a file (another store too: only the exported one is protected)
    code, _, err = run(capsys, "export", "--store", str(store), "--out", str(notes), "--force")
    assert code == 0 and "wrote 1 trials" in err and is_export(notes)
    # an empty file holds nothing: replaced without --force
    empty = tmp_path / "empty.csv"
    empty.touch()
    assert run(capsys, "export", "--store", str(store), "--out", str(empty))[0] == 0
    assert is_export(empty)


def test_export_replaces_a_previous_export_of_any_store(
    store: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "new" / "s.csv"  # folders are created
    assert run(capsys, "export", "--store", str(store), "--out", str(out))[0] == 0
    first = out.read_text()
    header = first.splitlines()[0].split(",")
    # the header ResultStore.export_csv writes is what is_export recognises
    assert tuple(header[:6]) == EXPORT_HEAD and tuple(header[-6:]) == EXPORT_TAIL
    os.chmod(out, 0o640)
    other = make_store(tmp_path / "other.sqlite", ("sgdm", "demon-sgdm"))  # more columns
    code, _, err = run(capsys, "export", "--store", str(other), "--out", str(out))
    assert code == 0, err
    assert "delay" in out.read_text().splitlines()[0] and len(out.read_text().splitlines()) == 3
    assert oct(out.stat().st_mode & 0o777) == oct(0o640)  # the previous file's permissions
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.csv"]  # no temporary left
    assert run(capsys, "export", "--store", str(store), "--out", str(out))[0] == 0
    assert out.read_text() == first


def test_export_out_that_is_not_a_file_path(
    store: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = run(capsys, "export", "--store", str(store), "--out", str(folder))
    assert code == EXIT_USAGE and f"--out: '{folder}' is a directory" in one_error_line(err)
    assert list(folder.iterdir()) == []
    code, _, err = run(capsys, "export", "--store", str(store), "--out", os.devnull, "--force")
    assert code == EXIT_USAGE and "is not a regular file" in one_error_line(err)
    loop = tmp_path / "loop.csv"
    os.symlink(loop.name, loop)
    code, _, err = run(capsys, "export", "--store", str(store), "--out", str(loop))
    assert code == EXIT_USAGE and "symbolic link that leads nowhere" in one_error_line(err)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code, _, err = run(capsys, "export", "--store", str(store), "--out", str(blocker / "x.csv"))
    assert code == EXIT_ENVIRONMENT
    assert f"cannot create the folder of '{blocker / 'x.csv'}'" in one_error_line(err)
    with pytest.raises(SystemExit) as caught:
        main(["export", "--store", str(store), "--out", ""])
    assert caught.value.code == EXIT_USAGE and "got an empty path" in capsys.readouterr().err


# --- export, report and stdout: the environment failing ----------------------------------------


def test_export_into_a_read_only_folder_exits_3(
    store: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with read_only(source, tmp_path / "ro") as folder:
        out = folder / "x.csv"
        code, out_text, err = run(capsys, "export", "--store", str(store), "--out", str(out))
    assert code == EXIT_ENVIRONMENT and out_text == ""
    assert one_error_line(err) == (
        f"demon-optim: error: cannot write '{out}': Read-only file system"
    )
    assert list(source.iterdir()) == []


def test_export_on_a_full_disk_keeps_the_previous_export(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = make_store(tmp_path / "s.sqlite", ("sgdm", "adam", "demon-sgdm"))
    with tmpfs(tmp_path / "disk", "4k") as disk:
        out = disk / "x.csv"
        small = make_store(tmp_path / "small.sqlite")
        assert run(capsys, "export", "--store", str(small), "--out", str(out))[0] == 0
        before = out.read_bytes()  # the disk's one page: no room for another file
        code, _, err = run(capsys, "export", "--store", str(store), "--out", str(out))
        assert code == EXIT_ENVIRONMENT
        assert one_error_line(err) == (
            f"demon-optim: error: cannot write '{out}': No space left on device"
        )
        assert out.read_bytes() == before  # whole, not truncated
        assert sorted(p.name for p in disk.iterdir()) == ["x.csv"]  # the temporary is gone


@needs_matplotlib
def test_report_into_a_read_only_folder_or_a_full_disk_exits_3(
    store: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with read_only(source, tmp_path / "ro") as folder:
        code, _, err = run(capsys, "report", "--store", str(store), "--out", str(folder / "r"))
    assert code == EXIT_ENVIRONMENT
    line = one_error_line(err)
    assert str(folder) in line and "Read-only file system" in line
    with tmpfs(tmp_path / "disk", "4k") as disk:
        code, _, err = run(capsys, "report", "--store", str(store), "--out", str(disk / "r"))
        assert code == EXIT_ENVIRONMENT
        line = one_error_line(err)
        assert str(disk) in line and "No space left on device" in line


@needs_matplotlib
def test_report_force_writes_beside_a_users_files(
    store: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "report.md").write_text("my own report\n")
    code, _, err = run(capsys, "report", "--store", str(store), "--out", str(out))
    assert code == EXIT_USAGE and "report.md" in one_error_line(err)
    assert (out / "report.md").read_text() == "my own report\n"
    code, _, err = run(capsys, "report", "--store", str(store), "--out", str(out), "--force")
    assert code == 0, err
    assert (out / "index.html").is_file()


def _with_full_stdout(command: list[str]) -> subprocess.CompletedProcess[str]:
    """``demon-optim COMMAND`` with its standard output on /dev/full (a full disk)."""
    src = pathlib.Path(__file__).parents[2] / "src"
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-m", "demon_optim", *command],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(src)},
            check=False,
        )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("command", [["tasks"], ["data", "--no-verify"]])
def test_a_full_stdout_exits_3_in_one_line(command: list[str]) -> None:
    done = _with_full_stdout(command)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert done.stderr == (
        "demon-optim: error: cannot write to standard output: No space left on device\n"
    )


# --- run: the table file and the report after the last trial ----------------------------------


@pytest.fixture
def study(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "tiny.toml"
    path.write_text(ONE_TRIAL)
    return path


@needs_sklearn
def test_run_table_never_replaces_the_store_or_a_users_file(
    study: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --store runs/tiny.md: the table of study tiny is runs/tiny.md, the store itself
    store = tmp_path / "a" / "tiny.md"
    code, out, err = run(capsys, "run", str(study), "--store", str(store), "--workers", "1")
    assert code == 0, err
    assert "| sgdm |" in out  # the table is still printed
    assert f"No table file: '{store}' is the results store" in err and "Traceback" not in err
    with ResultStore(store, readonly=True) as results:
        assert results.count() == 1
    # a file of the user's where the table goes is kept
    notes = tmp_path / "b" / "tiny.md"
    notes.parent.mkdir()
    notes.write_text("# my notes on tiny\n")
    store = notes.with_suffix(".sqlite")
    code, _, err = run(capsys, "run", str(study), "--store", str(store), "--workers", "1")
    assert code == 0, err
    assert f"No table file: '{notes}' exists and is not a table of study tiny" in err
    assert notes.read_text() == "# my notes on tiny\n"
    # a previous table is replaced
    notes.write_text("# Study tiny\n\nold\n")
    code, _, err = run(capsys, "run", str(study), "--store", str(store), "--workers", "1")
    assert code == 0 and f"Table written to {notes}" in err
    assert "old" not in notes.read_text() and "| sgdm |" in notes.read_text()


@needs_sklearn
@needs_matplotlib
def test_run_whose_table_and_report_cannot_be_written_exits_3_with_results_kept(
    study: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "runs"
    source = tmp_path / "source"
    source.mkdir()
    with read_only(source, tmp_path / "ro") as ro, tmpfs(folder / "tiny-report", "4k"):
        os.symlink(ro / "tiny.md", folder / "tiny.md")  # the table: into a read-only folder
        store = folder / "tiny.sqlite"
        code, out, err = run(
            capsys, "run", str(study), "--store", str(store), "--workers", "1", "--no-progress"
        )
        assert code == EXIT_ENVIRONMENT, err
        assert "Traceback" not in err and "| sgdm |" in out
        table = [line for line in err.splitlines() if "No table file:" in line]
        assert len(table) == 1 and f"cannot write '{folder / 'tiny.md'}'" in table[0]
        assert "Read-only file system" in table[0]
        report = [line for line in err.splitlines() if line.startswith("No report:")]
        assert len(report) == 1 and "No space left on device" in report[0]
        assert f"demon-optim report --store {store} --out DIR" in report[0]
    with ResultStore(store, readonly=True) as results:
        assert [row["status"] for row in results.rows()] == ["done"]


@needs_sklearn
@pytest.mark.parametrize("where", ["read-only folder", "full disk", "under a file"])
def test_run_whose_store_cannot_be_opened_exits_3_in_one_line(
    where: str, study: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with contextlib.ExitStack() as mounted:
        if where == "read-only folder":
            store = mounted.enter_context(read_only(source, tmp_path / "ro")) / "s.sqlite"
        elif where == "full disk":
            store = mounted.enter_context(tmpfs(tmp_path / "disk", "4k")) / "s.sqlite"
            store.with_name("filler").write_bytes(b"\0" * 4096)
        else:
            (tmp_path / "file.txt").write_text("x")
            store = tmp_path / "file.txt" / "s.sqlite"
        code, out, err = run(capsys, "run", str(study), "--store", str(store), "--workers", "1")
    assert code == EXIT_ENVIRONMENT and out == ""
    line = one_error_line(err)
    assert str(store.parent) in line, line


@needs_sklearn
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_run_with_a_full_stdout_still_writes_the_table_and_exits_3(
    study: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = tmp_path / "s.sqlite"
    command = ["run", str(study), "--store", str(store), "--workers", "1", "--no-progress"]
    done = _with_full_stdout(command)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert "Traceback" not in done.stderr
    assert f"Table written to {tmp_path / 'tiny.md'}" in done.stderr
    assert done.stderr.endswith(
        "demon-optim: error: cannot write to standard output: No space left on device\n"
    )
    assert "| sgdm |" in (tmp_path / "tiny.md").read_text()
