"""Helpers shared by the loaders: file errors that name the file, checksums, gzip sniffing.

Every loader turns a missing, truncated or corrupt file into a :class:`ConfigError` whose
message starts with the file's path, so a user sees which file to replace, never a stack
trace from deep inside numpy or pickle; missing data (or the package that provides it) is a
:class:`DataUnavailableError` that says how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib
from dataclasses import dataclass

from demon_optim.errors import ConfigError

GZIP_MAGIC = b"\x1f\x8b"

VERIFIED = "verified"
MISMATCH = "mismatch"
NOT_VERIFIED = "not verified"


def bad_file(path: pathlib.Path | str, why: str) -> ConfigError:
    """A ConfigError for an unusable data file: ``<path>: <why>``."""
    return ConfigError(f"{path}: {why}")


def read_bytes(path: pathlib.Path, decompress: bool = True) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic and ``decompress``.

    The gzip check is by content, not by name, so ``x.gz`` that was already unpacked (or a
    plain file someone compressed without renaming) still reads. Missing files and truncated
    or corrupt gzip streams raise a ConfigError naming the file.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise bad_file(path, "file not found") from None
    except OSError as error:
        raise bad_file(path, f"cannot read ({error.strerror or error})") from None
    return maybe_gunzip(raw, path) if decompress else raw


def maybe_gunzip(raw: bytes, path: pathlib.Path | str) -> bytes:
    """``raw`` decompressed if it starts with the gzip magic, else unchanged."""
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, gzip.BadGzipFile) as error:
        raise bad_file(path, f"truncated or corrupt gzip data ({error})") from None


def md5_hex(data: bytes) -> str:
    """md5 of ``data`` as hex (integrity against published checksums, not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: pathlib.Path) -> str:
    """md5 of a file's bytes as stored (no decompression), read in 1 MiB blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Checksum:
    """The result of checking one file: ``status`` is verified, mismatch or not verified."""

    path: str
    status: str
    actual: str | None = None
    expected: str | None = None

    def describe(self) -> str:
        if self.status == MISMATCH:
            return f"{self.path}: md5 {self.actual}, expected {self.expected}"
        return f"{self.path}: {self.status}"


def check_md5(path: pathlib.Path | str, actual: str, expected: str | None) -> Checksum:
    """Compare a computed md5 with a published one (None: no published checksum)."""
    if expected is None:
        return Checksum(str(path), NOT_VERIFIED, actual)
    status = VERIFIED if actual == expected else MISMATCH
    return Checksum(str(path), status, actual, expected)


def combined_status(checks: list[Checksum]) -> str:
    """One status for a data set: mismatch if any file mismatches, verified if all verify."""
    statuses = {check.status for check in checks}
    if MISMATCH in statuses:
        return MISMATCH
    if statuses == {VERIFIED}:
        return VERIFIED
    return NOT_VERIFIED


def raise_on_mismatch(checks: list[Checksum], what: str) -> None:
    """A ConfigError naming every file whose checksum differs from the published one."""
    bad = [check for check in checks if check.status == MISMATCH]
    if bad:
        lines = "; ".join(check.describe() for check in bad)
        raise ConfigError(
            f"{what}: checksum mismatch ({lines}); the file is corrupt or is another data set: "
            "replace it with the original"
        )


class DataUnavailableError(ConfigError):
    """A data set (or the package that provides it) is missing; the message says how to get it.

    A ConfigError (exit code 2 from the command line): the fix is the user's, and the message
    names the command that gets the data. Also importable from
    :mod:`demon_optim.study.tasks`, where it lived before the data layer had its own package.
    """
