"""scikit-learn's bundled 8x8 digits (1797 images, 10 classes): a fast smoke-test task.

No download: the images ship inside scikit-learn (``sklearn.datasets.load_digits``), checked
against a recorded digest (:mod:`demon_optim.study.datasets.digits`). The data set is too
easy to separate optimizers well; use it to check that a study runs.

Splits, all stratified with fixed seeds (independent of the trial seed): test 450 (a quarter),
then val 270 (a fifth of the rest), train 1077. Pixels (0..16) are standardised with the
training split's scalar mean and std.
"""

from __future__ import annotations

import pathlib

import torch

from demon_optim.study.datasets.digits import load_digits_arrays
from demon_optim.study.models import MLP
from demon_optim.study.tasks.base import (
    ClassificationTask,
    Split,
    TaskData,
    standardize,
    stratified_split,
)
from demon_optim.study.tasks.registry import register

TEST_SIZE, TEST_SEED = 450, 0  # a quarter
VAL_SIZE, VAL_SEED = 270, 1  # a fifth of the rest


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
    target = 0.95  # 20 epochs here: SGDM and Adam 0.96 validation
    data_key = "digits"
    num_classes = 10
    batch_size = 100
    epochs = 20

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        # The images ship with scikit-learn, so data_dir is not needed.
        return load_digits_data()

    def build_model(self) -> torch.nn.Module:
        return MLP(64, (128,), self.num_classes)
