"""The paper's Tiny ImageNet setting: ResNet-56 with a 200-way head on 64x64 images.

Data: ``tiny-imagenet-200/`` extracted from ``tiny-imagenet-200.zip`` into the data folder
(see the catalogue); JPEG decoding needs Pillow (``pip install pillow``, an optional
dependency). The official validation set (10,000 labelled images) is the test split; the
validation split is carved from training: train 90,000 / val 10,000 (50 per class,
stratified, fixed seed) / test 10,000. Images stay uint8 ``[N, 3, 64, 64]`` (1.4 GB).
Augmentation: random 64x64 crops of the image zero-padded by 8 (the CIFAR padding of 4
scaled to 64 px: our choice) and random horizontal flips.

CPU: decoding the 110,000 JPEGs takes about a minute, and ResNet-56 at 64x64 takes
~6.8 s per batch of 128, ~80 min per epoch on one thread (measured); use a small budget.
"""

from __future__ import annotations

import functools
import pathlib

import torch

from demon_optim.study.datasets.catalog import require
from demon_optim.study.datasets.tinyimagenet import load_tinyimagenet
from demon_optim.study.models.resnet import CifarResNet
from demon_optim.study.tasks._image import ImageClassificationTask, image_splits
from demon_optim.study.tasks.base import TaskData
from demon_optim.study.tasks.registry import register

VAL_FRACTION = 10  # one training image in ten: 50 per class of 500
MEAN, STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)


@functools.lru_cache(maxsize=1)
def _load(folder: pathlib.Path) -> TaskData:
    train, test = load_tinyimagenet(folder)
    val_size = len(train.labels) // VAL_FRACTION
    return image_splits(train.images, train.labels, test.images, test.labels, val_size)


def load_tinyimagenet_data(data_dir: pathlib.Path | None = None) -> TaskData:
    """Tiny ImageNet as uint8 train (90k) / val (10k) / test (10k, official val) splits."""
    return _load(require("tinyimagenet", data_dir).path)


@register
class TinyImageNetResNet56(ImageClassificationTask):
    """ResNet-56 (option A, 865,368 parameters with the 200-way head) on Tiny ImageNet;
    batch 128; default 40 epochs (the paper uses two budgets).
    """

    name = "tinyimagenet-resnet56"
    summary = (
        "Tiny ImageNet (user files, Pillow), ResNet-56 (0.87M params), 40 epochs (CPU: "
        "~80 min/epoch, use a small budget); accuracy in [0, 1]"
    )
    target = 0.55  # below the paper's tuned SGDM methods' test accuracy at 40 epochs
    data_key = data_set = "tinyimagenet"
    num_classes = 200
    batch_size = 128
    epochs = 40
    crop_padding, flip = 8, True

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return load_tinyimagenet_data(data_dir)

    def build_model(self) -> torch.nn.Module:
        return CifarResNet(56, 200, "A", MEAN, STD)
