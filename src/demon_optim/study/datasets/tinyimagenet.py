"""Tiny ImageNet (CS231n, 2015): 200 classes of 64 x 64 colour images, folder layout.

Layout of ``tiny-imagenet-200/`` (from ``tiny-imagenet-200.zip``)::

    wnids.txt                       200 WordNet ids, one a line (class order = file order)
    train/<wnid>/images/*.JPEG      500 training images per class
    val/images/*.JPEG               10,000 validation images
    val/val_annotations.txt         tab-separated: file name, wnid, bounding box

The official test images have no labels, so the labelled validation set serves as the test
set (as is usual) and a validation split is carved from the training images. Decoding JPEGs
needs Pillow (optional dependency: ``pip install pillow``); greyscale images (a few dozen
in the training set) are converted to RGB. No checksums are published for the extracted
files; counts and sizes are checked instead. Decoding all 110,000 images takes on the order
of a minute on one core; the task caches nothing on disk.
"""

from __future__ import annotations

import pathlib

import numpy as np

from demon_optim.study.datasets._files import DataUnavailableError, bad_file
from demon_optim.study.datasets.cifar import ImageArrays

TINYIMAGENET_FOLDER = "tiny-imagenet-200"
SIDE = 64
PILLOW_HINT = "`pip install pillow` (Tiny ImageNet's JPEG files need Pillow)"


def _pillow():  # imported lazily: an optional dependency
    try:
        from PIL import Image
    except ImportError as error:
        raise DataUnavailableError(f"Tiny ImageNet needs Pillow ({error}); {PILLOW_HINT}") from None
    return Image


def read_wnids(folder: pathlib.Path) -> list[str]:
    """The class ids in ``wnids.txt``, in file order (label k is the k-th line)."""
    path = folder / "wnids.txt"
    try:
        wnids = path.read_text(encoding="ascii").split()
    except FileNotFoundError:
        raise bad_file(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise bad_file(path, f"cannot read ({error})") from None
    if not wnids or len(set(wnids)) != len(wnids):
        raise bad_file(path, "no class ids, or duplicates")
    return wnids


def decode_image(path: pathlib.Path) -> np.ndarray:
    """One JPEG as a ``[3, 64, 64]`` uint8 array; a ConfigError naming a bad or odd-size file."""
    image_module = _pillow()
    try:
        with image_module.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise bad_file(path, "file not found") from None
    except Exception as error:  # PIL.UnidentifiedImageError, OSError (truncated), ...
        raise bad_file(path, f"cannot decode the image ({type(error).__name__}: {error})") from None
    if array.shape != (SIDE, SIDE, 3):
        raise bad_file(path, f"image is {array.shape[1]}x{array.shape[0]}, expected 64x64")
    return array.transpose(2, 0, 1)


def _decode_all(paths: list[pathlib.Path], labels: list[int], checksums=()) -> ImageArrays:
    images = np.empty((len(paths), 3, SIDE, SIDE), dtype=np.uint8)
    for i, path in enumerate(paths):
        images[i] = decode_image(path)
    return ImageArrays(images, np.asarray(labels, dtype=np.int64), checksums)


def load_tinyimagenet(folder: pathlib.Path) -> tuple[ImageArrays, ImageArrays]:
    """(train, val) of a ``tiny-imagenet-200`` folder: 100,000 and 10,000 images in full.

    Training files are taken in sorted order per class, so the arrays are the same on every
    machine. Raises a ConfigError naming the file for a missing class folder, an unreadable
    image, or a validation annotation with an unknown class or a missing image.
    """
    _pillow()  # fail early, before listing 100k files
    wnids = read_wnids(folder)
    label_of = {wnid: k for k, wnid in enumerate(wnids)}
    train_paths: list[pathlib.Path] = []
    train_labels: list[int] = []
    for wnid in wnids:
        class_dir = folder / "train" / wnid / "images"
        if not class_dir.is_dir():
            raise bad_file(class_dir, "training folder of a class in wnids.txt not found")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
        if not files:
            raise bad_file(class_dir, "no JPEG images")
        train_paths += files
        train_labels += [label_of[wnid]] * len(files)

    annotations = folder / "val" / "val_annotations.txt"
    try:
        lines = annotations.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise bad_file(annotations, "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise bad_file(annotations, f"cannot read ({error})") from None
    val_paths: list[pathlib.Path] = []
    val_labels: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise bad_file(
                annotations,
                f"line {number}: expected '<file>\\t<wnid>\\t...' "
                f"with a wnid from wnids.txt, got {line[:80]!r}",
            )
        val_paths.append(folder / "val" / "images" / fields[0])
        val_labels.append(label_of[fields[1]])
    if not val_paths:
        raise bad_file(annotations, "no annotations")
    return _decode_all(train_paths, train_labels), _decode_all(val_paths, val_labels)
