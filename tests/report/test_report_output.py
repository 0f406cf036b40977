"""The report folder: a user's files are never replaced, failed writes are errors naming the
path and leave no half report that looks whole."""

from __future__ import annotations

import json
import os
import pathlib
import threading
from collections.abc import Callable

import pytest

from demon_optim.errors import ConfigError, EnvironmentFailure
from demon_optim.report import build_report_from_csv, output
from tests.mounts import fill

TWO = "setting,method,value\na,demon,1\na,adam,2\nb,demon,3\n"
ONE = "setting,method,value\na,demon,5\na,adam,4\n"


def csv_file(tmp_path: pathlib.Path, text: str = TWO, name: str = "in.csv") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def listing(folder: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_refuses_a_folder_with_a_users_file(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my own notes\n")
    with pytest.raises(ConfigError) as error:
        build_report_from_csv(csv_file(tmp_path), out)
    message = str(error.value)
    assert "\n" not in message and str(out) in message and "'report.md'" in message
    assert "--force" in message
    assert (out / "report.md").read_text() == "my own notes\n"
    assert listing(out) == ["report.md"]  # nothing written


def test_force_writes_beside_foreign_files_without_owning_them(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    build_report_from_csv(csv_file(tmp_path), out, force=True)
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "index.html").is_file()
    owned = json.loads((out / output.MANIFEST).read_text())["files"]
    assert "notes.txt" not in owned and "index.html" in owned
    with pytest.raises(ConfigError, match=r"'notes\.txt'"):  # still not the report's
        build_report_from_csv(csv_file(tmp_path), out)


def test_rewrites_its_own_report_and_drops_its_stale_files(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    build_report_from_csv(csv_file(tmp_path), out)
    assert (out / "tables" / "b.csv").is_file()
    build_report_from_csv(csv_file(tmp_path, ONE), out)  # no --force needed
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["a.csv"]
    assert "5.0" in (out / "tables" / "a.csv").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(output.STAGING_PREFIX)]


def test_empty_folder_and_new_nested_folder(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty").mkdir()
    assert build_report_from_csv(csv_file(tmp_path), tmp_path / "empty").is_file()
    assert build_report_from_csv(csv_file(tmp_path), tmp_path / "x" / "y").is_file()


def test_out_is_a_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    for out in (tmp_path / "file.txt", tmp_path / "file.txt" / "sub"):
        with pytest.raises(ConfigError) as error:
            build_report_from_csv(csv_file(tmp_path), out)
        assert "\n" not in str(error.value) and "not a folder" in str(error.value)
        assert str(tmp_path / "file.txt") in str(error.value)
    assert (tmp_path / "file.txt").read_text() == "x"


def test_force_never_writes_into_what_is_in_the_way(tmp_path: pathlib.Path) -> None:
    for blocker, make in (("tables", "file"), ("index.html", "folder")):
        out = tmp_path / f"out-{make}"
        out.mkdir()
        if make == "file":
            (out / blocker).write_text("mine")
        else:
            (out / blocker).mkdir()
        with pytest.raises(ConfigError, match=f"named '{blocker}'"):
            build_report_from_csv(csv_file(tmp_path), out, force=True)
        assert listing(out) == [blocker]


def test_a_tampered_manifest_cannot_make_it_remove_other_files(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    build_report_from_csv(csv_file(tmp_path), out)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    manifest = json.loads((out / output.MANIFEST).read_text())
    manifest["files"] += ["../victim.txt", str(victim), "tables/../../victim.txt"]
    (out / output.MANIFEST).write_text(json.dumps(manifest))
    build_report_from_csv(csv_file(tmp_path, ONE), out)
    assert victim.read_text() == "keep me"


def test_an_interrupted_report_is_visibly_incomplete_then_replaced(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    build_report_from_csv(csv_file(tmp_path), out)
    real_replace, calls = os.replace, []

    def failing_replace(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 3:  # the manifest, a table, then this one: mid-commit
            raise OSError(5, "Input/output error")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(output.os, "replace", failing_replace)
    with pytest.raises(EnvironmentFailure, match="Input/output error"):
        build_report_from_csv(csv_file(tmp_path, ONE), out)
    monkeypatch.undo()
    assert not (out / "index.html").exists()  # no page that looks whole over mixed files
    assert not [p for p in out.iterdir() if p.name.startswith(output.STAGING_PREFIX)]
    build_report_from_csv(csv_file(tmp_path, ONE), out)  # its own files: no --force needed
    assert (out / "index.html").is_file()


def test_staging_left_by_a_killed_report_is_not_foreign(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    build_report_from_csv(csv_file(tmp_path), out)
    left = out / f"{output.STAGING_PREFIX}dead"
    (left / "tables").mkdir(parents=True)
    (left / "tables" / "a.csv").write_text("half")
    build_report_from_csv(csv_file(tmp_path), out)
    assert not left.exists()


def test_full_disk_is_an_environment_failure_and_keeps_the_earlier_report(
    tiny_disk: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    out = tiny_disk / "out"
    build_report_from_csv(csv_file(tmp_path), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fill(tiny_disk)
    many = "setting,method,value\n" + "".join(f"s{i},demon,{i}\n" for i in range(100))
    with pytest.raises(EnvironmentFailure) as error:
        build_report_from_csv(csv_file(tmp_path, many), out)
    assert isinstance(error.value, OSError)
    message = str(error.value)
    assert "\n" not in message and str(out) in message and "No space left on device" in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tiny_disk / "filler").unlink()
    build_report_from_csv(csv_file(tmp_path, many), out)
    assert len(list((out / "tables").iterdir())) == 100


def test_read_only_folder_is_an_environment_failure(
    tmp_path: pathlib.Path, read_only: Callable[[pathlib.Path], None]
) -> None:
    source = csv_file(tmp_path)
    folder = tmp_path / "ro"
    build_report_from_csv(source, folder / "old")
    read_only(folder)
    for out in (folder / "old", folder / "new", folder / "new" / "nested"):
        with pytest.raises(EnvironmentFailure) as error:
            build_report_from_csv(source, out)
        message = str(error.value)
        assert "\n" not in message and "Read-only file system" in message
        assert str(folder) in message
    assert (folder / "old" / "index.html").is_file()


def test_two_writers_into_one_folder_take_turns(tmp_path: pathlib.Path) -> None:
    """Two drivers of one store may finish together: the second waits for the first."""
    fcntl = pytest.importorskip("fcntl", reason="no flock on this platform")
    out = tmp_path / "out"
    out.mkdir()
    source = csv_file(tmp_path)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_report_from_csv(source, out)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    descriptor = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # another writer holds the folder
        writer = threading.Thread(target=build)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not (out / "index.html").exists()
    finally:
        os.close(descriptor)
    writer.join(30)
    assert not errors and (out / "index.html").is_file()
