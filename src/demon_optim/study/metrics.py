"""Evaluation metrics of the text tasks and the GLUE score, in plain torch (no scikit-learn).

Every function takes predictions and gold values as sequences or 1-D tensors of equal,
non-zero length and returns a float. Values are fractions, not percentages: accuracy and
F1 in [0, 1], the Matthews, Pearson and Spearman correlations in [-1, 1] (GLUE's
leaderboard shows them x 100).

Undefined values are 0, as GLUE's own code (scikit-learn) gives for the Matthews
correlation and F1: a constant prediction has no correlation with anything. This is also
what keeps a trial that predicts one class (or one STS-B score) *done* with a poor metric
rather than *diverged* on a NaN.

:func:`glue_score` is the GLUE benchmark's average (Wang et al., 2018; the leaderboard's
"Score" column): each task's score is the mean of its metrics (MRPC and QQP: F1 and
accuracy; STS-B: Pearson and Spearman; CoLA: Matthews; MNLI: matched and mismatched
accuracy; the others: accuracy), and the GLUE score is the unweighted mean of the nine task
scores (the diagnostic set AX is not part of it). From the leaderboard's published BERT-base
rows this gives 78.3, its published score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

Values = Sequence[float] | Sequence[int] | torch.Tensor


def _pair(predictions: Values, targets: Values) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(predictions).detach().flatten().cpu()
    t = torch.as_tensor(targets).detach().flatten().cpu()
    if len(p) != len(t):
        raise ValueError(f"predictions and targets differ in length: {len(p)} != {len(t)}")
    if len(p) == 0:
        raise ValueError("a metric of no examples is undefined")
    return p, t


def accuracy(predictions: Values, targets: Values) -> float:
    """Fraction of exact matches, ``(1/N) sum_i [p_i == t_i]``."""
    p, t = _pair(predictions, targets)
    return float((p == t).double().mean())


def f1(predictions: Values, targets: Values, positive: int = 1) -> float:
    """Binary F1 of class ``positive``: ``2 TP / (2 TP + FP + FN)``; 0 when it has no
    true positives, false positives or false negatives (scikit-learn's value)."""
    p, t = _pair(predictions, targets)
    predicted, actual = p == positive, t == positive
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else 2 * tp / denominator


def matthews(predictions: Values, targets: Values) -> float:
    """Matthews correlation (multi-class form, Gorodkin 2004; the binary phi coefficient for
    two classes): ``(c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2))``
    with ``c`` correct, ``s`` examples, ``p_k``/``t_k`` predicted/true counts of class k; 0
    when the denominator is 0 (one class predicted or present), as GLUE's CoLA score."""
    p, t = _pair(predictions, targets)
    classes = torch.unique(torch.cat([p, t]))
    s = float(len(p))
    c = float((p == t).sum())
    p_k = torch.stack([(p == k).sum() for k in classes]).double()
    t_k = torch.stack([(t == k).sum() for k in classes]).double()
    numerator = c * s - float((p_k * t_k).sum())
    denominator = math.sqrt((s * s - float((p_k**2).sum())) * (s * s - float((t_k**2).sum())))
    return 0.0 if denominator == 0 else numerator / denominator


def pearson(predictions: Values, targets: Values) -> float:
    """Pearson correlation ``cov(p, t) / (std(p) std(t))`` in float64; 0 when either is
    constant."""
    p, t = _pair(predictions, targets)
    p, t = p.double() - p.double().mean(), t.double() - t.double().mean()
    denominator = math.sqrt(float((p * p).sum()) * float((t * t).sum()))
    return 0.0 if denominator == 0 else float((p * t).sum()) / denominator


def average_ranks(values: Values) -> torch.Tensor:
    """1-based ranks, ties sharing the mean of the ranks they span (``[10, 20, 20]`` ->
    ``[1, 2.5, 2.5]``), as float64."""
    v = torch.as_tensor(values).detach().flatten().cpu().double()
    _unique, inverse, counts = torch.unique(v, sorted=True, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based position of each value's first copy
    mean_rank = first.double() + (counts.double() + 1) / 2
    return mean_rank[inverse]


def spearman(predictions: Values, targets: Values) -> float:
    """Spearman correlation: Pearson of the average ranks (ties share their mean rank, as
    scipy's ``spearmanr``); 0 when either is constant."""
    p, t = _pair(predictions, targets)
    return pearson(average_ranks(p), average_ranks(t))


# --- the GLUE score ---------------------------------------------------------------------------

#: The nine GLUE tasks and the metrics whose mean is each task's score (metric names as the
#: glue-* tasks report them; MNLI's test split is dev-matched, ``accuracy_mismatched`` is
#: dev-mismatched).
GLUE_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy", "accuracy_mismatched"),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}


def glue_task_key(name: str) -> str:
    """A GLUE task's key in :data:`GLUE_TASK_METRICS` from any usual spelling: ``CoLA``,
    ``glue-cola``, ``SST-2``, ``STS-B``, ``MNLI-m`` ... (a ValueError for anything else)."""
    key = name.lower().removeprefix("glue-").replace("-", "").replace("_", "")
    key = {"mnlim": "mnli", "mnlimatched": "mnli"}.get(key, key)
    if key not in GLUE_TASK_METRICS:
        raise ValueError(f"glue task: got {name!r}; allowed: {', '.join(GLUE_TASK_METRICS)}")
    return key


def glue_task_score(name: str, metrics: Mapping[str, float]) -> float:
    """One GLUE task's score: the mean of its metrics (:data:`GLUE_TASK_METRICS`), in the
    scale they are given in; a ValueError naming a missing metric."""
    key = glue_task_key(name)
    needed = GLUE_TASK_METRICS[key]
    missing = [m for m in needed if m not in metrics]
    if missing:
        raise ValueError(
            f"glue task {name}: no {', '.join(missing)} among its metrics {sorted(metrics)}; "
            f"its score is the mean of {', '.join(needed)}"
        )
    return sum(float(metrics[m]) for m in needed) / len(needed)


def glue_score(per_task: Mapping[str, Mapping[str, float]], *, require_all: bool = True) -> float:
    """The GLUE score: the unweighted mean of the nine task scores (:func:`glue_task_score`).

    ``per_task`` maps a task (``"glue-cola"``, ``"CoLA"``, ...) to its test metrics as the
    glue-* tasks report them (fractions: the result is a fraction too; pass values x 100
    for the leaderboard's scale, the mean scales with them). MNLI counts once, as the mean
    of matched and mismatched accuracy, as on the leaderboard. Without all nine tasks it is
    not the GLUE score: a ValueError naming the missing ones, unless ``require_all=False``
    (then the mean over the tasks given, for partial studies).
    """
    scores: dict[str, float] = {}
    for name, metrics in per_task.items():
        key = glue_task_key(name)
        if key in scores:
            raise ValueError(f"glue task {name}: given twice")
        scores[key] = glue_task_score(name, metrics)
    missing = [key for key in GLUE_TASK_METRICS if key not in scores]
    if missing and require_all:
        raise ValueError(
            f"glue score: no results for {', '.join(missing)}; the GLUE score averages all "
            "nine tasks (require_all=False averages the tasks given)"
        )
    if not scores:
        raise ValueError("glue score: no tasks given")
    return sum(scores.values()) / len(scores)
