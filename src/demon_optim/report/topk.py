"""The paper's Top-1 / Top-3 statistic across settings.

For each setting (task x family x budget) the methods are ranked by their test metric
(:mod:`demon_optim.report.tables`: competition ranks, ties share a rank, so every method
tied for first is a Top-1 and every method ranked 1, 2 or 3 is a Top-3). Counts are added
up by schedule name across families (:func:`demon_optim.report.naming.schedule_name`:
Demon SGDM and Demon Adam both count for "demon"), each schedule once per setting (at its
best rank, should two methods of the setting declare one schedule). Percentages are of the
settings the statistic covers (those with at least one ranked method), as the paper's 28
experiments; ``settings`` per method says in how many of them it took part (it may be fewer).
Reference optimizers are not ranked, so they are not in this table, unless ``rank_all``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from demon_optim.report import escape, naming
from demon_optim.report.tables import Setting


@dataclass(frozen=True)
class TopKRow:
    method: str  # the schedule name, e.g. "demon"
    top1: int
    top3: int
    settings: int  # settings in which it took part in the ranking

    @property
    def label(self) -> str:
        return naming.label(self.method)


@dataclass(frozen=True)
class TopK:
    rows: tuple[TopKRow, ...]
    settings: int  # settings covered: with at least one ranked method

    def percent(self, count: int) -> float:
        return 100.0 * count / self.settings if self.settings else 0.0


def top_k(settings: Sequence[Setting]) -> TopK:
    """Top-1 and Top-3 counts per schedule name over ``settings`` (ranks already set)."""
    counts: dict[str, list[int]] = {}
    covered = 0
    for setting in settings:
        taking_part = [row for row in setting.rows if row.ranked]
        if not any(row.rank is not None for row in taking_part):
            continue
        covered += 1
        # one entry per schedule and setting: two methods of a family that declare the same
        # schedule (a user's method with schedule="lr-cosine") count once, at the better rank
        best: dict[str, int | None] = {}
        for row in taking_part:
            if row.schedule not in best or _better(row.rank, best[row.schedule]):
                best[row.schedule] = row.rank
        for schedule, rank in best.items():
            entry = counts.setdefault(schedule, [0, 0, 0])
            entry[0] += rank == 1
            entry[1] += rank is not None and rank <= 3
            entry[2] += 1
    rows = [TopKRow(name, top1, top3, n) for name, (top1, top3, n) in counts.items()]
    rows.sort(key=lambda r: (-r.top1, -r.top3, -r.settings, r.method))
    return TopK(tuple(rows), covered)


def _better(rank: int | None, than: int | None) -> bool:
    return rank is not None and (than is None or rank < than)


def to_csv(table: TopK) -> str:
    """``method,top1,top3,settings`` (counts), best first; names safe for spreadsheets."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "top1", "top3", "settings"])
    for row in table.rows:
        writer.writerow([escape.csv_cell(row.method), row.top1, row.top3, row.settings])
    return buffer.getvalue()


def header_and_cells(table: TopK) -> tuple[list[str], list[list[str]]]:
    header = ["method", "Top-1", "Top-1 %", "Top-3", "Top-3 %", "settings"]
    cells = [
        [
            row.method if row.label == row.method else f"{row.label} ({row.method})",
            str(row.top1),
            f"{table.percent(row.top1):.2f} %",
            str(row.top3),
            f"{table.percent(row.top3):.2f} %",
            str(row.settings),
        ]
        for row in table.rows
    ]
    return header, cells


def to_markdown(table: TopK) -> str:
    header, cells = header_and_cells(table)
    lines = [
        f"Over {table.settings} setting(s); percentages are of those settings.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(escape.markdown(c) for c in line) + " |" for line in cells]
    return "\n".join(lines) + "\n"
