"""GLUE (Wang et al., 2018) fine-tuning on a user's own files: ``glue-cola`` ... ``glue-wnli``.

The Demon paper's transformer setting: a pretrained BERT fine-tuned on each GLUE task with
Adam (linear learning-rate warm-up then decay) against Demon Adam. Defaults are BERT's
(Devlin et al., 2019): batch 32, maximum length 128 tokens, 3 epochs.

Data (:mod:`demon_optim.study.datasets.glue`): ``<data-dir>/glue_data/<TASK>/`` (or
``<data-dir>/<TASK>/``) as ``download_glue_data.py`` writes it. Model: a Hugging Face
folder, ``<data-dir>/bert-base-uncased/`` or ``<data-dir>/model/`` (catalogue entry
``bert-model``); a subclass may set ``model_dir`` (and its own ``name`` and
``data_key``) to use another.

Protocol: GLUE's test labels are hidden, so **val** is a fixed stratified slice of the
official training set (10 %, at most 2,000 examples, seed fixed; STS-B stratified by the
rounded score) and **test** is the official dev set (MNLI: dev-matched, with
dev-mismatched reported beside it as ``accuracy_mismatched``). The numbers are therefore
dev-set numbers, as papers' fine-tuning tables usually are, not leaderboard test scores.

Metrics (``evaluate_metrics``; fractions, correlations in [-1, 1]): CoLA Matthews
correlation; MRPC and QQP F1 (of class 1) and accuracy; STS-B Pearson and Spearman;
the others accuracy. Selection metric: CoLA ``matthews``, MRPC/QQP ``f1``, STS-B
``spearman``, otherwise ``accuracy``. :func:`demon_optim.study.metrics.glue_score` turns
the nine tasks' test metrics into the GLUE score.

Cost: a BERT-base training step at batch 32 x 64 tokens takes ~19 s on one CPU thread
(docs/text-tasks.md; SST-2's 2,105 steps per epoch ~11 h): these tasks are meant for a GPU
or a cluster.
"""

from __future__ import annotations

import functools
import pathlib
from typing import ClassVar

import torch

from demon_optim.study import metrics as text_metrics
from demon_optim.study.datasets import glue as glue_data
from demon_optim.study.datasets import require
from demon_optim.study.tasks.registry import register
from demon_optim.study.tasks.text import TextSplits, TextTask, carve

VAL_FRACTION = 0.1  # of the official training set, held out as val
VAL_MAX = 2000
VAL_SEED = 15  # fixed: the same val split for every trial and process


def val_size(n_train: int) -> int:
    """Examples held out of ``n_train`` as val: 10 %, at least 1, at most 2,000."""
    return max(1, min(VAL_MAX, round(VAL_FRACTION * n_train)))


@functools.lru_cache(maxsize=2)
def _read(folder: pathlib.Path, task: str) -> dict[str, glue_data.Examples]:
    return glue_data.read_glue_task(folder, task)


class GlueTask(TextTask):
    """One GLUE task: reads its folder, carves val from train, test = the official dev set."""

    glue_task: ClassVar[str]  # a key of datasets.glue.GLUE_FOLDERS
    model_set: ClassVar[str] = "bert-model"
    num_labels: ClassVar[int] = 2

    def __init_subclass__(cls, **kwargs: object) -> None:
        # a class naming its GLUE task gets that task's catalogue entry and data key
        super().__init_subclass__(**kwargs)
        if "glue_task" in cls.__dict__:
            cls.data_set = f"glue-{cls.glue_task}"
            cls.data_key = f"glue-{cls.glue_task}"

    def read_splits(self, data_dir: pathlib.Path | None) -> TextSplits:
        files = _read(require(self.data_set, data_dir).path, self.glue_task)
        train = files["train"]
        strata = None
        if self.num_labels == 1:  # STS-B: stratified by the score rounded to 0..5
            strata = torch.tensor(train.labels).round().long()
        train, val = carve(train, val_size(len(train)), VAL_SEED, strata)
        if self.glue_task == "mnli":
            return TextSplits(
                train, val, files["dev_matched"], {"mismatched": files["dev_mismatched"]}
            )
        return TextSplits(train, val, files["dev"])


@register
class GlueCoLA(GlueTask):
    """CoLA, grammatical acceptability (8,551 train / 1,043 dev sentences); metric: Matthews
    correlation (BERT-base, GLUE test: 52.1 x 0.01)."""

    name = "glue-cola"
    summary = "GLUE CoLA, a user's BERT folder, 3 epochs (GPU/cluster); Matthews corr. in [-1, 1]"
    target = 0.50  # BERT-base (Devlin et al. 2019): 0.52 Matthews on GLUE's test set
    metric = "matthews"
    glue_task = "cola"

    def scores(self, predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"matthews": text_metrics.matthews(predicted, targets)}


@register
class GlueSST2(GlueTask):
    """SST-2, binary sentiment of movie-review phrases (67,349 train / 872 dev); accuracy."""

    name = "glue-sst2"
    summary = "GLUE SST-2, a user's BERT folder, 3 epochs (GPU/cluster); accuracy in [0, 1]"
    target = 0.91  # BERT-base: 0.935 test accuracy
    glue_task = "sst2"


class _F1AndAccuracy(GlueTask):
    metric = "f1"

    def scores(self, predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {
            "f1": text_metrics.f1(predicted, targets),
            "accuracy": text_metrics.accuracy(predicted, targets),
        }


@register
class GlueMRPC(_F1AndAccuracy):
    """MRPC, paraphrase pairs (3,668 train / 408 dev); F1 of "paraphrase" and accuracy."""

    name = "glue-mrpc"
    summary = "GLUE MRPC, a user's BERT folder, 3 epochs (GPU/cluster); F1 (+ accuracy) in [0, 1]"
    target = 0.86  # BERT-base: 0.889 test F1
    glue_task = "mrpc"
    pairs = True


@register
class GlueQQP(_F1AndAccuracy):
    """QQP, duplicate Quora questions (363,846 train / 40,430 dev); F1 and accuracy."""

    name = "glue-qqp"
    summary = "GLUE QQP, a user's BERT folder, 3 epochs (GPU/cluster); F1 (+ accuracy) in [0, 1]"
    target = 0.85  # BERT-base: about 0.88 F1 on the dev set (0.712 on GLUE's test set)
    glue_task = "qqp"
    pairs = True


@register
class GlueSTSB(GlueTask):
    """STS-B, sentence similarity scores in [0, 5] (5,749 train / 1,500 dev): regression,
    MSE loss on a 1-output head; Spearman (selection) and Pearson correlation."""

    name = "glue-stsb"
    summary = (
        "GLUE STS-B regression, a user's BERT folder, 3 epochs (GPU/cluster); Spearman "
        "(+ Pearson) in [-1, 1]"
    )
    target = 0.84  # BERT-base: 0.858 test Spearman
    metric = "spearman"
    glue_task = "stsb"
    pairs = True
    num_labels = 1

    def scores(self, predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {
            "pearson": text_metrics.pearson(predicted, targets),
            "spearman": text_metrics.spearman(predicted, targets),
        }


@register
class GlueMNLI(GlueTask):
    """MultiNLI, 3-way entailment (392,702 train / 9,815 dev-matched / 9,832
    dev-mismatched); accuracy on dev-matched (test), ``accuracy_mismatched`` beside it."""

    name = "glue-mnli"
    summary = (
        "GLUE MNLI, a user's BERT folder, 3 epochs (GPU/cluster); matched accuracy (+ "
        "mismatched) in [0, 1]"
    )
    target = 0.82  # BERT-base: 0.846 matched test accuracy
    glue_task = "mnli"
    pairs = True
    num_labels = 3


@register
class GlueQNLI(GlueTask):
    """QNLI, question / sentence entailment (104,743 train / 5,463 dev); accuracy."""

    name = "glue-qnli"
    summary = "GLUE QNLI, a user's BERT folder, 3 epochs (GPU/cluster); accuracy in [0, 1]"
    target = 0.88  # BERT-base: 0.905 test accuracy
    glue_task = "qnli"
    pairs = True


@register
class GlueRTE(GlueTask):
    """RTE, textual entailment (2,490 train / 277 dev); accuracy."""

    name = "glue-rte"
    summary = "GLUE RTE, a user's BERT folder, 3 epochs (GPU/cluster); accuracy in [0, 1]"
    target = 0.63  # BERT-base: 0.664 test accuracy
    glue_task = "rte"
    pairs = True


@register
class GlueWNLI(GlueTask):
    """WNLI, Winograd schemas as entailment (635 train / 71 dev); accuracy. Its dev set is
    adversarial to its training set (the same sentences with other hypotheses): fine-tuned
    models usually do no better than the majority class (BERT reports 65.1 on test)."""

    name = "glue-wnli"
    summary = "GLUE WNLI, a user's BERT folder, 3 epochs (GPU/cluster); accuracy in [0, 1]"
    glue_task = "wnli"
    pairs = True
