"""scikit-learn's bundled 8x8 digits (1797 images, 10 classes): a fast smoke-test task.

No download: the images ship inside scikit-learn (``sklearn.datasets.load_digits``). The
data set is too easy to separate optimizers well; use it to check that a study runs.

Splits, all stratified with fixed seeds (independent of the trial seed): test 450 (a quarter),
then val 270 (a fifth of the rest), train 1077. Pixels (0..16) are standardised with the
training split's scalar mean and std.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from demon_optim.study.models import MLP
from demon_optim.study.tasks._cache import arrays_sha256
from demon_optim.study.tasks.base import (
    ClassificationTask,
    DataUnavailableError,
    Split,
    TaskData,
    standardize,
    stratified_split,
)
from demon_optim.study.tasks.registry import register

# sha256 of {images (1797, 64), labels (1797,)} as shipped with scikit-learn (see arrays_sha256).
DIGITS_SHA256 = "f9a209b1b9431b2b5462c9fdd69d05bbb7b7da1332963b25420d2781f798cad0"
TEST_SIZE, TEST_SEED = 450, 0  # a quarter
VAL_SIZE, VAL_SEED = 270, 1  # a fifth of the rest


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


def load_digits_data() -> TaskData:
    """Digits as train (1077) / val (270) / test (450) splits."""
    arrays = load_digits_arrays()
    inputs, targets = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    rest, test_index = stratified_split(targets, TEST_SIZE, TEST_SEED)
    train_index, val_index = stratified_split(targets[rest], VAL_SIZE, VAL_SEED)
    train_index, val_index = rest[train_index], rest[val_index]
    splits = standardize(
        Split(inputs[train_index], targets[train_index]),
        Split(inputs[val_index], targets[val_index]),
        Split(inputs[test_index], targets[test_index]),
    )
    return TaskData(*splits)


@register
class DigitsMLP(ClassificationTask):
    """MLP 64-128-10 with ReLU on the 8x8 digits; 9,610 parameters.

    Cost: ~6 ms per epoch on one CPU thread (a default 20-epoch trial ~0.1 s); Adam lr 1e-2
    reaches ~99 % test accuracy in 10 epochs.
    """

    name = "digits-mlp"
    summary = "sklearn 8x8 digits, MLP 64-128-10 (10k params), smoke test; accuracy in [0, 1]"
    data_key = "digits"
    num_classes = 10
    batch_size = 100
    epochs = 20

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        # The images ship with scikit-learn, so data_dir is not needed.
        return load_digits_data()

    def build_model(self) -> torch.nn.Module:
        return MLP(64, (128,), self.num_classes)
