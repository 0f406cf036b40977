"""Tiny full disks (tmpfs) and read-only bind mounts, for the tests of faults.

Mounting needs root, or a container allowed to mount. CI runs as root, where ``chmod`` does
not stop writes, so a mount is the only honest read-only file system or full disk there.
Where mounting is not possible a test is skipped with the reason, except under ``CI=true``,
where it fails.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def unavailable(why: str) -> None:
    """Skip with ``why``, except under CI=true, where it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {why}")
    pytest.skip(why)


def _mount(*args: str) -> None:
    if shutil.which("mount") is None:
        unavailable("no `mount` command")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        unavailable(f"cannot mount ({' '.join(args)}): {done.stderr.strip() or 'not root?'}")


def _unmount(path: pathlib.Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if done.returncode != 0:  # still in use (an open file): detach it now, freed when closed
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def tmpfs(path: pathlib.Path, size: str = "1m") -> Iterator[pathlib.Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created) for the block; ``"4k"`` is one
    page, so the first real file fills it."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def read_only(source: pathlib.Path, path: pathlib.Path | None = None) -> Iterator[pathlib.Path]:
    """The folder ``source`` seen read-only at ``path`` (created; default: on itself)."""
    path = source if path is None else path
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _unmount(path)


def fill(folder: pathlib.Path) -> pathlib.Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler
