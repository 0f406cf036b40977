"""CIFAR-10 and CIFAR-100, "python version" pickle batches (Krizhevsky, 2009).

Layouts, as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``:

- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` (10,000 images each) and
  ``test_batch`` (10,000); each a pickled dict with ``data`` (uint8, N x 3072: 1024 red,
  then green, then blue values, rows in C order) and ``labels`` (list of 0..9).
- ``cifar-100-python/``: ``train`` (50,000) and ``test`` (10,000), with ``fine_labels``
  (0..99) and ``coarse_labels``; the 100 fine classes are the benchmark.

The pickles hold numpy arrays, so unpickling must run numpy's reconstructors; a restricted
unpickler allows only those (and plain containers), so a tampered file cannot run code.
Checksums: the per-file md5s published with torchvision's CIFAR loaders.
"""

from __future__ import annotations

import io
import pathlib
import pickle
from dataclasses import dataclass

import numpy as np

from demon_optim.study.datasets._files import Checksum, bad_file, check_md5, md5_hex, read_bytes

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_TRAIN = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
CIFAR10_TEST = "test_batch"
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}
IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32

# The globals a CIFAR pickle may name: numpy's array reconstruction, nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        return super().find_class(module, name)


@dataclass(frozen=True)
class ImageArrays:
    """uint8 images ``[N, C, H, W]`` and int64 labels, plus the files' checksum status."""

    images: np.ndarray
    labels: np.ndarray
    checksums: tuple[Checksum, ...] = ()


def read_cifar_batch(
    path: pathlib.Path, label_key: str, expected_md5: str | None = None
) -> ImageArrays:
    """One CIFAR pickle batch as ``[N, 3, 32, 32]`` uint8 images and int64 labels.

    ``label_key`` is ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). A missing file, a
    file that does not unpickle, or one without the expected keys and sizes raises a
    ConfigError naming the file.
    """
    raw = read_bytes(path, decompress=False)
    checksum = check_md5(path, md5_hex(raw), expected_md5)
    try:
        # latin1: the batches were pickled by Python 2; keys come back as str or bytes.
        entry = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as error:  # UnpicklingError, EOFError (truncated), ValueError, ...
        raise bad_file(
            path, f"not a CIFAR pickle batch ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(entry, dict):
        raise bad_file(path, f"not a CIFAR pickle batch (holds a {type(entry).__name__})")
    entry = {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise bad_file(
            path, f"CIFAR batch without 'data' and {label_key!r} (keys: {sorted(entry)})"
        )
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise bad_file(path, f"'data' is {data.dtype} {data.shape}, expected uint8 (N, {PIXELS})")
    if len(labels) != len(data) or labels.ndim != 1:
        raise bad_file(path, f"{len(labels)} labels for {len(data)} images")
    return ImageArrays(data.reshape(-1, *IMAGE_SHAPE), labels, (checksum,))


def _concat(parts: list[ImageArrays]) -> ImageArrays:
    return ImageArrays(
        np.concatenate([part.images for part in parts]),
        np.concatenate([part.labels for part in parts]),
        tuple(check for part in parts for check in part.checksums),
    )


def load_cifar10(folder: pathlib.Path) -> tuple[ImageArrays, ImageArrays]:
    """(train 50,000, test 10,000) from a ``cifar-10-batches-py`` folder."""
    train = _concat(
        [read_cifar_batch(folder / name, "labels", CIFAR10_MD5.get(name)) for name in CIFAR10_TRAIN]
    )
    test = read_cifar_batch(folder / CIFAR10_TEST, "labels", CIFAR10_MD5.get(CIFAR10_TEST))
    _check_labels(folder, train, test, 10)
    return train, test


def load_cifar100(folder: pathlib.Path) -> tuple[ImageArrays, ImageArrays]:
    """(train 50,000, test 10,000) from a ``cifar-100-python`` folder; the 100 fine labels."""
    train = read_cifar_batch(folder / "train", "fine_labels", CIFAR100_MD5.get("train"))
    test = read_cifar_batch(folder / "test", "fine_labels", CIFAR100_MD5.get("test"))
    _check_labels(folder, train, test, 100)
    return train, test


def _check_labels(folder: pathlib.Path, train: ImageArrays, test: ImageArrays, n: int) -> None:
    for part in (train, test):
        if len(part.labels) and (part.labels.min() < 0 or part.labels.max() >= n):
            raise bad_file(folder, f"labels outside 0..{n - 1}")


def cifar_files(folder_name: str) -> tuple[str, ...]:
    """The file names a complete CIFAR folder holds (for locating and checksumming)."""
    if folder_name == CIFAR10_FOLDER:
        return (*CIFAR10_TRAIN, CIFAR10_TEST)
    return ("train", "test")
