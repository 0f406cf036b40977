"""IDX files (LeCun's MNIST format, also Fashion-MNIST's), gzipped or plain.

Layout: a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimension sizes, then the data in C order. MNIST and Fashion-MNIST use type 0x08 (uint8):
images ``0x00000803`` (N, 28, 28), labels ``0x00000801`` (N,).

Four files make a data set: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each with or without ``.gz``
(the gzip test is by content). Checksums are of the decompressed bytes, so a file verifies
whether or not it is compressed, and however it was compressed.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np

from demon_optim.study.datasets._files import (
    GZIP_MAGIC,
    Checksum,
    bad_file,
    check_md5,
    maybe_gunzip,
    md5_hex,
    read_bytes,
)

# IDX type byte -> numpy dtype (big-endian as stored)
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension

# role -> file stem; each may also carry ".gz"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Fashion-MNIST (Xiao et al., 2017): md5 of the decompressed files, as Debian's
# dataset-fashion-mnist ships them (docs/study.md, "Data").
FASHION_MNIST_MD5 = {
    "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
    "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
    "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
}
# MNIST (LeCun et al.): md5 of the published .gz files (as torchvision lists them); plain
# files cannot be checked against these.
MNIST_GZ_MD5 = {
    "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
    "test_images": "9fb629c4189551a2d022fa330f9573f3",
    "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
}


def parse_idx(data: bytes, path: pathlib.Path | str, magic: int | None = None) -> np.ndarray:
    """Decode IDX bytes into an array (native byte order); ``path`` only names errors.

    Checks the magic number (and that it equals ``magic`` when given) and that the payload
    is exactly ``prod(dims) * itemsize`` bytes, so a truncated file is an error, not a
    silently short data set.
    """
    if len(data) < 4:
        raise bad_file(path, f"too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise bad_file(path, f"not an IDX file (magic number 0x{found:08x})")
    if magic is not None and found != magic:
        raise bad_file(path, f"IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad_file(path, f"truncated IDX header ({len(data)} bytes)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = _IDX_TYPES[data[2]]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise bad_file(
            path,
            f"IDX payload is {len(data) - header} bytes, expected {expected} for shape "
            f"{tuple(dims)}: the file is truncated or corrupt",
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def read_idx(
    path: pathlib.Path,
    magic: int | None = None,
    expected_md5: str | None = None,
    expected_gz_md5: str | None = None,
) -> tuple[np.ndarray, Checksum, str]:
    """Read one IDX file (gzipped or plain): the array, its checksum status, decompressed md5.

    ``expected_md5`` is of the decompressed bytes; ``expected_gz_md5`` of the file as stored
    when it is gzipped (MNIST publishes only those). None: nothing published to check.
    """
    stored = read_bytes(path, decompress=False)
    data = maybe_gunzip(stored, path)
    digest = md5_hex(data)
    if expected_md5 is not None:
        checksum = check_md5(path, digest, expected_md5)
    elif expected_gz_md5 is not None and stored[:2] == GZIP_MAGIC:
        checksum = check_md5(path, md5_hex(stored), expected_gz_md5)
    else:
        checksum = check_md5(path, digest, None)
    return parse_idx(data, path, magic), checksum, digest


def find_idx_file(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    """``folder/stem.gz`` or ``folder/stem`` (in that order), whichever exists."""
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def has_idx_files(folder: pathlib.Path) -> bool:
    """Whether ``folder`` holds all four MNIST-style IDX files (compressed or not)."""
    return all(find_idx_file(folder, stem) is not None for stem in IDX_FILES.values())


@dataclass(frozen=True)
class IDXDataSet:
    """An MNIST-style data set: uint8 images (N, 28, 28) and int64 labels, train and test.

    ``md5s`` maps each role to the md5 of its decompressed file (whatever was checked).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    checksums: tuple[Checksum, ...]
    md5s: dict[str, str]


def load_idx_folder(
    folder: pathlib.Path,
    md5s: dict[str, str] | None = None,
    gz_md5s: dict[str, str] | None = None,
) -> IDXDataSet:
    """Read the four IDX files in ``folder``.

    ``md5s`` maps role -> md5 of the decompressed file, ``gz_md5s`` role -> md5 of the
    stored .gz file. Raises a ConfigError naming the file for a missing, truncated or
    corrupt file, or when images and labels disagree in count.
    """
    arrays: dict[str, np.ndarray] = {}
    checks: list[Checksum] = []
    digests: dict[str, str] = {}
    for role, stem in IDX_FILES.items():
        path = find_idx_file(folder, stem)
        if path is None:
            raise bad_file(folder / f"{stem}.gz", f"file not found (nor {stem})")
        magic = IMAGES_MAGIC if role.endswith("images") else LABELS_MAGIC
        array, check, digest = read_idx(
            path, magic, (md5s or {}).get(role), (gz_md5s or {}).get(role)
        )
        arrays[role], digests[role] = array, digest
        checks.append(check)
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if len(images) != len(labels):
            path = find_idx_file(folder, IDX_FILES[f"{part}_labels"])
            raise bad_file(path, f"{len(labels)} labels for {len(images)} images")
    return IDXDataSet(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
        checksums=tuple(checks),
        md5s=digests,
    )


def idx_checksums(
    folder: pathlib.Path,
    md5s: dict[str, str] | None = None,
    gz_md5s: dict[str, str] | None = None,
) -> list[Checksum]:
    """Checksum status of the four files without decoding them (for the data catalogue)."""
    checks = []
    for role, stem in IDX_FILES.items():
        path = find_idx_file(folder, stem)
        if path is None:
            raise bad_file(folder / f"{stem}.gz", "file not found")
        stored = read_bytes(path, decompress=False)
        if md5s and role in md5s:
            data = maybe_gunzip(stored, path)
            checks.append(check_md5(path, md5_hex(data), md5s[role]))
        elif gz_md5s and role in gz_md5s and stored[:2] == GZIP_MAGIC:
            checks.append(check_md5(path, md5_hex(stored), gz_md5s[role]))
        else:
            checks.append(check_md5(path, md5_hex(stored), None))
    return checks
