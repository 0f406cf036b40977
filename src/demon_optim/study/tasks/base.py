"""What a task is: data splits, a model, a loss and a metric.

A task is self-describing (DeepOBS / AlgoPerf style): the trial runner asks it for data, a fresh
model, the training loss, the evaluation metric and, through documented hooks with defaults
(see :class:`Task`), how it is trained: the batches of an epoch, gradient clipping and any
state carried from batch to batch. The runner knows nothing else about it.

Data is loaded once per process per ``(data_key, data_dir)`` (see :meth:`Task.load_data`),
because a worker runs many trials on the same data. The cached tensors are shared between
trials: callers must treat them as read-only.
"""

from __future__ import annotations

import abc
import math
import pathlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

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

    def to(self, device: torch.device) -> Split:
        """The split on ``device`` (itself when it is there already)."""
        if self.inputs.device == device and self.targets.device == device:
            return self
        inputs = self.inputs.to(device)
        # VAE splits hold one tensor as inputs and targets: keep them one
        targets = inputs if self.targets is self.inputs else self.targets.to(device)
        return Split(inputs, targets)


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

    def to(self, device: torch.device) -> TaskData:
        """The three splits on ``device`` (a GPU trial holds its small data sets there)."""
        return TaskData(self.train.to(device), self.val.to(device), self.test.to(device))


@dataclass(frozen=True)
class FinalOutputs:
    """What a task measures once, on the final model of a finished trial (see
    :meth:`Task.final_outputs`).

    ``metrics``: named values recorded beside the test metrics (never used for selection),
    e.g. the quality of samples drawn from a generative model. ``images``: a few outputs to
    look at, ``[N, C, H, W]`` floats in [0, 1] (C is 1 or 3); the store keeps them as 8-bit
    pixels and the report shows them as a grid per method.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    images: torch.Tensor | None = None


# Per-process cache of loaded data, keyed by (data_key, data_dir). A lock so that threads of
# one worker do not generate the same data twice.
_DATA_CACHE: dict[tuple[str, str | None], TaskData] = {}
_DATA_LOCK = threading.Lock()


def clear_data_cache() -> None:
    """Forget all data loaded in this process (tests use it; trials never need it)."""
    with _DATA_LOCK:
        _DATA_CACHE.clear()


class Task(abc.ABC):
    """A model on a data set, with its loss, metric, default budget and how it is trained.

    Subclasses set the class attributes and implement :meth:`_load_data`,
    :meth:`build_model`, :meth:`loss` and :meth:`evaluate` (classification tasks get the
    last two from :class:`ClassificationTask`).

    The trial loop (:func:`demon_optim.study.trial.run_trial`, the harness's only training
    loop) calls these hooks and nothing else; the defaults train on shuffled minibatches::

        steps = task.steps_per_epoch(train, batch_size, token_budget)  # T = epochs * steps
        model = task.build_model()                       # after torch.manual_seed(seed)
        for epoch in 1..epochs:
            model.train()
            state = task.initial_state(model, batch_size)
            for inputs, targets in task.batches(train, batch_size, shuffle,
                                                augment_generator=augment,
                                                token_budget=token_budget):
                outputs, state = task.forward(model, inputs, task.detach_state(state))
                loss = task.loss(outputs, targets)       # stops here if not finite
                zero_grad; loss.backward()
                clip_grad_norm_(parameters, task.grad_clip)   # unless grad_clip is None
                optimizer.step(); the method's per-step schedules
            val = task.evaluate(model, val_split)        # then per-epoch schedules
        test = task.evaluate(model, test_split)

    ``shuffle`` and ``augment`` are private generators seeded from the trial seed (``seed``
    and ``seed + 1_000_003``), so a trial is deterministic and augmentation never changes
    the order of the examples. Override a hook to change one part: :meth:`augment` for
    random transforms of the training batches, :meth:`steps_per_epoch` with :meth:`batches`
    for another reading order (they must agree), :meth:`initial_state` with :meth:`forward`
    for state carried from one batch to the next (truncated backpropagation through time).
    """

    name: ClassVar[str]  # registry key, e.g. "mnist1d-mlp"
    summary: ClassVar[str]  # one line for `demon-optim tasks`, says the metric's unit
    metric: ClassVar[str]  # e.g. "accuracy"
    higher_is_better: ClassVar[bool]
    batch_size: ClassVar[int]  # default batch size
    epochs: ClassVar[int]  # default budget in epochs
    data_key: ClassVar[str]  # tasks with the same data_key load the same data, once
    # Training (see the hooks below): the largest global gradient norm, clipped to after
    # every backward pass (None: no clipping); whether a study's token_budget applies.
    grad_clip: ClassVar[float | None] = None
    uses_token_budget: ClassVar[bool] = False
    # inputs are [B, C, H, W] images: a study's channels_last reaches the task's trials
    image_model: ClassVar[bool] = False
    # published results on the task's data, for the report to show beside the table (one
    # sentence that says whose, and how their protocol differs); "" for none
    published: ClassVar[str] = ""
    # the validation value of `metric` that counts as reaching the goal, for the report's
    # time to target and performance profiles (reached when val >= target, or <= target if
    # lower is better); None: no default (a study sets one in [targets])
    target: ClassVar[float | None] = None

    def load_data(self, data_dir: pathlib.Path | None = None) -> TaskData:
        """Return the task's splits; deterministic, and loaded once per process per data_key."""
        key = (self.data_key, None if data_dir is None else str(pathlib.Path(data_dir)))
        with _DATA_LOCK:
            data = _DATA_CACHE.get(key)
            if data is None:
                data = self._load_data(data_dir)
                _DATA_CACHE[key] = data
        return data

    def check_data(self, data_dir: pathlib.Path | str | None = None) -> None:
        """Called once by the driver before anything trains: raise DataUnavailableError (or a
        ConfigError) with a one-line message saying how to get the data if it is missing.

        The default checks a task whose ``data_set`` is an entry of the data catalogue
        (its files and checksums); a task of your own with files can say what it needs here,
        so that a study stops at once instead of every trial failing.
        """
        from demon_optim.study.datasets import check_task_data

        check_task_data(self, data_dir)

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

    def evaluate_metrics(
        self, model: torch.nn.Module, split: Split, batch_size: int | None = None
    ) -> dict[str, float]:
        """Every metric the task reports on a split, by name; :attr:`metric` (the one that
        selection uses) among them.

        The trial loop calls this, on the validation split after every epoch and on the test
        split at the end, and the store keeps all of them. Default: the one metric,
        ``{self.metric: self.evaluate(model, split)}`` (``batch_size`` passed on when given;
        the trial loop gives none, so each task's own evaluation default holds). A task
        with several (GLUE's MRPC: F1 and accuracy) overrides this and :meth:`evaluate`
        returns its selection metric.
        """
        if batch_size is None:
            return {self.metric: self.evaluate(model, split)}
        return {self.metric: self.evaluate(model, split, batch_size)}

    def final_outputs(
        self, model: torch.nn.Module, data: TaskData, seed: int
    ) -> FinalOutputs | None:
        """Measurements made once on the final model of a trial that finished (default:
        none); e.g. a generative model's samples and their quality.

        Called after the test evaluation, in eval mode and without gradients, with the
        trial's ``seed`` (seed a private generator from it: the outputs must be
        deterministic). Its cost counts in the trial's wall time, not in the training time
        of its history.
        """
        return None

    # --- how the trial loop trains the task (see the class docstring) ------------------------

    def steps_per_epoch(
        self, split: Split, batch_size: int, token_budget: int | None = None
    ) -> int:
        """Optimizer steps in one epoch: the batches :meth:`batches` yields for ``split``.

        The schedules are built for ``T = epochs * steps_per_epoch``, so the two must agree
        (the trial fails, naming both counts, if they do not). Default:
        ``ceil(len(split) / batch_size)``; ``token_budget`` is ``None`` unless the task
        sets :attr:`uses_token_budget`.
        """
        return math.ceil(len(split) / batch_size)

    def batches(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator,
        *,
        augment_generator: torch.Generator,
        token_budget: int | None = None,
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """The ``(inputs, targets)`` of one epoch's optimizer steps, in training order.

        Called once per epoch. ``generator`` draws the order (it carries over from epoch to
        epoch), ``augment_generator`` any random transform. Default: a random permutation
        from ``generator`` cut into batches of ``batch_size`` (the last one may be
        smaller), each batch's inputs passed through :meth:`augment`. The batches are
        gathered one at a time, so an epoch never copies the split.
        """
        order = torch.randperm(len(split), generator=generator)
        inputs, targets = split.inputs, split.targets
        for start in range(0, len(split), batch_size):
            index = order[start : start + batch_size]
            yield self.augment(inputs[index], augment_generator), targets[index]

    def augment(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training-time augmentation of one batch of inputs (default: none).

        The default :meth:`batches` calls it on every training batch (never on val/test)
        with the trial's augmentation generator, so augmented runs stay deterministic.
        Image tasks override it with random crops and flips; it must not modify ``inputs``.
        """
        return inputs

    def initial_state(self, model: torch.nn.Module, batch_size: int) -> Any:
        """State carried from one batch to the next, fresh at the start of every epoch.

        Default ``None``: batches are independent. A recurrent language model returns its
        zero hidden state here and takes it in :meth:`forward`.
        """
        return None

    def detach_state(self, state: Any) -> Any:
        """``state`` cut from the autograd graph, called before every step's forward.

        Truncated backpropagation through time: gradients stop at the batch edge while the
        values carry on. Default: every tensor in (nested) tuples, lists and dicts
        detached; ``None`` stays ``None``.
        """
        return _detached(state)

    def forward(self, model: torch.nn.Module, inputs: Any, state: Any) -> tuple[Any, Any]:
        """The training forward pass: ``(outputs, new_state)``; :meth:`loss` gets ``outputs``.

        Default: ``(model(inputs), state)``, the state passed through untouched.
        """
        return model(inputs), state

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


def _detached(state: Any) -> Any:
    if state is None:  # a stateless task, every step: answer at once
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # a named tuple
        return type(state)(*(_detached(s) for s in state))
    if isinstance(state, tuple | list):
        return type(state)(_detached(s) for s in state)
    if isinstance(state, dict):
        return {key: _detached(value) for key, value in state.items()}
    return state


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
