"""A user's own task: an MLP on the Wisconsin breast-cancer data, for demon-optim studies.

The data: the Breast Cancer Wisconsin (Diagnostic) data set, 569 fine-needle aspirates of
breast masses, 30 features each (mean, standard error and worst value of ten measurements
of the cell nuclei), labelled malignant (212) or benign (357). Made by W. H. Wolberg,
W. N. Street and O. L. Mangasarian (University of Wisconsin, 1995) and published in the UCI
Machine Learning Repository; cite W. N. Street, W. H. Wolberg and O. L. Mangasarian,
"Nuclear feature extraction for breast tumor diagnosis", IS&T/SPIE 1993. A copy ships
inside the scikit-learn wheel (``sklearn.datasets.load_breast_cancer``, scikit-learn's
BSD-3-Clause licence), so nothing is downloaded.

The splits are fixed (seed 0, independent of a trial's seed) and stratified: 20 % of each
class for test, 20 % for validation, the rest (60 %) for training. Each feature is
standardised with the *training* split's mean and standard deviation only, so nothing
about the validation or test examples leaks into training.

This file is a study plugin: ``plugins = ["tasks.py"]`` in a study file imports it, and
``@register_task`` puts the task in the registry under its ``name``.
"""

from __future__ import annotations

import pathlib

import torch

from demon_optim.study import ClassificationTask, Split, TaskData, register_task

SPLIT_SEED = 0  # fixes the split for every trial and every process
TEST_FRACTION = VAL_FRACTION = 0.2


def stratified_indices(targets: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """(train, val, test) indices: per class, a fixed shuffle cut 60 / 20 / 20."""
    generator = torch.Generator().manual_seed(seed)
    parts: tuple[list[torch.Tensor], ...] = ([], [], [])
    for label in torch.unique(targets, sorted=True):
        members = torch.nonzero(targets == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = round(TEST_FRACTION * len(members))
        n_val = round(VAL_FRACTION * len(members))
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test : n_test + n_val])
        parts[0].append(members[n_test + n_val :])
    return tuple(torch.sort(torch.cat(p)).values for p in parts)


def load_breast_cancer_data() -> TaskData:
    """The three splits, features standardised with the training split's statistics."""
    from sklearn.datasets import load_breast_cancer  # in demon-optim's [study] extra

    bunch = load_breast_cancer()
    inputs = torch.as_tensor(bunch.data, dtype=torch.float32)
    targets = torch.as_tensor(bunch.target, dtype=torch.int64)
    if inputs.shape != (569, 30):  # another version of the data would be another task
        raise ValueError(f"breast-cancer data: expected 569 x 30 features, got {inputs.shape}")
    train, val, test = stratified_indices(targets, SPLIT_SEED)
    mean = inputs[train].mean(dim=0)
    std = inputs[train].std(dim=0)
    splits = (
        Split(((inputs[index] - mean) / std).contiguous(), targets[index])
        for index in (train, val, test)
    )
    return TaskData(*splits)


@register_task
class BreastCancerMLP(ClassificationTask):
    """MLP 30-64-2 with ReLU on the breast-cancer features; 2,114 parameters.

    Splits 343 / 113 / 113 (train / val / test). About 11 steps per epoch at batch 32.
    """

    name = "breast-cancer-mlp"
    summary = "sklearn breast cancer (UCI WDBC), MLP 30-64-2 (2k params); accuracy in [0, 1]"
    data_key = "breast-cancer"  # tasks sharing it load the data once per worker
    num_classes = 2
    batch_size = 32
    epochs = 30  # the default budget; a study's `epochs` overrides it

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        # The data ships with scikit-learn: data_dir is not needed.
        return load_breast_cancer_data()

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, self.num_classes)
        )
