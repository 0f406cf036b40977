"""Tuning budgets: the test metric against the number of sampled configurations, and the
success rate of a search (the views of a study that samples configurations).

Per setting of the tables (task x family x budget) and per search in it (a sampled method,
:mod:`demon_optim.study.search`), the search's draws are read in the order the sampler
asked them, up to the first one whose trials are not all final: each configuration's
validation value is its mean over seeds when every seed is ``done`` (else it cannot be
selected), its outcome its mean test metric. From them (:mod:`demon_optim.report.tuning`):

* the **budget curve**: for ``k = 1 .. N``, the test metric of the best of the first ``k``
  configurations by validation, beside Dodge et al.'s expected maximum with its spread
  (one standard deviation), and, in the table at each of the study's tuning budgets, the
  mean and spread over every ordering of the ``N`` draws. Crowded Valley's one-shot
  (the defaults) and its small and large random-search budgets are points of this view: a
  grid method of the same setting is drawn as one point at its number of configurations
  (a method run at its defaults: ``k = 1``);
* the **success rate**: the fraction of a search's configurations whose test metric is
  within the report's tolerance (``--tolerance``, as the heatmaps' band) of the best
  configuration any search of the setting drew; one that cannot be selected is outside.
  Like the heatmaps, it describes the landscape the search saw (test metric); it selects
  nothing.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from demon_optim.report import escape, tuning
from demon_optim.report.heatmaps import Tolerance, default_tolerance
from demon_optim.report.html import Table
from demon_optim.report.load import SearchRecord, StoreData, Trial
from demon_optim.report.tables import Setting, number
from demon_optim.study.methods import Value
from demon_optim.study.methods.hyperparameters import format_config


@dataclass(frozen=True)
class Draw:
    """One drawn configuration's result: mean validation and test metric over its seeds
    (None when some seed diverged or failed: it cannot be selected)."""

    config: dict[str, Value]
    val: float | None
    test: float | None


@dataclass(frozen=True)
class Curve:
    """One search of a setting: its draws in order (those whose trials are all final)."""

    method: str
    schedule: str
    family: str
    sampler: str
    seed: int
    tuning_budgets: tuple[int, ...]
    draws: tuple[Draw, ...]
    recorded: int  # draws in the store, finished or not
    label: str  # the method, with the search's sampler and seed if a method has several
    varies: tuple[str, ...] = ()  # the hyperparameters its space varies (the ones shown)

    @property
    def values(self) -> list[float | None]:
        return [d.val for d in self.draws]

    @property
    def outcomes(self) -> list[float | None]:
        return [d.test for d in self.draws]

    def best(self, k: int, higher_is_better: bool) -> Draw | None:
        index = tuning.best_of_first(self.values, k, higher_is_better)
        return None if index is None else self.draws[index]


@dataclass(frozen=True)
class GridPoint:
    """A grid method of the same setting: its selected configuration's test metric after
    trying all its configurations."""

    method: str
    schedule: str
    configs: int
    test: float


@dataclass(frozen=True)
class BudgetView:
    """The searches of one setting, and the band their success rates count."""

    setting: Setting
    curves: tuple[Curve, ...]
    grid: tuple[GridPoint, ...]
    tolerance: Tolerance
    best: float | None  # the best test metric of any configuration drawn here
    threshold: float | None

    def within(self, curve: Curve) -> int:
        """How many of ``curve``'s configurations are within the band."""
        if self.threshold is None:
            return 0
        higher = self.setting.higher_is_better
        return sum(
            1
            for d in curve.draws
            if d.test is not None
            and d.val is not None
            and (d.test >= self.threshold if higher else d.test <= self.threshold)
        )


def _draws(record: SearchRecord, trials: dict[str, Trial]) -> tuple[Draw, ...]:
    out = []
    for draw in record.draws:
        found = [trials.get(i) for i in draw.trial_ids]
        if any(t is None or t.status == "failed" for t in found):
            break  # not final yet: the order after it is not known to have happened
        if all(t.status == "done" for t in found):  # type: ignore[union-attr]
            val = statistics.fmean(float(t.val_metric) for t in found)  # type: ignore[union-attr,arg-type]
            test = statistics.fmean(float(t.test_metric) for t in found)  # type: ignore[union-attr,arg-type]
            out.append(Draw(draw.config, val, test))
        else:
            out.append(Draw(draw.config, None, None))
    return tuple(out)


def budget_views(
    data: StoreData, settings: Sequence[Setting], tolerance: Tolerance | None = None
) -> list[BudgetView]:
    """One view per setting with a search (``tolerance``: the band; default per metric,
    as the heatmaps')."""
    if not data.searches:
        return []
    trials = {t.trial_id: t for t in data.trials}
    about = {(t.task, t.method): t.about for t in data.trials}
    views = []
    for setting in settings:
        found = [
            s
            for s in data.searches
            if (s.task, s.epochs, s.batch_size, s.token_budget)
            == (setting.task, setting.epochs, setting.batch_size, setting.token_budget)
            and (s.task, s.method) in about
            and about[(s.task, s.method)].family == setting.family
        ]
        if not found:
            continue
        several = {m for m in (s.method for s in found) if sum(x.method == m for x in found) > 1}
        curves = []
        for record in found:
            draws = _draws(record, trials)
            if not draws:
                continue
            info = about[(record.task, record.method)]
            label = record.method
            if record.method in several:
                label += f" ({record.sampler}, seed {record.seed})"
            curves.append(
                Curve(
                    record.method,
                    info.schedule,
                    info.family,
                    record.sampler,
                    record.seed,
                    record.tuning_budgets,
                    draws,
                    len(record.draws),
                    label,
                    record.varies,
                )
            )
        if not curves:
            continue
        searched = {c.method for c in curves}
        grid = tuple(
            GridPoint(row.method, row.schedule, row.configs, row.mean)
            for row in setting.rows
            if row.method not in searched and row.mean is not None
        )
        band = tolerance or default_tolerance(setting.metric)
        tests = [d.test for c in curves for d in c.draws if d.test is not None]
        pick = max if setting.higher_is_better else min
        best = pick(tests) if tests else None
        threshold = None if best is None else band.threshold(best, setting.higher_is_better)
        views.append(BudgetView(setting, tuple(curves), grid, band, best, threshold))
    return views


# --- the figure --------------------------------------------------------------------------------

_FAMILY_STYLES = {"sgdm": "-", "adam": "--"}


def draw(view: BudgetView):  # -> Figure
    """Test metric against the tuning budget k (log axis): per search the best of the first
    k (solid, the study's tuning budgets marked) and the expected maximum (dotted) with its
    spread shaded (clipped to the values observed); grid methods as one point each at their
    number of configurations."""
    from matplotlib.figure import Figure

    from demon_optim.report.curves import colour
    from demon_optim.report.escape import mathtext

    setting = view.setting
    higher = setting.higher_is_better
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = fig.subplots()
    largest = max(len(c.draws) for c in view.curves)
    for curve in view.curves:
        ks = list(range(1, len(curve.draws) + 1))
        best = [curve.best(k, higher) for k in ks]
        expected = [tuning.expected_max(curve.values, curve.outcomes, k, higher) for k in ks]
        shade = colour(curve.schedule)
        demon = curve.schedule == "demon"
        style = _FAMILY_STYLES.get(curve.family, "-")
        shown = [(k, b.test) for k, b in zip(ks, best, strict=True) if b is not None]
        if shown:
            ax.plot(
                [k for k, _ in shown],
                [t for _, t in shown],
                drawstyle="steps-post",
                color=shade,
                ls=style,
                lw=2.2 if demon else 1.4,
                label=mathtext(f"{curve.label}: best of the first k ({curve.sampler})"),
            )
            marks = [(k, t) for k, t in shown if k in curve.tuning_budgets]
            ax.plot([k for k, _ in marks], [t for _, t in marks], "o", color=shade, ms=5)
        means = [(k, e) for k, e in zip(ks, expected, strict=True) if e.mean is not None]
        if means:
            xs = [k for k, _ in means]
            label = mathtext(f"{curve.label}: expected max (Dodge et al.) ± std")
            ax.plot(xs, [e.mean for _, e in means], ":", color=shade, lw=1.6, label=label)
            finished = [t for t in curve.outcomes if t is not None]
            low, high = min(finished), max(finished)  # the band, clipped to what was seen
            ax.fill_between(
                xs,
                [max(low, e.mean - e.std) for _, e in means],  # type: ignore[operator]
                [min(high, e.mean + e.std) for _, e in means],  # type: ignore[operator]
                color=shade,
                alpha=0.12,
                lw=0,
            )
    for point in view.grid:
        label = mathtext(f"{point.method} (grid, {point.configs} configurations)")
        ax.plot(point.configs, point.test, "D", color=colour(point.schedule), ms=6, label=label)
    ax.set_xscale("log", base=2)
    right = max([largest, *(p.configs for p in view.grid)])
    ax.set_xlim(0.9, right * 1.1)
    marked = {k for c in view.curves for k in c.tuning_budgets} | {2**i for i in range(11)}
    ticks = sorted(k for k in marked if k <= right)
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.set_xlabel("tuning budget k (configurations tried)")
    ax.set_ylabel(f"test {setting.metric}")
    ax.grid(alpha=0.3)
    ax.set_title(mathtext(f"{setting.name}: the best of k sampled configurations"), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


# --- the tables --------------------------------------------------------------------------------

BUDGET_HEADER = (
    "method",
    "tuning budget k",
    "best of the first k: test",
    "its val",
    "its hyperparameters",
    "expected max ± std",
    "over orderings: mean ± std",
    "P(none finished)",
)
BUDGET_CSV = (
    "setting",
    "method",
    "sampler",
    "search_seed",
    "k",
    "draws",
    "best_test",
    "best_val",
    "best_config",
    "expected_mean",
    "expected_std",
    "expected_none",
    "orderings_mean",
    "orderings_std",
    "orderings_none",
)


def _expected_text(found: tuning.Expected | None) -> str:
    if found is None or found.mean is None:
        return "-"
    return f"{number(found.mean)} ± {number(found.std)}"


def _chance(expected: tuning.Expected, orderings: tuning.Expected) -> str:
    """P(none finished), with replacement / over orderings: ``0``, ``< 0.001`` or 3 digits."""

    def text(p: float) -> str:
        return "0" if p == 0 else "< 0.001" if p < 1e-3 else f"{p:.3g}"

    if expected.none == orderings.none == 0:
        return "0"
    return f"{text(expected.none)} / {text(orderings.none)}"


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def budget_table(view: BudgetView) -> Table:
    """Per search and tuning budget: the best of the first k, the expected maximum (Dodge
    et al.) and the spread over orderings."""
    higher = view.setting.higher_is_better
    rows, classes = [], []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BUDGET_CSV)
    for curve in view.curves:
        n = len(curve.draws)
        for k in curve.tuning_budgets:
            if k > n:
                rows.append(
                    (curve.label, str(k), f"only {n} of {curve.recorded} draws finished so far",
                     "-", "-", "-", "-", "-")
                )  # fmt: skip
                classes.append("unranked")
                continue
            best = curve.best(k, higher)
            expected = tuning.expected_max(curve.values, curve.outcomes, k, higher)
            orderings = tuning.over_orderings(curve.values, curve.outcomes, k, higher)
            rows.append(
                (
                    curve.label,
                    str(k),
                    "no configuration finished" if best is None else number(best.test),
                    "-" if best is None else number(best.val),
                    "-" if best is None else format_config(best.config, curve.varies),
                    _expected_text(expected),
                    _expected_text(orderings),
                    _chance(expected, orderings),
                )
            )
            classes.append("")
            values = [view.setting.name, curve.method, curve.sampler, curve.seed, k, n]
            values += [
                _csv_number(None if best is None else best.test),
                _csv_number(None if best is None else best.val),
                "" if best is None else format_config(best.config, curve.varies),
            ]
            for found in (expected, orderings):
                values += [_csv_number(found.mean), _csv_number(found.std), repr(found.none)]
            writer.writerow([escape.csv_cell(v) for v in values])
    return Table(
        slug=f"budgets-{view.setting.slug}",
        title=f"{view.setting.name}: the best of k sampled configurations",
        header=BUDGET_HEADER,
        cells=tuple(rows),
        numeric=(BUDGET_HEADER[1], BUDGET_HEADER[2], BUDGET_HEADER[3], *BUDGET_HEADER[5:]),
        classes=tuple(classes),
        csv_path=f"budgets/{view.setting.slug}.csv",
        csv=buffer.getvalue(),
    )


SUCCESS_HEADER = (
    "setting",
    "method",
    "sampler",
    "configurations",
    "within the band",
    "success rate",
    "best of the setting",
    "band",
)


def success_table(views: Sequence[BudgetView]) -> Table:
    """Per setting and search: the fraction of its configurations within the band."""
    rows = []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["setting", "method", "sampler", "search_seed", "draws", "within", "rate", "best",
         "threshold", "tolerance"]
    )  # fmt: skip
    for view in views:
        band = view.tolerance.describe(view.setting.metric)
        relation = ">=" if view.setting.higher_is_better else "<="
        for curve in sorted(view.curves, key=lambda c: -view.within(c) / len(c.draws)):
            within, total = view.within(curve), len(curve.draws)
            limit = "-" if view.threshold is None else f"{relation} {number(view.threshold)}"
            rows.append(
                (
                    view.setting.name,
                    curve.label,
                    curve.sampler,
                    str(total),
                    str(within),
                    f"{100 * within / total:.0f} %",
                    number(view.best),
                    f"{limit} ({band})",
                )
            )
            writer.writerow(
                [
                    escape.csv_cell(v)
                    for v in (
                        view.setting.name, curve.method, curve.sampler, curve.seed, total,
                        within, repr(within / total), _csv_number(view.best),
                        _csv_number(view.threshold), band,
                    )
                ]
            )  # fmt: skip
    return Table(
        slug="success-rate",
        title="Success rate: sampled configurations within the band of the best",
        header=SUCCESS_HEADER,
        cells=tuple(rows),
        numeric=SUCCESS_HEADER[3:7],
        csv_path="success.csv",
        csv=buffer.getvalue(),
    )
