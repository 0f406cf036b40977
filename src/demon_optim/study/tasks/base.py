"""What a task is: data splits, a model, a loss and a metric.

A task is self-describing (DeepOBS / AlgoPerf style): the trial runner asks it for data, a fresh
model, the training loss and the evaluation metric, and knows nothing else about it.

Data is loaded once per process per ``(data_key, data_dir)`` (see :meth:`Task.load_data`),
because a worker runs many trials on the same data. The cached tensors are shared between
trials: callers must treat them as read-only.
"""

from __future__ import annotations

import abc
import pathlib
import threading
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

# Defined by the data layer, which raises it; still importable from here.
from demon_optim.study.datasets import DataUnavailableError  # noqa: F401


@dataclass(frozen=True)
class Split:
    """One data split held whole in memory (the data sets here are small).

    ``inputs[i]`` is one example, ``targets[i]`` its label (int64 class indices for
    classification tasks).
    """

    inputs: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(
                f"inputs and targets differ in length: {len(self.inputs)} != {len(self.targets)}"
            )

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class TaskData:
    """The three splits of a task.

    ``val`` is a fixed split carved from the official training data (fixed seed, independent
    of the trial seed) and is what hyperparameter selection looks at; ``test`` is the official
    test split, reported but never used for selection.
    """

    train: Split
    val: Split
    test: Split


# Per-process cache of loaded data, keyed by (data_key, data_dir). A lock so that threads of
# one worker do not generate the same data twice.
_DATA_CACHE: dict[tuple[str, str | None], TaskData] = {}
_DATA_LOCK = threading.Lock()


def clear_data_cache() -> None:
    """Forget all data loaded in this process (tests use it; trials never need it)."""
    with _DATA_LOCK:
        _DATA_CACHE.clear()


class Task(abc.ABC):
    """A model on a data set, with its loss, metric and default budget.

    Subclasses set the class attributes and implement :meth:`_load_data`,
    :meth:`build_model`, :meth:`loss` and :meth:`evaluate` (classification tasks get the
    last two from :class:`ClassificationTask`).
    """

    name: ClassVar[str]  # registry key, e.g. "mnist1d-mlp"
    summary: ClassVar[str]  # one line for `demon-optim tasks`, says the metric's unit
    metric: ClassVar[str]  # e.g. "accuracy"
    higher_is_better: ClassVar[bool]
    batch_size: ClassVar[int]  # default batch size
    epochs: ClassVar[int]  # default budget in epochs
    data_key: ClassVar[str]  # tasks with the same data_key load the same data, once

    def load_data(self, data_dir: pathlib.Path | None = None) -> TaskData:
        """Return the task's splits; deterministic, and loaded once per process per data_key."""
        key = (self.data_key, None if data_dir is None else str(pathlib.Path(data_dir)))
        with _DATA_LOCK:
            data = _DATA_CACHE.get(key)
            if data is None:
                data = self._load_data(data_dir)
                _DATA_CACHE[key] = data
        return data

    @abc.abstractmethod
    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        """Load (or generate) the data; called at most once per process per data_key."""

    @abc.abstractmethod
    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model; the caller seeds torch before calling."""

    @abc.abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss, a mean over the batch (also the recorded training loss)."""

    @abc.abstractmethod
    def evaluate(self, model: torch.nn.Module, split: Split, batch_size: int = 1000) -> float:
        """The task's metric on a whole split, in eval mode and without gradients."""

    def augment(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training-time augmentation of one batch of inputs (default: none).

        The trial loop calls it on every training batch (never on val/test) with a private
        generator seeded from the trial seed, so augmented runs stay deterministic. Image
        tasks override it with random crops and flips; it must not modify ``inputs``.
        """
        return inputs

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


class ClassificationTask(Task):
    """A classification task: cross-entropy loss, accuracy (fraction in [0, 1]) as metric."""

    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    num_classes: ClassVar[int]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy, ``-(1/B) sum_i log softmax(outputs_i)[targets_i]``."""
        return F.cross_entropy(outputs, targets)

    def evaluate(self, model: torch.nn.Module, split: Split, batch_size: int = 1000) -> float:
        """Accuracy, ``(1/N) sum_i [argmax outputs_i == targets_i]``, a fraction in [0, 1].

        Runs in eval mode under ``torch.no_grad()`` and puts the model back in the mode it
        was in.
        """
        if len(split) == 0:
            raise ValueError("cannot evaluate on an empty split")
        was_training = model.training
        model.eval()
        correct = 0
        try:
            with torch.no_grad():
                for start in range(0, len(split), batch_size):
                    inputs = split.inputs[start : start + batch_size]
                    targets = split.targets[start : start + batch_size]
                    predicted = model(inputs).argmax(dim=-1)
                    correct += int((predicted == targets).sum())
        finally:
            model.train(was_training)
        return correct / len(split)


def stratified_split(
    targets: torch.Tensor, n_held_out: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(keep, held_out)``: exactly ``n_held_out`` examples held out, stratified.

    Each class c of size n_c gives ``n_held_out * n_c / n`` examples, rounded by largest
    remainder (ties to the smaller label) so the total is exact. A private
    ``torch.Generator`` seeded with ``seed`` picks them, so the split is the same in every
    process and for every trial seed and the global RNG is untouched. Both index tensors are
    sorted: the examples keep their original order.
    """
    n = len(targets)
    if not 0 < n_held_out < n:
        raise ValueError(f"n_held_out must be in (0, {n}), got {n_held_out}")
    labels, counts = torch.unique(targets, sorted=True, return_counts=True)
    quotas = counts.double() * n_held_out / n
    taken = quotas.floor().long()
    remainders = (quotas - taken).tolist()
    by_remainder = sorted(range(len(labels)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[: n_held_out - int(taken.sum())]:
        taken[i] += 1
    generator = torch.Generator().manual_seed(seed)
    keep, held_out = [], []
    for label, n_out in zip(labels.tolist(), taken.tolist(), strict=True):
        members = torch.nonzero(targets == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held_out.append(members[:n_out])
        keep.append(members[n_out:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held_out)).values


def standardize(train: Split, *others: Split) -> tuple[Split, ...]:
    """Shift and scale every split's inputs by the training inputs' scalar mean and std.

    One scalar pair rather than per-feature statistics: pixels or time steps that are
    constant in the training data would otherwise divide by zero.
    """
    mean = train.inputs.mean()
    std = train.inputs.std()
    return tuple(
        Split(((split.inputs - mean) / std).contiguous(), split.targets)
        for split in (train, *others)
    )
