"""The small classifier that scores generated images (in place of Inception-v3, whose
weights cannot be had here), trained once per data set and cached on disk.

:class:`FeatureClassifier`: two 3x3 conv layers (32, 64 channels) each with ReLU and 2x2
max pooling, a dense layer of 128 ReLU units (the features KID and FID use) and the class
logits. Inputs are floats in [0, 1] (clamped), ``[B, C, H, W]`` with ``H, W`` divisible by 4.

:func:`trained_classifier` trains it on a training split (Adam, lr 1e-3, batch 128,
``epochs`` passes, seed :data:`SEED`, a private generator for the order; the global RNG is
left as it was) and caches the weights under the harness's cache folder
(:func:`~demon_optim.study.datasets._cache.cache_dir` ``/sample-classifier/``) keyed by
the sha256 of the training images and labels, the training settings and
:data:`VERSION`: the same data always gets the same classifier, and a change to this
module bumps :data:`VERSION`. The file is written atomically, so two workers that build
it at once both end with a whole file (the last one's; they trained the same way).
"""

from __future__ import annotations

import hashlib
import pathlib

import torch
import torch.nn.functional as F
from torch import nn

from demon_optim.study.datasets._cache import arrays_sha256, cache_dir, load_arrays, save_arrays
from demon_optim.study.models.layers import to_unit_interval

VERSION = 1  # bump when the architecture or the training changes
SEED = 0
FEATURES = 128


class FeatureClassifier(nn.Module):
    """conv32-pool-conv64-pool-dense128-logits; :meth:`features` is the dense layer."""

    def __init__(self, channels: int, size: int, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.dense = nn.Linear(64 * (size // 4) ** 2, FEATURES)
        self.logits = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = 2 * to_unit_interval(x).clamp(0, 1) - 1
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.dense(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x))


def _train(
    images: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int
) -> FeatureClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = FeatureClassifier(images.shape[1], images.shape[-1], classes).to(images.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(SEED)
    model.train()
    with torch.enable_grad(), torch.autocast(images.device.type, enabled=False):
        for _ in range(epochs):
            for index in torch.randperm(len(images), generator=order).split(128):
                index = index.to(images.device)
                loss = F.cross_entropy(model(images[index]), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


def classifier_path(
    images: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int
) -> pathlib.Path:
    """Where the classifier of this training split is cached."""
    data = arrays_sha256({"images": images.cpu().numpy(), "labels": labels.cpu().numpy()})
    key = hashlib.sha256(f"{data}:{classes}:{epochs}:{VERSION}".encode()).hexdigest()[:24]
    return cache_dir() / "sample-classifier" / f"v{VERSION}-{key}.npz"


def trained_classifier(
    images: torch.Tensor, labels: torch.Tensor, classes: int = 10, epochs: int = 2
) -> FeatureClassifier:
    """The classifier for ``images`` ``[N, C, H, W]`` (uint8 or [0, 1]) with ``labels``,
    from the cache or trained now (and cached); in eval mode, on the images' device."""
    path = classifier_path(images, labels, classes, epochs)
    model = FeatureClassifier(images.shape[1], images.shape[-1], classes)
    arrays = load_arrays(path)
    state = model.state_dict()
    if (
        arrays is not None
        and set(arrays) == set(state)
        and all(arrays[k].shape == tuple(v.shape) for k, v in state.items())
    ):
        model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
        return model.to(images.device).eval()
    model = _train(images, labels, classes, epochs)
    save_arrays(path, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    return model


@torch.no_grad()
def classify(
    model: FeatureClassifier, images: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(class probabilities [N, K], features [N, 128])`` of ``images``, float64 on the CPU."""
    probabilities, features = [], []
    with torch.autocast(images.device.type, enabled=False):
        for chunk in images.split(batch_size):
            h = model.features(chunk)
            probabilities.append(F.softmax(model.logits(h), dim=1).double().cpu())
            features.append(h.double().cpu())
    return torch.cat(probabilities), torch.cat(features)


def accuracy(model: FeatureClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The classifier's accuracy on labelled images (a check that it learned its data)."""
    probabilities, _ = classify(model, images)
    return float((probabilities.argmax(dim=1) == labels.cpu()).double().mean())
