"""A full disk and a read-only file system for the command-line tests, as root can make them.

Both need ``mount`` (root, or a container allowed to mount). Where it is not possible the
test is skipped with the reason, except under ``CI=true``, where it fails: CI runs as root,
where ``chmod`` does not stop writes, so these are the only honest way to test them there.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {why}")
    pytest.skip(why)


def _mount(*args: str) -> None:
    if shutil.which("mount") is None:
        _unavailable("no `mount` command")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        _unavailable(f"cannot mount ({' '.join(args)}): {done.stderr.strip() or done.returncode}")


def _unmount(path: pathlib.Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if done.returncode != 0:  # still in use (an open file): detach it now, freed when closed
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def tiny_disk(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 4 KiB tmpfs mounted at ``path`` (created): one page, so the first real file fills it."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", "size=4k", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def read_only(source: pathlib.Path, path: pathlib.Path) -> Iterator[pathlib.Path]:
    """``source`` (a folder) bind-mounted read-only at ``path`` (created)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(path))
    try:
        done = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            _unavailable(f"cannot remount read-only: {done.stderr.strip()}")
        yield path
    finally:
        _unmount(path)
