"""Shared pieces of the image tasks: uint8 splits, augmentation, the VAE task.

Image data stays uint8 ``[N, C, H, W]`` in memory (a quarter of float32: CIFAR-10 is 184 MB
instead of 737 MB, Tiny ImageNet 1.4 GB instead of 5.4 GB); every model starts with a
fixed standardisation layer (:class:`~demon_optim.study.models.layers.PixelStandardize`)
or maps pixels to [0, 1] itself, and augmentation works on the bytes.

Validation splits are carved from the official training set with
:func:`~demon_optim.study.tasks.base.stratified_split` (fixed seed, independent of the
trial seed); the official test set is the test split.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from demon_optim.study.datasets.augment import random_crop_flip
from demon_optim.study.models.vae import VAE, negative_elbo
from demon_optim.study.tasks.base import (
    ClassificationTask,
    Split,
    Task,
    TaskData,
    stratified_split,
)

VAL_SEED = 0
EVAL_NOISE_SEED = 0  # the VAE's metric uses the same latent noise for every evaluation


def image_splits(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    val_size: int,
    val_seed: int = VAL_SEED,
) -> TaskData:
    """uint8 image splits: ``val_size`` stratified examples of the training set held out."""
    images = torch.from_numpy(np.ascontiguousarray(train_images))
    labels = torch.from_numpy(np.ascontiguousarray(train_labels, dtype=np.int64))
    keep, held_out = stratified_split(labels, val_size, val_seed)
    return TaskData(
        train=Split(images[keep], labels[keep]),
        val=Split(images[held_out], labels[held_out]),
        test=Split(
            torch.from_numpy(np.ascontiguousarray(test_images)),
            torch.from_numpy(np.ascontiguousarray(test_labels, dtype=np.int64)),
        ),
    )


class ImageClassificationTask(ClassificationTask):
    """A classification task on uint8 images with random-crop / flip augmentation.

    ``crop_padding`` pixels of zero padding before a random crop of the original size (0:
    no crop), ``flip``: random left-right mirroring. See
    :func:`~demon_optim.study.datasets.augment.random_crop_flip`.
    """

    crop_padding: ClassVar[int] = 0
    flip: ClassVar[bool] = False
    image_model: ClassVar[bool] = True
    data_set: ClassVar[str]  # the catalogue entry this task's data comes from

    def augment(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A randomly shifted and mirrored copy of the batch (inputs untouched)."""
        if self.crop_padding == 0 and not self.flip:
            return inputs
        return random_crop_flip(inputs, generator, padding=self.crop_padding, flip=self.flip)


class VAETask(Task):
    """The paper's VAE on 28x28 images: the metric is the negative ELBO in nats per image.

    Targets are the inputs themselves (``Split(images, images)``, the same tensor). The
    training loss is the batch mean of the negative ELBO with one latent sample from
    torch's global RNG (seeded by the trial); the metric is its mean over a split with one
    sample per image drawn from a private generator with a fixed seed, so the number does
    not depend on the batch size or on earlier draws, and the global RNG is untouched.
    """

    metric: ClassVar[str] = "neg. ELBO (nats)"
    higher_is_better: ClassVar[bool] = False
    batch_size: ClassVar[int] = 100
    epochs: ClassVar[int] = 50
    data_set: ClassVar[str]

    def build_model(self) -> torch.nn.Module:
        return VAE(784, 500, 2)

    @staticmethod
    def reconstruction_splits(data: TaskData) -> TaskData:
        """The classification splits with targets replaced by the inputs (no copy)."""
        return TaskData(*(Split(s.inputs, s.inputs) for s in (data.train, data.val, data.test)))

    def loss(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the per-image negative ELBO (nats)."""
        return negative_elbo(outputs, targets).mean()

    def evaluate(self, model: torch.nn.Module, split: Split, batch_size: int = 1000) -> float:
        """Mean negative ELBO per image over ``split`` (one fixed-seed latent sample each)."""
        if len(split) == 0:
            raise ValueError("cannot evaluate on an empty split")
        was_training = model.training
        model.eval()
        total = 0.0
        generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
        noise = torch.randn(len(split), model.latent, generator=generator)
        try:
            with torch.no_grad():
                for start in range(0, len(split), batch_size):
                    inputs = split.inputs[start : start + batch_size]
                    output = model(inputs, noise[start : start + batch_size])
                    total += float(negative_elbo(output, inputs).sum())
        finally:
            model.train(was_training)
        return total / len(split)
