"""scikit-learn's bundled 8x8 digits (1797 images, 10 classes): the arrays and their digest.

No download: the images ship inside scikit-learn (``sklearn.datasets.load_digits``). They are
checked against a recorded sha256, so every machine trains on identical data. The splits and
the model are the task's business (:mod:`demon_optim.study.tasks.digits`).
"""

from __future__ import annotations

import numpy as np

from demon_optim.study.datasets._cache import arrays_sha256
from demon_optim.study.datasets._files import DataUnavailableError

# sha256 of {images (1797, 64), labels (1797,)} as shipped with scikit-learn (see arrays_sha256).
DIGITS_SHA256 = "f9a209b1b9431b2b5462c9fdd69d05bbb7b7da1332963b25420d2781f798cad0"


def load_digits_arrays() -> dict[str, np.ndarray]:
    """The verified digits arrays: ``x`` float32 (1797, 64) and ``y`` int64 (1797,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DataUnavailableError(
            f"the digits task needs scikit-learn ({error}); install it with "
            "`pip install scikit-learn`"
        ) from None
    bunch = load_digits()
    arrays = {"x": bunch.data.astype(np.float32), "y": bunch.target.astype(np.int64)}
    digest = arrays_sha256(arrays, decimals=4)
    if digest != DIGITS_SHA256:
        raise DataUnavailableError(
            f"scikit-learn's digits have sha256 {digest}, not the recorded {DIGITS_SHA256}"
        )
    return arrays
