"""Steps and training time to a validation target, and the performance profiles built on them.

A task's **target** is a value of its selection metric on the validation split (``Task.target``,
or a study's ``[targets]`` entry; recorded with every trial, ``TrialAbout.target``). A trial
**reaches** it at the first epoch ``e`` whose validation metric ``v_e`` satisfies
``v_e >= target`` (``v_e <= target`` when lower is better); at that epoch its history gives

    steps-to-target = steps_e       (optimizer steps taken by the end of epoch e)
    time-to-target  = train_s_e     (seconds in training steps so far; evaluation excluded)

A trial that never reaches it (or that diverged or failed) counts as ``inf``. Epoch
granularity: a run that crosses the target mid-epoch is credited at the epoch's end, where
the metric was measured.

A **setting** here is task x epoch budget (x batch size, x token budget): every method that
ran it competes, across families. Per method, the configuration the tables select (best
mean validation metric over seeds, every seed finished) is the one measured; over its seeds
the report gives the median, the min-max range and how many seeds reached the target. The
median is the method's cost on the setting (with an ``inf`` among the seeds, the median is
``inf`` once half the seeds or more never reach it), as AlgoPerf takes the median over its
studies. A method with no configuration finished on every seed counts as ``inf``.

The performance profiles (:mod:`demon_optim.report.profiles`) compare the ranked methods
(reference optimizers too with ``rank_all``) over the settings that have a target, once on
time and once on steps. A setting where some method's training time is not recorded (a
trial written before histories kept ``train_s``) is left out of the time profile, and
likewise for steps; the note says how many.

Where a setting's target comes from, in order: the ``targets`` given to the report (a
study's ``[targets]`` when ``run`` writes it; ``report --target TASK=VALUE``), the value its
trials recorded (the most common one, with a note, if they disagree), the task's current
default if this process knows the task; otherwise the task has no target and is listed as
such.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from demon_optim.report import escape, naming, profiles
from demon_optim.report.html import Table
from demon_optim.report.load import StoreData, Trial
from demon_optim.report.tables import Row, Setting

NOT_REACHED = "not reached"
INFINITY = "∞"


@dataclass(frozen=True)
class Reach:
    """Where one trial first reached the target: the epoch, its cumulative optimizer steps
    and training seconds; ``inf`` for all three if it never did. ``steps``/``train_s`` are
    None when reached but not recorded (a history from before they were kept)."""

    epoch: float
    steps: float | None
    train_s: float | None

    @property
    def reached(self) -> bool:
        return math.isfinite(self.epoch)


NEVER = Reach(math.inf, math.inf, math.inf)


def reaches(value: float, target: float, higher_is_better: bool) -> bool:
    """Whether a validation value meets the target in the metric's direction."""
    return value >= target if higher_is_better else value <= target


def first_reach(
    history: Sequence[Mapping[str, object]], target: float, higher_is_better: bool
) -> Reach:
    """The first epoch of ``history`` whose ``val_metric`` meets ``target`` (:data:`NEVER`
    if none does); epochs without a finite value are skipped."""
    for record in history:
        value = record.get("val_metric")
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        if reaches(float(value), target, higher_is_better):
            return Reach(
                float(record["epoch"]),  # type: ignore[arg-type]
                _recorded(record.get("steps")),
                _recorded(record.get("train_s")),
            )
    return NEVER


def _recorded(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


@dataclass(frozen=True)
class Spread:
    """A cost over seeds: median, min and max (``inf`` where seeds never reached the target;
    None where some seed's value was not recorded)."""

    median: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Spread:
        if not values:
            return cls(math.inf, math.inf, math.inf)
        if any(v is None for v in values):
            return cls(None, None, None)
        known = [float(v) for v in values if v is not None]
        return cls(statistics.median(known), min(known), max(known))


@dataclass(frozen=True)
class TargetRow:
    """One method on one setting: its selected configuration's reach over seeds."""

    method: str
    schedule: str
    family: str
    reference: bool
    ranked: bool
    selected: str  # the selected hyperparameters as printed
    seeds: int  # seeds of the selected configuration (0: none finished on every seed)
    reached: int  # of those, how many reached the target
    epochs: Spread
    steps: Spread
    time: Spread
    time_ratio: float | None = None  # median time / the setting's best (ranked rows only)
    steps_ratio: float | None = None


@dataclass(frozen=True)
class TargetSetting:
    """One task x budget with a target: every method's reach, fastest first."""

    name: str
    slug: str
    task: str
    epochs: int | None
    batch_size: int | None
    token_budget: int | None
    metric: str
    higher_is_better: bool
    target: float
    source: str  # where the target came from, in words
    rows: tuple[TargetRow, ...]

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def relation(self) -> str:
        return ">=" if self.higher_is_better else "<="


@dataclass(frozen=True)
class Target:
    """A task's target and where it came from."""

    value: float
    source: str
    note: str = ""  # e.g. the trials disagree


def resolve_targets(
    data: StoreData, given: Mapping[str, float] | None = None
) -> dict[str, Target | None]:
    """Every task of the store -> its target (None: it has none); order as in the module."""
    from demon_optim.study.tasks import get_task, task_names

    given = dict(given or {})
    recorded: dict[str, Counter[float]] = {}
    for trial in data.trials:
        counts = recorded.setdefault(trial.task, Counter())
        if trial.about.target is not None:
            counts[float(trial.about.target)] += 1
    out: dict[str, Target | None] = {}
    for task, counts in recorded.items():
        if task in given:
            out[task] = Target(float(given[task]), "given to the report")
        elif counts:
            (value, _), *others = counts.most_common()
            note = ""
            if others:
                listed = ", ".join(f"{v:g} ({n} trials)" for v, n in counts.most_common())
                note = (
                    f"{task}: its trials recorded different targets ({listed}); the most "
                    f"common is used (choose one with: report --target {task}=VALUE)"
                )
            out[task] = Target(value, "recorded with the trials", note)
        elif task in task_names() and get_task(task).target is not None:
            target = get_task(task).target
            out[task] = Target(float(target), "the task's default")  # type: ignore[arg-type]
        else:
            out[task] = None
    return out


def _selected(trials: Sequence[Trial], row: Row) -> list[Trial]:
    if row.config is None:
        return []
    config = dict(row.config)
    return sorted(
        (
            t
            for t in trials
            if t.method == row.method and t.status == "done" and t.hyperparameters == config
        ),
        key=lambda t: t.seed,
    )


def _row(trials: Sequence[Trial], row: Row, family: str, target: float, higher: bool) -> TargetRow:
    chosen = _selected(trials, row)
    found = [first_reach(t.history, target, higher) for t in chosen]
    return TargetRow(
        method=row.method,
        schedule=row.schedule,
        family=family,
        reference=row.reference,
        ranked=row.ranked,
        selected=row.selected,
        seeds=len(chosen),
        reached=sum(r.reached for r in found),
        epochs=Spread.of([r.epoch for r in found]),
        steps=Spread.of([r.steps for r in found]),
        time=Spread.of([r.train_s for r in found]),
    )


GroupKey = tuple[str, int | None, int | None, int | None]


def target_settings(
    data: StoreData, settings: Sequence[Setting], targets: Mapping[str, Target | None]
) -> list[TargetSetting]:
    """One :class:`TargetSetting` per task x budget whose task has a target, from the
    tables' settings (their selections) and the store's histories."""
    groups: dict[GroupKey, list[Setting]] = {}
    for setting in settings:
        if setting.task is None or targets.get(setting.task) is None:
            continue
        key = (setting.task, setting.epochs, setting.batch_size, setting.token_budget)
        groups.setdefault(key, []).append(setting)
    variants: dict[tuple[str, int | None], set[tuple[int | None, int | None]]] = {}
    for task, epochs, batch, tokens in groups:
        variants.setdefault((task, epochs), set()).add((batch, tokens))
    names, stems = [], []
    for task, epochs, batch, tokens in groups:
        shared = variants[(task, epochs)]
        several_batches = len({b for b, _ in shared}) > 1
        several_budgets = len({t for _, t in shared}) > 1
        names.append(
            f"{task} · {epochs} epochs"
            + (f" · batch {batch}" if several_batches else "")
            + (f" · {tokens or 'all'} tokens/epoch" if several_budgets else "")
        )
        stems.append(
            f"{task}_{epochs}ep"
            + (f"_b{batch}" if several_batches else "")
            + (f"_t{tokens or 'all'}" if several_budgets else "")
        )
    out = []
    for (key, members), name, slug in zip(
        groups.items(), names, naming.file_stems(stems), strict=True
    ):
        task, epochs, batch, tokens = key
        target = targets[task]
        assert target is not None
        first = members[0]
        trials = [t for t in data.trials if (t.task, t.epochs, t.batch_size, t.token_budget) == key]
        rows = [
            _row(trials, row, setting.family or "", target.value, first.higher_is_better)
            for setting in members
            for row in setting.rows
        ]
        out.append(
            TargetSetting(
                name=name,
                slug=slug,
                task=task,
                epochs=epochs,
                batch_size=batch,
                token_budget=tokens,
                metric=first.metric,
                higher_is_better=first.higher_is_better,
                target=target.value,
                source=target.source,
                rows=_with_ratios(rows),
            )
        )
    return out


def _with_ratios(rows: Sequence[TargetRow]) -> tuple[TargetRow, ...]:
    """The rows with their ratios to the setting's best ranked median, fastest first."""
    ranked = [r for r in rows if r.ranked]
    methods = [r.method for r in ranked]

    def ratio_of(kind: str) -> dict[str, float | None]:
        costs = {r.method: getattr(r, kind).median for r in ranked}
        if not ranked or any(c is None for c in costs.values()):
            return dict.fromkeys(methods)
        found = profiles.ratios({"setting": costs}, methods)  # type: ignore[dict-item]
        return {m: found[m][0] for m in methods}

    time_ratios, step_ratios = ratio_of("time"), ratio_of("steps")
    rows = [
        replace(r, time_ratio=time_ratios.get(r.method), steps_ratio=step_ratios.get(r.method))
        for r in rows
    ]

    def order(row: TargetRow) -> tuple:
        time = row.time.median
        epochs = row.epochs.median
        return (
            not row.ranked,
            math.inf if time is None else time,
            math.inf if epochs is None else epochs,
            row.method,
        )

    return tuple(sorted(rows, key=order))


# --- the profiles --------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Performance profiles of the ranked methods over the settings with a target."""

    methods: tuple[str, ...]
    schedules: dict[str, str]
    families: dict[str, str]
    time_settings: tuple[str, ...]  # names of the settings in the time profile
    step_settings: tuple[str, ...]
    time_ratios: dict[str, list[float]]
    step_ratios: dict[str, list[float]]
    runs: dict[str, int]  # settings (of all with a target) each method took part in
    left_out: dict[str, int]  # "time"/"steps" -> settings without recorded costs
    tau_max: float = profiles.TAU_MAX

    def area(self, kind: str, method: str) -> float | None:
        ratios = self.time_ratios if kind == "time" else self.step_ratios
        return profiles.area(ratios[method], self.tau_max) if ratios.get(method) else None

    def best(self, kind: str, method: str) -> float | None:
        ratios = self.time_ratios if kind == "time" else self.step_ratios
        return profiles.rho(ratios[method], 1.0) if ratios.get(method) else None

    def order(self) -> list[str]:
        """Methods by time AUC (then steps AUC), best first."""
        return sorted(
            self.methods,
            key=lambda m: (-(self.area("time", m) or 0.0), -(self.area("steps", m) or 0.0), m),
        )


def profile(targets: Sequence[TargetSetting]) -> Profile | None:
    """The profiles over ``targets``' settings; None when no setting has a ranked method."""
    methods: list[str] = []
    schedules: dict[str, str] = {}
    families: dict[str, str] = {}
    runs: Counter[str] = Counter()
    time_costs: dict[str, dict[str, float]] = {}
    step_costs: dict[str, dict[str, float]] = {}
    left_out = {"time": 0, "steps": 0}
    for setting in targets:
        ranked = [r for r in setting.rows if r.ranked]
        if not ranked:
            continue
        for row in ranked:
            if row.method not in methods:
                methods.append(row.method)
            schedules[row.method], families[row.method] = row.schedule, row.family
            runs[row.method] += 1
        for kind, costs in (("time", time_costs), ("steps", step_costs)):
            values = {r.method: getattr(r, kind).median for r in ranked}
            if any(v is None for v in values.values()):
                left_out[kind] += 1
            else:
                costs[setting.name] = values
    if not methods:
        return None
    return Profile(
        methods=tuple(methods),
        schedules=schedules,
        families=families,
        time_settings=tuple(time_costs),
        step_settings=tuple(step_costs),
        time_ratios=profiles.ratios(time_costs, methods) if time_costs else {},
        step_ratios=profiles.ratios(step_costs, methods) if step_costs else {},
        runs=dict(runs),
        left_out=left_out,
    )


_FAMILY_STYLES = {"sgdm": "-", "adam": "--"}


def _area_text(profile_: Profile, method: str) -> str:
    parts = [
        f"{kind} {value:.2f}"
        for kind in ("time", "steps")
        if (value := profile_.area(kind, method)) is not None
    ]
    return ", ".join(parts)


def draw_profiles(profile_: Profile):  # -> Figure
    """Two panels, time and steps: each method's rho(tau) on a log tau axis from 1 to tau_max."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    from demon_optim.report.curves import colour
    from demon_optim.report.escape import mathtext

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("training time to target", profile_.time_settings, profile_.time_ratios),
        ("optimizer steps to target", profile_.step_settings, profile_.step_ratios),
    )
    ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 8) if t <= profile_.tau_max]
    for ax, (what, names, ratios) in zip(axes, panels, strict=True):
        ax.set_xscale("log")
        ax.set_xlim(1, profile_.tau_max)
        ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.set_xlabel(r"$\tau$ (within $\tau$ x the best method's " + what.split(" to ")[0] + ")")
        ax.grid(alpha=0.3)
        settings = len(names)
        ax.set_title(f"{what} ({settings} setting{'s' if settings != 1 else ''})", fontsize=10)
        if not names:
            ax.text(
                0.5,
                0.5,
                "no setting with this cost recorded\nfor every method",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="#666",
            )
            continue
        for method in profile_.order():
            taus, rhos = profiles.steps(ratios[method], profile_.tau_max)
            demon = profile_.schedules[method] == "demon"
            ax.plot(
                taus,
                rhos,
                drawstyle="steps-post",
                color=colour(profile_.schedules[method]),
                ls=_FAMILY_STYLES.get(profile_.families[method], ":"),
                lw=2.2 if demon else 1.3,
                label=mathtext(f"{method} (area {_area_text(profile_, method)})"),
            )
    axes[0].set_ylabel(r"fraction of settings $\rho(\tau)$")
    handles, labels = next(
        (ax.get_legend_handles_labels() for ax in axes if ax.get_legend_handles_labels()[0]),
        ([], []),
    )
    if handles:  # one legend for both panels: each label carries both areas
        axes[1].legend(
            handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
            frameon=False,
        )  # fmt: skip
    fig.suptitle(
        "Performance profiles: the fraction of settings (task x budget) where a method "
        r"reaches the validation target within $\tau$ x the best method's cost",
        fontsize=10,
    )
    return fig


# --- rendering -----------------------------------------------------------------------------


def _number(value: float) -> str:
    if math.isinf(value):
        return INFINITY
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _seconds(value: float) -> str:
    """Three significant digits (0.016, 12.3, 123), whole seconds from 1000 on."""
    return INFINITY if math.isinf(value) else f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def spread_text(spread: Spread, fmt: Callable[[float], str] = _number) -> str:
    """``median (min-max)``; ``not reached`` for an infinite median, ``-`` if unrecorded."""
    if spread.median is None or spread.low is None or spread.high is None:
        return "-"
    if math.isinf(spread.median):
        text = NOT_REACHED
        if math.isfinite(spread.low):
            text += f" ({fmt(spread.low)}-{INFINITY})"
        return text
    if spread.low == spread.high:
        return fmt(spread.median)
    return f"{fmt(spread.median)} ({fmt(spread.low)}-{fmt(spread.high)})"


def _ratio_text(value: float | None) -> str:
    if value is None:
        return "-"
    return INFINITY if math.isinf(value) else f"{value:.2f}"


HEADER = (
    "method",
    "selected hyperparameters",
    "reached (seeds)",
    "epoch",
    "steps",
    "training time (s)",
    "time / best",
    "steps / best",
)
NUMERIC = HEADER[2:]


def cells(setting: TargetSetting) -> list[tuple[str, ...]]:
    out = []
    for row in setting.rows:
        name = row.method + (" (reference)" if row.reference and not row.ranked else "")
        if row.seeds == 0:
            reached = "no configuration finished on every seed"
        else:
            reached = f"{row.reached}/{row.seeds}"
        out.append(
            (
                name,
                row.selected or "-",
                reached,
                spread_text(row.epochs),
                spread_text(row.steps),
                spread_text(row.time, _seconds),
                _ratio_text(row.time_ratio),
                _ratio_text(row.steps_ratio),
            )
        )
    return out


def _class(row: TargetRow) -> str:
    if row.reference and not row.ranked:
        return "reference"
    if row.time_ratio == 1.0:
        return "best"
    return "unranked" if not row.reached else ""


CSV_COLUMNS = (
    "setting",
    "task",
    "epochs",
    "target",
    "method",
    "schedule",
    "reference",
    "ranked",
    "selected",
    "seeds",
    "reached",
    "epoch_median",
    "epoch_min",
    "epoch_max",
    "steps_median",
    "steps_min",
    "steps_max",
    "time_s_median",
    "time_s_min",
    "time_s_max",
    "time_ratio",
    "steps_ratio",
)


def to_csv(setting: TargetSetting) -> str:
    """One row per method (:data:`CSV_COLUMNS`): ``inf`` for never reached, empty where a
    value is not recorded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in setting.rows:
        values = [
            setting.name,
            setting.task,
            setting.epochs,
            repr(setting.target),
            row.method,
            row.schedule,
            int(row.reference),
            int(row.ranked),
            row.selected,
            row.seeds,
            row.reached,
        ]
        for spread in (row.epochs, row.steps, row.time):
            values += [_csv_number(v) for v in (spread.median, spread.low, spread.high)]
        values += [_csv_number(row.time_ratio), _csv_number(row.steps_ratio)]
        writer.writerow([escape.csv_cell(v) for v in values])
    return buffer.getvalue()


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def tables(targets: Sequence[TargetSetting]) -> list[Table]:
    """The per-setting time-to-target tables, for the report's ``targets`` section."""
    out = []
    for setting in targets:
        title = (
            f"{setting.name}: validation {setting.metric} {setting.relation} "
            f"{setting.target:g} ({setting.source})"
        )
        out.append(
            Table(
                slug=f"targets-{setting.slug}",
                title=title,
                header=HEADER,
                cells=tuple(cells(setting)),
                numeric=NUMERIC,
                classes=tuple(_class(r) for r in setting.rows),
                csv_path=f"targets/{setting.slug}.csv",
                csv=to_csv(setting),
            )
        )
    return out


PROFILE_HEADER = (
    "method",
    "area (time)",
    "area (steps)",
    "fastest (time)",
    "fastest (steps)",
    "settings run",
)


def profile_table(profile_: Profile) -> Table:
    """The areas under the profiles (and rho(1), the fraction of settings where a method is
    the fastest), best area first."""
    rows, csv_rows = [], []
    for method in profile_.order():
        values = [
            profile_.area("time", method),
            profile_.area("steps", method),
            profile_.best("time", method),
            profile_.best("steps", method),
        ]
        rows.append(
            (
                method,
                *("-" if v is None else f"{v:.3f}" for v in values[:2]),
                *("-" if v is None else f"{100 * v:.0f} %" for v in values[2:]),
                f"{profile_.runs.get(method, 0)} of {max(profile_.runs.values())}",
            )
        )
        csv_rows.append([method, *(_csv_number(v) for v in values), profile_.runs.get(method, 0)])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "area_time", "area_steps", "rho1_time", "rho1_steps", "settings"])
    for line in csv_rows:
        writer.writerow([escape.csv_cell(v) for v in line])
    note = (
        f"Area: 1/(tau_max - 1) x the integral of rho(tau) from 1 to tau_max = "
        f"{profile_.tau_max:g}; 1 is fastest on every setting, 0 never within "
        f"{profile_.tau_max:g} x the fastest. Fastest: rho(1), ties counting for every tied "
        "method."
    )
    left = [f"{n} setting(s) without recorded {k}" for k, n in profile_.left_out.items() if n]
    if left:
        note += " Left out: " + "; ".join(left) + " (trials written before histories kept it)."
    return Table(
        slug="profiles-area",
        title="Area under the performance profiles",
        header=PROFILE_HEADER,
        cells=tuple(rows),
        numeric=PROFILE_HEADER[1:],
        note=note,
        csv_path="profiles.csv",
        csv=buffer.getvalue(),
    )
