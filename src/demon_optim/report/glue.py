"""The GLUE view: each method's GLUE task scores and their average, as the paper's Table 6.

A study of the ``glue-*`` tasks gives one setting per task (per family and budget); here
each method's selected configuration per task becomes its task score (the mean of the
task's metrics, e.g. MRPC's F1 and accuracy; :func:`demon_optim.study.metrics.glue_task_score`)
and the scores of the tasks a method has are averaged: the GLUE score when it has all nine,
labelled as the average of the tasks it has otherwise. Scores are test metrics, which for
the glue-* tasks are GLUE's dev sets (their test labels are not public), x 100.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from demon_optim.report import escape, naming
from demon_optim.report.tables import Row, Setting
from demon_optim.study.metrics import GLUE_TASK_METRICS, glue_task_key, glue_task_score


@dataclass(frozen=True)
class GlueTable:
    """Methods x GLUE tasks for one family and epoch budget; ``scores[method][task]``."""

    name: str
    tasks: tuple[str, ...]  # GLUE keys present, in GLUE's order
    methods: tuple[str, ...]
    scores: dict[str, dict[str, float]]

    def average(self, method: str) -> float | None:
        values = list(self.scores[method].values())
        return sum(values) / len(values) if values else None

    def header(self) -> list[str]:
        complete = len(self.tasks) == len(GLUE_TASK_METRICS)
        return ["method", *self.tasks, "GLUE score" if complete else "average of these tasks"]

    def to_markdown(self) -> str:
        header = self.header()
        md = escape.markdown
        lines = [
            f"### {md(self.name)}",
            "",
            "| " + " | ".join(md(h) for h in header) + " |",
            "|---|" + "---:|" * (len(header) - 1),
        ]
        lines += ["| " + " | ".join(md(c) for c in line) + " |" for line in self.cells()]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """``table, method, task, score`` rows (scores x 100; task ``average`` last)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["table", "method", "task", "score"])
        for method in self.methods:
            for task in self.tasks:
                if task in self.scores[method]:
                    writer.writerow([self.name, method, task, 100 * self.scores[method][task]])
            average = self.average(method)
            if average is not None and len(self.scores[method]) == len(self.tasks):
                writer.writerow([self.name, method, "average", 100 * average])
        return buffer.getvalue()

    def cells(self) -> list[list[str]]:
        out = []
        for method in self.methods:
            row = self.scores[method]
            average = self.average(method) if len(row) == len(self.tasks) else None
            out.append(
                [
                    method,
                    *(f"{100 * row[t]:.1f}" if t in row else "-" for t in self.tasks),
                    "-" if average is None else f"{100 * average:.1f}",
                ]
            )
        return out


def _test_metrics(setting: Setting, row: Row) -> dict[str, float]:
    """A row's test metrics (means over seeds) by name, the selection metric among them."""
    values = {m.name: m.mean for m in (*row.metrics, *setting.shared) if m.where == "test"}
    values[setting.metric] = row.mean
    return {k: v for k, v in values.items() if v is not None}


def glue_tables(settings: Sequence[Setting]) -> list[GlueTable]:
    """One table per (family, epochs, batch size) that has glue-* settings."""
    groups: dict[tuple, list[tuple[str, Setting]]] = {}
    for setting in settings:
        if setting.task is None or not setting.task.startswith("glue-"):
            continue
        try:
            key = glue_task_key(setting.task)
        except ValueError:  # a user's glue-named task that is not one of GLUE's nine
            continue
        groups.setdefault((setting.family, setting.epochs, setting.batch_size), []).append(
            (key, setting)
        )
    tables = []
    for (family, epochs, batch), members in groups.items():
        order = list(GLUE_TASK_METRICS)
        members.sort(key=lambda m: order.index(m[0]))
        scores: dict[str, dict[str, float]] = {}
        for key, setting in members:
            for row in setting.rows:
                if row.mean is None:
                    continue
                try:
                    score = glue_task_score(key, _test_metrics(setting, row))
                except ValueError:  # a metric missing (a row from before the task had it)
                    continue
                scores.setdefault(row.method, {})[key] = score
        if not scores:
            continue
        label = naming.FAMILY_LABELS.get(family or "", family or "")
        tables.append(
            GlueTable(
                name=f"GLUE · {label} · {epochs} epochs · batch {batch}",
                tasks=tuple(dict.fromkeys(k for k, _ in members)),
                methods=tuple(sorted(scores, key=lambda m: -(_mean(scores[m])))),
                scores=scores,
            )
        )
    return tables


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)
