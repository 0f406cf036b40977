"""STL-10 binaries (Coates et al., 2011): ``stl10_binary/`` from ``stl10_binary.tar.gz``.

``train_X.bin`` / ``test_X.bin``: uint8 images, 3 x 96 x 96 each, every channel stored
column-major (Matlab order), so an image is ``reshape(3, 96, 96).transpose(0, 2, 1)`` in
C order. ``train_y.bin`` / ``test_y.bin``: one uint8 label per image, 1..10. 5,000 labelled
training and 8,000 test images; the 100,000 unlabelled images (``unlabeled_X.bin``) are
not used. Checksums: the per-file md5s published with torchvision's STL-10 loader.
"""

from __future__ import annotations

import pathlib

import numpy as np

from demon_optim.study.datasets._files import bad_file, check_md5, md5_hex, read_bytes
from demon_optim.study.datasets.cifar import ImageArrays

STL10_FOLDER = "stl10_binary"
STL10_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
STL10_MD5 = {
    "train_X.bin": "918c2871b30a85fa023e0c44e0bee87f",
    "train_y.bin": "5a34089d4802c674881badbb80307741",
    "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82",
    "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e",
}
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE


def read_stl10_split(folder: pathlib.Path, split: str) -> ImageArrays:
    """``split`` ("train" or "test") as ``[N, 3, 96, 96]`` uint8 images and labels 0..9."""
    images_path, labels_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    image_bytes = read_bytes(images_path, decompress=False)
    label_bytes = read_bytes(labels_path, decompress=False)
    checks = (
        check_md5(images_path, md5_hex(image_bytes), STL10_MD5.get(images_path.name)),
        check_md5(labels_path, md5_hex(label_bytes), STL10_MD5.get(labels_path.name)),
    )
    if len(image_bytes) % IMAGE_BYTES:
        raise bad_file(
            images_path,
            f"{len(image_bytes)} bytes is not a whole number of 96x96x3 images "
            f"({IMAGE_BYTES} bytes each): the file is truncated or corrupt",
        )
    n = len(image_bytes) // IMAGE_BYTES
    if len(label_bytes) != n:
        raise bad_file(
            labels_path, f"{len(label_bytes)} labels for {n} images in {images_path.name}"
        )
    labels = np.frombuffer(label_bytes, dtype=np.uint8).astype(np.int64) - 1  # 1..10 -> 0..9
    if n and (labels.min() < 0 or labels.max() > 9):
        raise bad_file(labels_path, "labels outside 1..10")
    # column-major channels: swap the two spatial axes to get (channel, row, column)
    images = np.frombuffer(image_bytes, dtype=np.uint8).reshape(n, 3, SIDE, SIDE)
    images = np.ascontiguousarray(images.transpose(0, 1, 3, 2))
    return ImageArrays(images, labels, checks)


def load_stl10(folder: pathlib.Path) -> tuple[ImageArrays, ImageArrays]:
    """(train 5,000, test 8,000) from an ``stl10_binary`` folder."""
    return read_stl10_split(folder, "train"), read_stl10_split(folder, "test")
