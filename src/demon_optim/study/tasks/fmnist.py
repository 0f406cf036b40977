"""Fashion-MNIST (Xiao et al., 2017): 28x28 greyscale images of 10 kinds of clothing.

Data: the four original IDX files, from ``--data-dir`` / ``$DEMON_OPTIM_DATA`` or the
Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); see
:mod:`demon_optim.study.datasets.catalog`. The decompressed files are verified against
their published md5s; a mismatch stops the study before training.

Splits: train 55,000 / val 5,000 (stratified from the official 60,000, fixed seed) / test
10,000 (official). Pixels stay uint8 ``[N, 1, 28, 28]``; the classifiers standardise them
with the training set's mean/std (0.2860 / 0.3530), the CapsNet and the VAE map them to
[0, 1].

Costs below are CPU seconds on one thread of the project machine (torch 2.13, process
time, so other load on the machine does not inflate them): training steps of a full epoch
plus the validation pass.
"""

from __future__ import annotations

import functools
import pathlib

import torch

from demon_optim.study.datasets._files import raise_on_mismatch
from demon_optim.study.datasets.catalog import require
from demon_optim.study.datasets.idx import FASHION_MNIST_MD5, load_idx_folder
from demon_optim.study.models.capsnet import CapsNet, capsule_loss
from demon_optim.study.models.cnn import ConvNet2C2D, ImageMLP
from demon_optim.study.tasks._image import ImageClassificationTask, VAETask, image_splits
from demon_optim.study.tasks.base import Split, TaskData
from demon_optim.study.tasks.registry import register

MEAN, STD = (0.2860,), (0.3530,)
VAL_FRACTION = 12  # one training image in 12: 5,000 of 60,000
NUM_CLASSES = 10


@functools.lru_cache(maxsize=4)
def _load_folder(folder: pathlib.Path) -> TaskData:
    # Cached by folder so the classifiers and the VAE share one copy of the tensors (the
    # base class caches per data_key, and the VAE has its own data_key).
    data = load_idx_folder(folder, md5s=FASHION_MNIST_MD5)
    raise_on_mismatch(list(data.checksums), "Fashion-MNIST")
    return image_splits(
        data.train_images[:, None],
        data.train_labels,
        data.test_images[:, None],
        data.test_labels,
        len(data.train_labels) // VAL_FRACTION,
    )


def load_fashion_mnist(data_dir: pathlib.Path | None = None) -> TaskData:
    """Fashion-MNIST as uint8 train (55k) / val (5k) / test (10k) splits with labels."""
    return _load_folder(require("fashion-mnist", data_dir).path)


class _FashionMNISTTask(ImageClassificationTask):
    data_key = "fashion-mnist"
    data_set = "fashion-mnist"
    num_classes = NUM_CLASSES
    batch_size = 128
    epochs = 100  # DeepOBS's budget for its Fashion-MNIST problems

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return load_fashion_mnist(data_dir)


@register
class FashionMNISTMLP(_FashionMNISTTask):
    """DeepOBS ``fmnist_mlp``: 784-1000-500-100-10, ReLU; 1,336,610 parameters. Batch 128.

    Cost: ~13 ms per step, ~6 s per epoch on one CPU thread.
    """

    name = "fmnist-mlp"
    summary = "Fashion-MNIST, MLP 784-1000-500-100-10 (1.3M params), 100 epochs; accuracy in [0, 1]"
    target = 0.89  # Adam and SGDM pass 0.89 validation by epoch 6 here

    def build_model(self) -> torch.nn.Module:
        return ImageMLP(784, (1000, 500, 100), NUM_CLASSES, MEAN, STD)


@register
class FashionMNISTCNN(_FashionMNISTTask):
    """DeepOBS ``fmnist_2c2d``: two 5x5 convs (32, 64) with max pooling, dense 1024, 10;
    3,274,634 parameters. Batch 128. Published test accuracy ~91-93 % at DeepOBS's budget.

    Cost: ~130 ms per step, ~1 min per epoch on one CPU thread; a CPU study uses a few
    epochs.
    """

    name = "fmnist-cnn"
    summary = (
        "Fashion-MNIST, DeepOBS 2c2d CNN (3.3M params), 100 epochs (CPU: ~1 min/epoch, use "
        "fewer); accuracy in [0, 1]"
    )
    target = 0.91  # 100 epochs here: Adam peaks at 0.924 validation; DeepOBS 0.91-0.93

    def build_model(self) -> torch.nn.Module:
        return ConvNet2C2D(NUM_CLASSES, MEAN, STD)


@register
class FashionMNISTCapsNet(_FashionMNISTTask):
    """The paper's CapsNet / Fashion-MNIST setting (Adam family only): Sabour et al.'s
    network with 3 routing iterations and the reconstruction decoder; 8,215,568 parameters.
    Batch 128; budgets 50 / 100 epochs (paper: Adam 9.27 / 9.25 % test error, Demon Adam
    8.88 / 8.87 %). Augmentation: shifts of up to 2 pixels (zero fill), as Sabour et al.

    Cost: ~3.5 s per batch of 128 on one CPU thread (~26 min per epoch, evaluating the
    5,000 validation images ~50 s): on a CPU only tiny epoch budgets are practical.
    """

    name = "fmnist-capsnet"
    summary = (
        "Fashion-MNIST, CapsNet with routing + decoder (8.2M params), Adam family, 50 epochs "
        "(CPU: ~26 min/epoch, use tiny budgets); accuracy in [0, 1]"
    )
    target = 0.90  # the paper: Adam 0.907, Demon Adam 0.911 test at 50 epochs
    epochs = 50
    crop_padding = 2

    def build_model(self) -> torch.nn.Module:
        return CapsNet(NUM_CLASSES)

    def loss(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        """Margin loss + 0.0005 x reconstruction sum of squares, mean over the batch."""
        return capsule_loss(outputs, targets)

    def evaluate(self, model: torch.nn.Module, split: Split, batch_size: int = 100) -> float:
        """Accuracy of ``argmax_j |v_j|``; small batches (routing tensors are ~0.7 MB/image)."""
        if len(split) == 0:
            raise ValueError("cannot evaluate on an empty split")
        was_training = model.training
        model.eval()
        correct = 0
        try:
            with torch.no_grad():
                for start in range(0, len(split), batch_size):
                    inputs = split.inputs[start : start + batch_size]
                    predicted = model(inputs).lengths.argmax(dim=-1)
                    correct += int((predicted == split.targets[start : start + batch_size]).sum())
        finally:
            model.train(was_training)
        return correct / len(split)


@register
class FashionMNISTVAE(VAETask):
    """The paper's VAE (784-500-500-2 / 2-500-500-784, Bernoulli) on Fashion-MNIST;
    1,289,788 parameters. Batch 100, 50 epochs; metric: test negative ELBO, nats per image.

    Cost: ~12 ms per step, ~7 s per epoch on one CPU thread.
    """

    name = "fmnist-vae"
    summary = "Fashion-MNIST, VAE 784-500-500-2 (1.3M params), 50 epochs; neg. ELBO, nats/image"
    target = 260.0  # 50 epochs here: best validation 252.4 (Adam), 251.3 (Demon Adam)
    data_key = "fashion-mnist/vae"
    data_set = "fashion-mnist"

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return self.reconstruction_splits(load_fashion_mnist(data_dir))
