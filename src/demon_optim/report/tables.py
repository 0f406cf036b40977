"""Per-setting tables: a setting is task x base-optimizer family x epoch budget (x batch size).

Selection is the study harness's own (:func:`demon_optim.study.results.summarize`): per
method, the configuration with the best mean *validation* metric over seeds, among those
whose every seed finished; reported: that configuration's *test* metric, mean ± sample std
over seeds, the number of seeds, and a 95 % Student-t interval with 3 seeds or more.
Diverged and failed trials are counted per method, over all its configurations. With one
seed there is no spread to show: the std is None (an empty cell), not 0.

Ranks are competition ranks ("1, 1, 3") of the test mean in the metric's direction, means
equal at the printed precision (:data:`~demon_optim.study.results.DIGITS` decimals) sharing
a rank, as in the ``run`` table. Reference optimizers are shown but not ranked unless
``rank_all``; a method with no configuration finished on every seed is shown, unranked.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from demon_optim.report import escape, naming
from demon_optim.report.load import StoreData, Trial
from demon_optim.study.methods import Value
from demon_optim.study.results import DIGITS, summarize


@dataclass(frozen=True)
class MetricValue:
    """One more metric of a row's selected configuration: ``where`` it was measured ("test":
    a task's other test metrics, "final": its final outputs), mean and std over seeds."""

    where: str
    name: str
    mean: float | None
    std: float | None  # None with one seed

    @property
    def label(self) -> str:
        return f"test {self.name}" if self.where == "test" else self.name

    def text(self) -> str:
        if self.mean is None:
            return "-"
        return number(self.mean) + ("" if self.std is None else f" ± {number(self.std)}")


@dataclass(frozen=True)
class Row:
    """One method in one setting."""

    method: str
    schedule: str  # the cross-family name (naming.schedule_name)
    reference: bool
    ranked: bool  # takes part in the ranking (False: a reference, unless rank_all)
    selected: str  # the selected hyperparameters as printed ("" when none or not applicable)
    config: Mapping[str, Value] | None  # the selected configuration (None: none / external)
    mean: float | None  # test metric of the selected configuration, mean over seeds
    std: float | None
    ci95: float | None  # half-width, with 3 seeds or more
    seeds: int
    val_mean: float | None = None
    configs: int = 0
    trials: int = 0  # trials in the store, every configuration and status
    diverged: int = 0
    failed: int = 0
    rank: int | None = None
    metrics: tuple[MetricValue, ...] = ()  # the task's other metrics, selected configuration

    @property
    def best(self) -> bool:
        return self.rank == 1


@dataclass(frozen=True)
class Setting:
    """One table: the rows of one setting, ranked."""

    name: str  # as shown, e.g. "mnist1d-mlp · SGDM · 60 epochs"
    slug: str  # file-name safe and unique, e.g. "mnist1d-mlp_sgdm_60ep"
    metric: str
    higher_is_better: bool
    rows: tuple[Row, ...]
    task: str | None = None  # None for external results
    family: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    token_budget: int | None = None
    # metrics equal in every row (reference points a task measures the same way for every
    # trial, e.g. the real data's sample-quality score): shown once, beside the table
    shared: tuple[MetricValue, ...] = ()
    published: str = ""  # the task's published results on its data (Task.published)

    @property
    def metric_columns(self) -> tuple[str, ...]:
        """Labels of the other metrics shown as columns, in the order first met."""
        labels: list[str] = []
        for row in self.rows:
            labels += [m.label for m in row.metrics if m.label not in labels]
        return tuple(labels)

    @property
    def key(self) -> tuple[str | None, str | None, int | None, int | None, int | None]:
        """What the setting's trials share (:func:`setting_key`)."""
        return (self.task, self.family, self.epochs, self.batch_size, self.token_budget)

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


def competition_ranks(
    values: Sequence[float | None], higher_is_better: bool, digits: int = DIGITS
) -> list[int | None]:
    """Rank = 1 + how many values are strictly better (at ``digits`` decimals); None stays None.

    >>> competition_ranks([0.9, 0.8, 0.9, None], higher_is_better=True)
    [1, 3, 1, None]
    """
    rounded = [None if v is None else round(v, digits) for v in values]
    present = [v for v in rounded if v is not None]
    ranks: list[int | None] = []
    for v in rounded:
        if v is None:
            ranks.append(None)
        elif higher_is_better:
            ranks.append(1 + sum(1 for w in present if w > v))
        else:
            ranks.append(1 + sum(1 for w in present if w < v))
    return ranks


def rank_rows(rows: Iterable[Row], higher_is_better: bool) -> tuple[Row, ...]:
    """Rank the rows that take part (``ranked`` and with a mean); order: ranked rows best
    first, then the others (references, methods without a result) by mean."""
    rows = list(rows)
    ranks = competition_ranks(
        [r.mean if r.ranked else None for r in rows], higher_is_better=higher_is_better
    )
    rows = [replace(r, rank=k) for r, k in zip(rows, ranks, strict=True)]
    sign = -1.0 if higher_is_better else 1.0

    def order(row: Row) -> tuple:
        return (
            row.rank is None,
            row.rank or 0,
            row.mean is None,
            sign * (row.mean or 0.0),
            row.method,
        )

    return tuple(sorted(rows, key=order))


SettingKey = tuple[str, str, int, int, int | None]


def setting_key(trial: Trial) -> SettingKey:
    """The setting a trial belongs to: task, family, epochs, batch size, token budget."""
    return (trial.task, trial.family, trial.epochs, trial.batch_size, trial.token_budget)


def store_settings(data: StoreData, rank_all: bool = False) -> list[Setting]:
    """One ranked table per (task, family, epochs, batch size, token budget) in the store."""
    groups: dict[SettingKey, list[Trial]] = {}
    for trial in data.trials:
        groups.setdefault(setting_key(trial), []).append(trial)
    # what tells apart the settings of one (task, family, epochs): batch size, token budget
    variants: dict[tuple[str, str, int], set[tuple[int, int | None]]] = {}
    for task, fam, epochs, batch, tokens in groups:
        variants.setdefault((task, fam, epochs), set()).add((batch, tokens))

    def order(k: SettingKey) -> tuple:
        return (k[0], naming.family_sort_key(k[1]), k[2], k[3], k[4] or 0)

    keys = sorted(groups, key=order)
    names, slugs_in = [], []
    for task, fam, epochs, batch, tokens in keys:
        shared = variants[(task, fam, epochs)]
        several_batches = len({b for b, _ in shared}) > 1
        several_budgets = len({t for _, t in shared}) > 1
        names.append(
            f"{task} · {naming.FAMILY_LABELS.get(fam, fam)} · {epochs} epochs"
            + (f" · batch {batch}" if several_batches else "")
            + (f" · {tokens or 'all'} tokens/epoch" if several_budgets else "")
        )
        slugs_in.append(
            f"{task}_{fam}_{epochs}ep"
            + (f"_b{batch}" if several_batches else "")
            + (f"_t{tokens or 'all'}" if several_budgets else "")
        )

    settings = []
    for key, name, slug in zip(keys, names, naming.file_stems(slugs_in), strict=True):
        task_name, fam, epochs, batch, tokens = key
        trials = groups[key]
        about = trials[0].about
        (table,) = summarize([t.spec() for t in trials], [t.row() for t in trials])
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.method] = counts.get(trial.method, 0) + 1
        by_method = {t.method: t.about for t in trials}
        by_id = {t.trial_id: t for t in trials}
        rows = []
        for result in table.rows:
            selected = [by_id[i] for i in result.trial_ids]
            reference = by_method[result.method].reference
            rows.append(
                Row(
                    method=result.method,
                    schedule=by_method[result.method].schedule,
                    reference=reference,
                    ranked=rank_all or not reference,
                    selected=result.shown,
                    config=result.selected,
                    mean=result.test_mean,
                    # one seed measures no spread: none shown (summarize says 0.0)
                    std=result.test_std if result.seeds > 1 else None,
                    ci95=result.ci95,
                    seeds=result.seeds,
                    val_mean=result.val_mean,
                    configs=result.configs,
                    trials=counts[result.method],
                    diverged=result.diverged,
                    failed=result.failed,
                    metrics=other_metrics(selected, about.metric),
                )
            )
        rows, shared = _split_shared(rows)
        settings.append(
            Setting(
                name=name,
                slug=slug,
                metric=about.metric,
                higher_is_better=about.higher_is_better,
                rows=rank_rows(rows, about.higher_is_better),
                task=task_name,
                family=fam,
                epochs=epochs,
                batch_size=batch,
                token_budget=tokens,
                shared=shared,
                published=_published(task_name),
            )
        )
    return settings


def _published(task: str) -> str:
    """What the task (if this process knows it) says was published on its data."""
    from demon_optim.study.tasks import get_task, task_names

    return get_task(task).published if task in task_names() else ""


def other_metrics(trials: Sequence[Trial], metric: str) -> tuple[MetricValue, ...]:
    """A configuration's metrics beyond the selection metric, mean and std over its seeds:
    the other test metrics, then the final outputs' (in the order the task reports them)."""
    out = []
    for where in ("test", "final"):
        names: list[str] = []
        for trial in trials:
            names += [n for n in trial.metrics.get(where, {}) if n not in names]
        for name in names:
            if where == "test" and name == metric:
                continue
            values = [trial.metrics.get(where, {}).get(name) for trial in trials]
            present = [float(v) for v in values if v is not None]
            mean = statistics.fmean(present) if present else None
            std = statistics.stdev(present) if len(present) > 1 else None
            out.append(MetricValue(where, name, mean, std))
    return tuple(out)


def _split_shared(rows: list[Row]) -> tuple[list[Row], tuple[MetricValue, ...]]:
    """Move the metrics whose value is the same in every row (2 rows or more) out of them."""
    with_metrics = [r for r in rows if r.metrics]
    if len(with_metrics) < 2:
        return rows, ()
    rounded = [
        {m.label: round(m.mean, DIGITS) for m in r.metrics if m.mean is not None}
        for r in with_metrics
    ]
    shared = tuple(
        m
        for m in with_metrics[0].metrics
        if m.label in rounded[0] and all(v.get(m.label) == rounded[0][m.label] for v in rounded)
    )
    labels = {m.label for m in shared}
    kept = [replace(r, metrics=tuple(m for m in r.metrics if m.label not in labels)) for r in rows]
    return kept, shared


# --- rendering ------------------------------------------------------------------------------


def number(value: float | None, digits: int = DIGITS) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rank_text(row: Row) -> str:
    if row.rank is not None:
        return str(row.rank)
    return "ref" if row.reference and not row.ranked else "-"


def result_text(row: Row) -> str:
    if row.mean is None:
        return "no configuration finished on every seed" if row.trials else "-"
    if row.std is None:
        return number(row.mean)
    return f"{number(row.mean)} ± {number(row.std)}"


def has_store_columns(setting: Setting) -> bool:
    return setting.task is not None


CSV_COLUMNS = (
    "setting",
    "rank",
    "best",
    "method",
    "schedule",
    "reference",
    "selected",
    "test_mean",
    "test_std",
    "ci95",
    "seeds",
    "val_mean",
    "configs",
    "trials",
    "diverged",
    "failed",
)


def to_csv(setting: Setting) -> str:
    """The table as CSV (:data:`CSV_COLUMNS`, then ``<label>_mean, <label>_std`` for each of
    the task's other metrics; empty cells where a value does not exist, e.g. ``test_std``
    with one seed); text cells are made safe for spreadsheets
    (:func:`~demon_optim.report.escape.csv_cell`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    labels = setting.metric_columns
    extra = [f"{label.replace(' ', '_')}_{part}" for label in labels for part in ("mean", "std")]
    writer.writerow([*CSV_COLUMNS, *extra])
    for row in setting.rows:
        by_label = {m.label: m for m in row.metrics}
        cells = [
            setting.name,
            "" if row.rank is None else row.rank,
            int(row.best),
            row.method,
            row.schedule,
            int(row.reference),
            row.selected,
            _csv_number(row.mean),
            _csv_number(row.std),
            _csv_number(row.ci95),
            row.seeds,
            _csv_number(row.val_mean),
            row.configs,
            row.trials,
            row.diverged,
            row.failed,
        ]
        for label in labels:
            value = by_label.get(label)
            cells += [_csv_number(value and value.mean), _csv_number(value and value.std)]
        writer.writerow([escape.csv_cell(cell) for cell in cells])
    return buffer.getvalue()


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def header_and_cells(setting: Setting) -> tuple[list[str], list[list[str]]]:
    """Column names and cell texts shared by the Markdown and HTML renderings."""
    store = has_store_columns(setting)
    with_ci = any(row.ci95 is not None for row in setting.rows)
    with_std = any(row.std is not None for row in setting.rows)
    metric = f"test {setting.metric}" if store else setting.metric
    header = ["rank", "method"]
    if store:
        header.append("selected hyperparameters")
    header.append(f"{metric} (mean ± std)" if with_std else metric)
    if with_ci:
        header.append("95 % CI")
    labels = setting.metric_columns
    header += labels
    if store:
        header += ["seeds", f"val {setting.metric}", "configs", "diverged", "failed"]
    cells = []
    for row in setting.rows:
        by_label = {m.label: m for m in row.metrics}
        line = [rank_text(row), row.method + (" (best)" if row.best else "")]
        if store:
            line.append(row.selected or "-")
        line.append(result_text(row))
        if with_ci:
            line.append("-" if row.ci95 is None else f"± {number(row.ci95)}")
        line += [by_label[label].text() if label in by_label else "-" for label in labels]
        if store:
            line += [
                str(row.seeds),
                number(row.val_mean),
                str(row.configs),
                str(row.diverged),
                str(row.failed),
            ]
        cells.append(line)
    return header, cells


def to_markdown(setting: Setting) -> str:
    header, cells = header_and_cells(setting)
    numeric = {"rank", "seeds", "configs", "diverged", "failed", "95 % CI", *setting.metric_columns}
    align = [
        "---:" if h in numeric or "mean" in h or h.startswith("val") else "---" for h in header
    ]
    md = escape.markdown
    lines = [
        f"### {md(setting.name)} ({md(setting.metric)}, {setting.direction})",
        "",
        "| " + " | ".join(md(h) for h in header) + " |",
        "|" + "|".join(align) + "|",
    ]
    for line in cells:
        lines.append("| " + " | ".join(md(c) for c in line) + " |")
    if setting.shared:
        lines += ["", md(shared_text(setting))]
    if setting.published:
        lines += ["", md(f"Published on this data: {setting.published}")]
    return "\n".join(lines) + "\n"


def shared_text(setting: Setting) -> str:
    """The line under a table naming the metrics that are the same for every method."""
    values = ", ".join(f"{m.label} {number(m.mean)}" for m in setting.shared)
    return f"The same for every method (measured the same way for each trial): {values}."
