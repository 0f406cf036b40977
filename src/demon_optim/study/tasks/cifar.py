"""The paper's CIFAR settings: ResNet-20 on CIFAR-10 and VGG-16 (batch norm) on CIFAR-100.

Data: the python pickle batches a user extracts into the data folder
(``cifar-10-batches-py/``, ``cifar-100-python/``; see the catalogue); they cannot be
fetched on machines that reach only package registries. Every file is verified against
its published md5.

Splits: train 45,000 / val 5,000 (stratified from the official 50,000, fixed seed) / test
10,000 (official). Images stay uint8 ``[N, 3, 32, 32]``; the models standardise them with
the usual per-channel training statistics. Augmentation (He et al., 2016): random 32x32
crops of the image zero-padded by 4, and random horizontal flips.

CPU (one thread, measured): ResNet-20 ~0.55 s per batch of 128, ~3 min per epoch; VGG-16
~2.9 s per batch, ~17 min per epoch. The paper's budgets (75-300 epochs) are for GPUs; a
CPU study sets a small ``epochs``.
"""

from __future__ import annotations

import functools
import pathlib

import torch

from demon_optim.study.datasets._files import raise_on_mismatch
from demon_optim.study.datasets.catalog import require
from demon_optim.study.datasets.cifar import load_cifar10, load_cifar100
from demon_optim.study.models.resnet import CifarResNet
from demon_optim.study.models.vgg import VGG
from demon_optim.study.tasks._image import ImageClassificationTask, image_splits
from demon_optim.study.tasks.base import TaskData
from demon_optim.study.tasks.registry import register

VAL_FRACTION = 10  # 5,000 of the 50,000 training images
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


@functools.lru_cache(maxsize=2)
def _load(folder: pathlib.Path, classes: int) -> TaskData:
    train, test = (load_cifar10 if classes == 10 else load_cifar100)(folder)
    raise_on_mismatch([*train.checksums, *test.checksums], f"CIFAR-{classes}")
    val_size = len(train.labels) // VAL_FRACTION
    return image_splits(train.images, train.labels, test.images, test.labels, val_size)


def load_cifar(classes: int, data_dir: pathlib.Path | None = None) -> TaskData:
    """CIFAR-10 or CIFAR-100 as uint8 train (45k) / val (5k) / test (10k) splits."""
    name = "cifar10" if classes == 10 else "cifar100"
    return _load(require(name, data_dir).path, classes)


@register
class CIFAR10ResNet20(ImageClassificationTask):
    """ResNet-20 (option A shortcuts, 269,722 parameters) on CIFAR-10; batch 128; budgets
    75 / 150 / 300 epochs (paper, test error: Demon SGDM 8.56 / 8.21 / 7.59 %).

    Cost: ~0.55 s per batch of 128 on one CPU thread (~3 min per epoch).
    """

    name = "cifar10-resnet20"
    summary = (
        "CIFAR-10 (user files), ResNet-20 (0.27M params), 75 epochs (CPU: ~3 min/epoch, "
        "use a small budget); accuracy in [0, 1]"
    )
    target = 0.90  # the paper at 75 epochs: test error 8.6 % (Demon SGDM) to 13.6 % (Adam)
    data_key = data_set = "cifar10"
    num_classes = 10
    batch_size = 128
    epochs = 75
    crop_padding, flip = 4, True

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return load_cifar(10, data_dir)

    def build_model(self) -> torch.nn.Module:
        return CifarResNet(20, 10, "A", CIFAR10_MEAN, CIFAR10_STD)


@register
class CIFAR100VGG16(ImageClassificationTask):
    """VGG-16 with batch norm (14,774,436 parameters) on CIFAR-100; batch 128; budgets
    150 / 300 epochs (paper, test error: Demon SGDM 28.67 / 27.69 %).

    Cost: ~2.9 s per batch of 128 on one CPU thread (~17 min per epoch).
    """

    name = "cifar100-vgg16"
    summary = (
        "CIFAR-100 (user files), VGG-16 BN (15M params), 150 epochs (CPU: ~17 min/epoch, "
        "use a small budget); accuracy in [0, 1]"
    )
    target = 0.70  # the paper at 150 epochs: test error 28.7 % (Demon SGDM)
    data_key = data_set = "cifar100"
    num_classes = 100
    batch_size = 128
    epochs = 150
    crop_padding, flip = 4, True

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return load_cifar(100, data_dir)

    def build_model(self) -> torch.nn.Module:
        return VGG(100, mean=CIFAR100_MEAN, std=CIFAR100_STD)
