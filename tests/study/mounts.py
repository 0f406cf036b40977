"""Tiny full disks (tmpfs) and read-only bind mounts for the store's fault tests.

Mounting needs root (CI runs as root; there ``chmod`` does not stop writes, so a mount is
the only honest read-only file system or full disk). Where it is not possible the test is
skipped with the reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = f"cannot mount ({' '.join(args)}): {done.stderr.strip() or done.returncode}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


def _umount(path: pathlib.Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def tmpfs(path: pathlib.Path, size: str = "1m") -> Iterator[pathlib.Path]:
    """A tmpfs of ``size`` at ``path`` (created) for the block."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(source: pathlib.Path, path: pathlib.Path) -> Iterator[pathlib.Path]:
    """``source`` seen read-only at ``path`` (a bind mount) for the block."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _umount(path)


def fill(folder: pathlib.Path) -> pathlib.Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler
