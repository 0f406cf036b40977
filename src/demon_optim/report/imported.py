"""Published results imported into a store, shown beside the user's own and never mixed in.

Imported trials (``origin`` set; :mod:`demon_optim.study.imports`) are left out of every view
that selects or ranks the user's trials (tables, Top-k, heatmaps, their curves). They get:

* a section of their own, one table per (format, task, epoch budget, batch size, metric):
  per method, the configuration with the best mean validation metric over its seeds among
  those whose every seed finished, as the harness selects (:mod:`demon_optim.study.results`),
  with its test metric (mean ± sample std over seeds), the number of seeds and, where the
  source timed training (AlgoPerf), the mean training time of those seeds. Rows are sorted
  best first but not ranked: published numbers come from other code, data pipelines and
  hardware, so a rank against the user's would claim more than they show;
* one figure per table: the validation metric of each selected configuration against epochs
  (DeepOBS: mean over seeds, min-max shaded) or against training time (AlgoPerf: its
  evaluations are timed, not per epoch; one line per seed);
* in the validation figure of a user's setting whose task and metric are the same as an
  imported table's, the imported per-epoch curves, dashed, labelled ``imported: <method>``.

Names in imported files are free text; they are escaped like every name in the report
(:mod:`demon_optim.report.escape`), and file names come from
:func:`demon_optim.report.naming.file_stems`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demon_optim.report import curves as curves_module
from demon_optim.report import escape, naming
from demon_optim.report.escape import mathtext
from demon_optim.report.load import StoreData, Trial
from demon_optim.report.tables import Setting, number
from demon_optim.study.methods import format_config
from demon_optim.study.methods.hyperparameters import jsonable

LABEL = "imported"
"""How imported rows and curves are labelled wherever they appear beside the user's."""


@dataclass(frozen=True)
class ImportedRow:
    """One imported method in one imported table."""

    method: str
    selected: str  # the selected configuration as printed ("" when none)
    test_mean: float | None
    test_std: float | None  # None with one seed
    val_mean: float | None
    seeds: int
    configs: int
    trials: int
    diverged: int
    time_s: float | None  # mean training time of the selected seeds (None: not recorded)
    trial_ids: tuple[str, ...] = ()  # the selected configuration's trials
    files: tuple[str, ...] = ()  # the files they came from


@dataclass(frozen=True)
class ImportedTable:
    """The imported methods of one (format, task, epochs, batch size, metric)."""

    name: str
    slug: str  # file stem, unique among the imported tables
    format: str
    task: str
    metric: str
    higher_is_better: bool
    epochs: int  # 0: the source budgets steps or time (AlgoPerf)
    rows: tuple[ImportedRow, ...]

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def timed(self) -> bool:
        return any(row.time_s is not None for row in self.rows)

    def header(self) -> list[str]:
        with_std = any(row.test_std is not None for row in self.rows)
        test = f"test {self.metric}" + (" (mean ± std)" if with_std else "")
        header = ["method", "selected hyperparameters", test, f"val {self.metric}", "seeds"]
        header += ["configs", "diverged"]
        return header + (["training time (s)"] if self.timed else [])

    def cells(self) -> list[list[str]]:
        out = []
        for row in self.rows:
            if row.test_mean is None:
                test = "no configuration finished on every seed" if row.val_mean is None else "-"
            elif row.test_std is None:
                test = number(row.test_mean)
            else:
                test = f"{number(row.test_mean)} ± {number(row.test_std)}"
            line = [
                f"{LABEL}: {row.method}",
                row.selected or "-",
                test,
                number(row.val_mean),
                str(row.seeds),
                str(row.configs),
                str(row.diverged),
            ]
            if self.timed:
                line.append("-" if row.time_s is None else f"{row.time_s:.1f}")
            out.append(line)
        return out

    def to_markdown(self) -> str:
        md = escape.markdown
        header = self.header()
        lines = [
            f"### {md(self.name)} ({md(self.metric)}, {self.direction})",
            "",
            "| " + " | ".join(md(h) for h in header) + " |",
            "|---|---|" + "---:|" * (len(header) - 2),
        ]
        lines += ["| " + " | ".join(md(c) for c in line) + " |" for line in self.cells()]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """``table, format, task, method, selected, test_mean, test_std, val_mean, seeds,
        configs, trials, diverged, time_s, files`` (files: the selected configuration's
        source files, ``;``-separated); text made safe for spreadsheets."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in self.rows:
            cells = [
                self.name,
                self.format,
                self.task,
                row.method,
                row.selected,
                _csv(row.test_mean),
                _csv(row.test_std),
                _csv(row.val_mean),
                row.seeds,
                row.configs,
                row.trials,
                row.diverged,
                _csv(row.time_s),
                ";".join(row.files),
            ]
            writer.writerow([escape.csv_cell(c) for c in cells])
        return buffer.getvalue()


CSV_COLUMNS = (
    "table",
    "format",
    "task",
    "method",
    "selected",
    "test_mean",
    "test_std",
    "val_mean",
    "seeds",
    "configs",
    "trials",
    "diverged",
    "time_s",
    "files",
)


def _csv(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _config_key(trial: Trial) -> str:
    hyper = {k: jsonable(v) for k, v in trial.hyperparameters.items()}
    return json.dumps(hyper, sort_keys=True)


def _final_time(trial: Trial) -> float | None:
    """Training time at the last evaluation, where the source recorded one."""
    if not trial.history:
        return None
    value = trial.history[-1].get("elapsed_s")
    return None if value is None else float(value)


def _row(method: str, trials: Sequence[Trial], higher_is_better: bool) -> ImportedRow:
    configs: dict[str, list[Trial]] = {}
    for trial in trials:
        configs.setdefault(_config_key(trial), []).append(trial)
    diverged = sum(1 for t in trials if t.status == "diverged")
    best: tuple[float, list[Trial]] | None = None
    for group in configs.values():
        if any(t.status != "done" or t.val_metric is None for t in group):
            continue
        val = statistics.fmean(float(t.val_metric) for t in group)  # type: ignore[arg-type]
        if best is None or (val > best[0] if higher_is_better else val < best[0]):
            best = (val, group)
    if best is None:
        return ImportedRow(
            method, "", None, None, None, 0, len(configs), len(trials), diverged, None
        )
    val, chosen = best
    chosen = sorted(chosen, key=lambda t: t.seed)
    tests = [float(t.test_metric) for t in chosen if t.test_metric is not None]
    times = [x for x in (_final_time(t) for t in chosen) if x is not None]
    return ImportedRow(
        method=method,
        selected=format_config(chosen[0].hyperparameters),
        test_mean=statistics.fmean(tests) if tests else None,
        test_std=statistics.stdev(tests) if len(tests) > 1 else None,
        val_mean=val,
        seeds=len(chosen),
        configs=len(configs),
        trials=len(trials),
        diverged=diverged,
        time_s=statistics.fmean(times) if len(times) == len(chosen) else None,
        trial_ids=tuple(t.trial_id for t in chosen),
        files=tuple(str((t.source or {}).get("file", "")) for t in chosen),
    )


def _group_key(trial: Trial) -> tuple[str, str, int, int, str, bool]:
    fmt = (trial.origin or "").split(":", 1)[-1] or trial.family
    about = trial.about
    return (fmt, trial.task, trial.epochs, trial.batch_size, about.metric, about.higher_is_better)


def imported_tables(data: StoreData) -> list[ImportedTable]:
    """One table per (format, task, epochs, batch size, metric) of the imported trials."""
    groups: dict[tuple[str, str, int, int, str, bool], list[Trial]] = {}
    for trial in data.imported:
        groups.setdefault(_group_key(trial), []).append(trial)
    keys = sorted(groups, key=lambda k: (k[1], k[0], k[2], k[3], k[4]))
    names, slugs = [], []
    for fmt, task, epochs, batch, metric, _ in keys:
        parts, slug = [f"{LABEL}: {task}", fmt], f"{fmt}_{task}"
        if epochs:
            parts.append(f"{epochs} epochs")
            slug += f"_{epochs}ep"
        if batch:
            parts.append(f"batch {batch}")
            slug += f"_b{batch}"
        if sum(1 for k in keys if k[:4] == (fmt, task, epochs, batch)) > 1:
            parts.append(metric)
            slug += f"_{metric}"
        names.append(" · ".join(parts))
        slugs.append(slug)
    stems = naming.file_stems(slugs)
    tables = []
    for key, name, stem in zip(keys, names, stems, strict=True):
        fmt, task, epochs, _, metric, higher = key
        by_method: dict[str, list[Trial]] = {}
        for trial in groups[key]:
            by_method.setdefault(trial.method, []).append(trial)
        rows = [_row(m, trials, higher) for m, trials in by_method.items()]
        sign = -1.0 if higher else 1.0
        rows.sort(key=lambda r: (r.test_mean is None, sign * (r.test_mean or 0.0), r.method))
        tables.append(ImportedTable(name, stem, fmt, task, metric, higher, epochs, tuple(rows)))
    return tables


# --- curves ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedCurve:
    """One imported method's selected configuration: validation metric per evaluation."""

    method: str
    x: tuple[np.ndarray, ...]  # per seed (AlgoPerf: training time) or one mean (per epoch)
    y: tuple[np.ndarray, ...]
    low: np.ndarray | None  # min-max over seeds, per-epoch curves only
    high: np.ndarray | None
    seeds: int
    per_epoch: bool


def _column(history: Sequence[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in history])


def table_curves(data: StoreData, table: ImportedTable) -> list[ImportedCurve]:
    """The curves of every selected configuration of ``table``."""
    by_id = {t.trial_id: t for t in data.imported}
    out = []
    for row in table.rows:
        chosen = [by_id[i] for i in row.trial_ids if i in by_id and by_id[i].history]
        if not chosen:
            continue
        per_epoch = all("epoch" in t.history[0] for t in chosen)
        if per_epoch:
            length = min(len(t.history) for t in chosen)
            vals = np.stack([_column(t.history[:length], "val_metric") for t in chosen])
            x = _column(chosen[0].history[:length], "epoch")
            mean, low, high = vals.mean(axis=0), vals.min(axis=0), vals.max(axis=0)
            out.append(ImportedCurve(row.method, (x,), (mean,), low, high, len(chosen), True))
        elif all("elapsed_s" in t.history[0] for t in chosen):
            xs = tuple(_column(t.history, "elapsed_s") for t in chosen)
            ys = tuple(_column(t.history, "val_metric") for t in chosen)
            out.append(ImportedCurve(row.method, xs, ys, None, None, len(chosen), False))
    return out


def overlay(
    data: StoreData, tables: Sequence[ImportedTable], setting: Setting
) -> list[curves_module.Curve]:
    """Imported per-epoch curves for a user's setting of the same task and metric, as
    :class:`~demon_optim.report.curves.Curve` records labelled ``imported: <method>``."""
    out = []
    for table in tables:
        if table.task != setting.task or table.metric != setting.metric:
            continue
        for curve in table_curves(data, table):
            if not curve.per_epoch:
                continue
            nan = np.full_like(curve.y[0], np.nan)
            out.append(
                curves_module.Curve(
                    method=f"{LABEL}: {curve.method} ({table.format})",
                    schedule=f"{LABEL}:{table.format}:{curve.method}",
                    epochs=curve.x[0],
                    mean=curve.y[0],
                    low=curve.low if curve.low is not None else curve.y[0],
                    high=curve.high if curve.high is not None else curve.y[0],
                    seeds=curve.seeds,
                    lr=nan,
                    momentum=nan,
                )
            )
    return out


def draw(table: ImportedTable, lines: Sequence[ImportedCurve]):  # -> Figure
    """The validation metric of each imported method's selected configuration."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 4.6), layout="constrained")
    ax = fig.subplots()
    per_epoch = all(c.per_epoch for c in lines)
    for index, curve in enumerate(lines):
        colour = curves_module.IMPORTED_PALETTE[index % len(curves_module.IMPORTED_PALETTE)]
        seeds = f"{curve.seeds} seed" + ("s" if curve.seeds != 1 else "")
        label = mathtext(f"{LABEL}: {curve.method} ({seeds})")
        for k, (x, y) in enumerate(zip(curve.x, curve.y, strict=True)):
            ax.plot(
                x,
                y,
                color=colour,
                lw=1.4,
                ls="--",
                marker=".",
                ms=3,
                label=label if k == 0 else None,
            )
        if curve.per_epoch and curve.seeds > 1 and curve.low is not None:
            ax.fill_between(curve.x[0], curve.low, curve.high, color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("epoch" if per_epoch else "training time (s, evaluation excluded)")
    ax.set_ylabel(mathtext(f"validation {table.metric}"))
    how = "mean over seeds, min-max shaded" if per_epoch else "one line per seed"
    ax.set_title(mathtext(f"{table.name}: validation {table.metric}") + f"\n({how})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def header_line(data: StoreData) -> tuple[str, str] | None:
    """The report header's line about the imported trials (None when there are none)."""
    if not data.imported:
        return None
    by_format: dict[str, list[Trial]] = {}
    for trial in data.imported:
        by_format.setdefault(_group_key(trial)[0], []).append(trial)
    parts = []
    for fmt, trials in sorted(by_format.items()):
        files = [str((t.source or {}).get("file", "")) for t in trials]
        try:
            common = os.path.commonpath(files)
        except ValueError:  # mixed absolute and relative, or no path
            common = ""
        parts.append(f"{fmt}: {len(trials)} trial(s)" + (f" from {common}" if common else ""))
    return (LABEL, "; ".join(parts) + " (shown apart, never selected or ranked with these)")
