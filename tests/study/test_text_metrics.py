"""The text tasks' metrics and the GLUE score, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from demon_optim.study import metrics

P, T = [1, 0, 1, 1], [1, 1, 1, 0]  # TP 2, FP 1, FN 1, TN 0


def test_accuracy_and_f1() -> None:
    assert metrics.accuracy(P, T) == 0.5
    assert metrics.f1(P, T) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2/3
    assert metrics.f1(P, T, positive=0) == 0.0  # class 0: no true positive
    assert metrics.f1([0, 0], [0, 0]) == 0.0  # no positives anywhere: 0, as scikit-learn
    assert metrics.accuracy(torch.tensor([2, 1]), torch.tensor([2, 0])) == 0.5


def test_matthews() -> None:
    # (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (0 - 1) / sqrt(3 * 3 * 1 * 1)
    assert metrics.matthews(P, T) == pytest.approx(-1 / 3)
    # TP 2, FP 1, TN 2, FN 1: (4 - 1) / sqrt(3^4) = 1/3
    assert metrics.matthews([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]) == pytest.approx(1 / 3)
    assert metrics.matthews([1, 1, 1], [0, 1, 0]) == 0.0  # one class predicted: 0, as GLUE
    assert metrics.matthews([0, 1], [0, 1]) == 1.0
    # 3 classes: c=2, s=4, p_k=(2,1,1), t_k=(1,2,1): (8 - 5) / sqrt((16 - 6)(16 - 6)) = 0.3
    assert metrics.matthews([0, 1, 2, 0], [0, 1, 1, 2]) == pytest.approx(0.3)


def test_pearson_and_spearman() -> None:
    # deviations (-1, 0, 1) and (-5/3, -2/3, 7/3): 4 / sqrt(2 * 78/9) = 12 / sqrt(156)
    assert metrics.pearson([1, 2, 3], [1, 2, 5]) == pytest.approx(12 / math.sqrt(156))
    assert metrics.pearson([1.0, 1.0, 1.0], [1, 2, 3]) == 0.0  # constant: undefined -> 0
    assert metrics.average_ranks([10, 20, 20]).tolist() == [1.0, 2.5, 2.5]
    assert metrics.average_ranks([3.0, 1.0, 2.0]).tolist() == [3.0, 1.0, 2.0]
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert metrics.spearman([1, 2, 3], [10, 100, 1000]) == pytest.approx(1.0)  # monotone
    assert metrics.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)


def test_metrics_reject_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="differ in length: 2 != 1"):
        metrics.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="no examples"):
        metrics.pearson([], [])


# BERT-base on the GLUE leaderboard (Devlin et al., 2019, Table 1): score 78.3
BERT_BASE = {
    "CoLA": {"matthews": 52.1},
    "SST-2": {"accuracy": 93.5},
    "MRPC": {"f1": 88.9, "accuracy": 84.8},
    "STS-B": {"pearson": 87.1, "spearman": 85.8},
    "QQP": {"f1": 71.2, "accuracy": 89.2},
    "MNLI": {"accuracy": 84.6, "accuracy_mismatched": 83.4},
    "QNLI": {"accuracy": 90.5},
    "RTE": {"accuracy": 66.4},
    "WNLI": {"accuracy": 65.1},
}


def test_glue_score_reproduces_the_published_bert_base_score() -> None:
    assert round(metrics.glue_score(BERT_BASE), 1) == 78.3
    fractions = {t: {m: v / 100 for m, v in ms.items()} for t, ms in BERT_BASE.items()}
    assert metrics.glue_score(fractions) == pytest.approx(metrics.glue_score(BERT_BASE) / 100)
    assert metrics.glue_task_score("glue-mrpc", {"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
    assert metrics.glue_task_score("mnli", {"accuracy": 0.8, "accuracy_mismatched": 0.7}) == (
        pytest.approx(0.75)
    )


def test_glue_score_names_what_is_missing() -> None:
    partial = {"glue-cola": {"matthews": 0.5}, "glue-rte": {"accuracy": 0.7}}
    with pytest.raises(ValueError, match="no results for sst2, mrpc"):
        metrics.glue_score(partial)
    assert metrics.glue_score(partial, require_all=False) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="no f1 among its metrics"):
        metrics.glue_task_score("glue-qqp", {"accuracy": 0.9})
    with pytest.raises(ValueError, match="glue task: got 'imdb'"):
        metrics.glue_task_key("imdb")
    with pytest.raises(ValueError, match="given twice"):
        metrics.glue_score({"CoLA": {"matthews": 1}, "glue-cola": {"matthews": 1}})
