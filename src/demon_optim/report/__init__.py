"""Reports a researcher would put in a paper, built from a results store (or a published CSV).

Data flows one way: the report reads only the store (``load``), then computes per-setting
tables (``tables``), the Top-1/Top-3 statistic (``topk``), robustness heatmaps
(``heatmaps``), curves (``curves``), steps and training time to a validation target with the
performance profiles built on them (``targets``, ``profiles``), the tuning-budget curves and
success rates of sampled methods (``budgets``, on the formulas of ``tuning``), and writes one
self-contained HTML page plus Markdown, CSV and PNG/SVG files (``html``). ``external`` reads a
published table instead of a store; ``imported`` shows published trials imported into the
store, apart from the user's own. See ``docs/report.md``.

>>> from demon_optim.report import build_report
>>> build_report("runs/quick.sqlite", "runs/quick-report")  # doctest: +SKIP
PosixPath('runs/quick-report/index.html')
"""

from __future__ import annotations

import datetime
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence

from demon_optim.report import naming
from demon_optim.report.heatmaps import Tolerance, parse_tolerance
from demon_optim.report.html import Content
from demon_optim.report.load import StoreData, Trial, load_store
from demon_optim.report.tables import Setting

__all__ = [
    "Tolerance",
    "build_report",
    "build_report_from_csv",
    "csv_content",
    "parse_tolerance",
    "store_content",
]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _values(values: Iterable[object]) -> str:
    from demon_optim.study.methods import format_value
    from demon_optim.study.methods.hyperparameters import jsonable

    def order(value: object) -> tuple[int, float, str]:
        """Numbers by value, then anything else (bools, strings, tuples) by its JSON."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (0, float(value), "")
        return (1, 0.0, json.dumps(jsonable(value)))  # type: ignore[arg-type]

    unique = sorted(set(values), key=order)
    return "{" + ", ".join(format_value(v) for v in unique) + "}"  # type: ignore[arg-type]


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min ({value:.0f} s)"


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _sampled(data: StoreData, method: str, names: list[str]) -> str:
    """A sampled method's values in the header: the range of each hyperparameter drawn,
    and its searches (sampler, seed, batch, tuning budgets)."""
    values = {n: [t.hyperparameters[n] for t in data.trials if t.method == method] for n in names}
    parts = []
    for name in names:
        distinct = set(values[name])
        numbers = [v for v in distinct if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(distinct) > 5 and len(numbers) == len(distinct):
            parts.append(f"{name} {len(distinct)} values in [{min(numbers):g}, {max(numbers):g}]")
        else:
            parts.append(f"{name} {_values(distinct)}")
    searches = "; ".join(
        f"{len(s.draws)} configurations by {s.sampler} (seed {s.seed}, batches of {s.batch}, "
        f"tuning budgets {', '.join(map(str, s.tuning_budgets))}) on {s.task}, {s.epochs} epochs"
        for s in data.searches
        if s.method == method
    )
    return " x ".join(parts) + f" ({searches})"


def _header(data: StoreData) -> list[tuple[str, str]]:
    from demon_optim.report.imported import header_line

    imported = header_line(data)
    if not data.trials:  # a store of imported results only
        return [
            ("store", str(data.path.resolve())),
            ("store created", data.meta.get("created_at", "unknown")),
            ("report built", _now()),
            *([imported] if imported else []),
        ]
    trials = data.trials
    about = {t.task: t.about for t in trials}  # how each task reads, as the store says
    tasks = sorted(about)
    task_text = "; ".join(
        f"{name} ({about[name].metric}, "
        f"{'higher' if about[name].higher_is_better else 'lower'} is better)"
        for name in tasks
    )
    by_method = {t.method: t.about for t in trials}
    methods = sorted(by_method, key=lambda m: (naming.family_sort_key(by_method[m].family), m))
    statuses = [t.status for t in trials]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("done", "diverged", "failed"))
    starts = [d for d in (_parse_time(t.started_at) for t in trials) if d]
    ends = [d for d in (_parse_time(t.finished_at) for t in trials) if d]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    versions: dict[str, int] = {}
    for trial in trials:
        text = ", ".join(f"{k} {v}" for k, v in sorted(trial.versions.items())) or "unknown"
        versions[text] = versions.get(text, 0) + 1
    version_text = "; ".join(
        text if len(versions) == 1 else f"{text} ({n} trials)" for text, n in versions.items()
    )
    wall = f"{_seconds(sum(t.wall_time_s for t in trials))} summed over trials"
    if span is not None:
        wall += f"; {_seconds(span)} from the first trial's start to the last one's end"
    header = [
        ("store", str(data.path.resolve())),
        ("store created", data.meta.get("created_at", "unknown")),
        ("report built", _now()),
        ("tasks", task_text),
        (
            "methods",
            ", ".join(m + (" (reference)" if by_method[m].reference else "") for m in methods),
        ),
    ]
    sampled = {s.method: s for s in data.searches}
    for method in methods:
        names: list[str] = []
        for t in trials:
            if t.method == method:
                names += [n for n in t.hyperparameters if n not in names]
        if method in sampled:
            header.append((f"sampled: {method}", _sampled(data, method, names)))
            continue
        grid = " x ".join(
            f"{name} {_values(t.hyperparameters[name] for t in trials if t.method == method)}"
            for name in names
        )
        header.append((f"grid: {method}", grid))
    header += [
        ("seeds", _values(float(t.seed) for t in trials)),
        (
            "budgets",
            f"epochs {_values(float(t.epochs) for t in trials)}, batch size "
            f"{_values(float(t.batch_size) for t in trials)}",
        ),
        ("trials", f"{len(trials)} ({counts})"),
        ("execution", execution_line(trials)),
        ("wall time", wall),
        ("versions", version_text),
    ]
    if imported:
        header.append(imported)
    return header


def execution_line(trials: Sequence[Trial]) -> str:
    """How the trials were trained: each alone, or how many in how many batches."""
    batches: dict[str, int] = {}
    for trial in trials:
        execution = trial.execution or {}
        if execution.get("mode") == "batched":
            batches[str(execution.get("batch"))] = int(execution.get("size", 1))
    batched = sum(1 for t in trials if (t.execution or {}).get("mode") == "batched")
    if not batched:
        return f"each trial trained alone ({len(trials)})"
    sizes = sorted(batches.values())
    size = f"{sizes[0]}" if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"
    return (
        f"{batched} trials trained in {len(batches)} batch{'es' if len(batches) != 1 else ''} "
        f"of {size} models, {len(trials) - batched} alone; a batched trial's wall time and "
        "training time are its batch's divided by the batch's size (docs/batched-trials.md)"
    )


def store_content(
    store_path: str | pathlib.Path,
    *,
    tolerance: Tolerance | str | None = None,
    rank_all: bool = False,
    trial_ids: Iterable[str] | None = None,
    targets: Mapping[str, float] | None = None,
) -> Content:
    """Compute every view of a store's report (no files written); ``targets``: validation
    targets by task, before those the trials recorded (:mod:`demon_optim.report.targets`)."""
    from demon_optim.report import (
        budgets,
        curves,
        glue,
        heatmaps,
        html,
        imported,
        samples,
        tables,
        topk,
    )
    from demon_optim.report import targets as targets_module

    if isinstance(tolerance, str):
        tolerance = parse_tolerance(tolerance)
    data = load_store(store_path, trial_ids)
    given = _checked_targets(data, targets)  # before anything is drawn
    settings = tables.store_settings(data, rank_all=rank_all)
    published = imported.imported_tables(data)  # shown apart, never selected with the user's
    figures = []
    maps = heatmaps.heatmaps(data, settings, tolerance)
    for heatmap in maps:
        figures.append(
            html.render(
                heatmaps.draw(heatmap),
                heatmap.slug,
                "heatmaps",
                f"Robustness: {heatmap.setting.name}",
                heatmap.summary(),
            )
        )
    for setting in settings:
        lines = curves.setting_curves(data, setting)
        if not lines:
            continue
        beside = imported.overlay(data, published, setting)
        figures.append(
            html.render(
                curves.draw_validation(setting, lines, beside),
                f"validation_{setting.slug}",
                "curves",
                f"Validation {setting.metric}: {setting.name}",
                "Each method's selected configuration; mean over seeds, min-max shaded."
                + (
                    " Dashed, labelled imported: published results of the same task and "
                    "metric imported into the store (not selected or ranked with these)."
                    if beside
                    else ""
                ),
            )
        )
        figures.append(
            html.render(
                curves.draw_schedules(setting, lines),
                f"schedules_{setting.slug}",
                "curves",
                f"Schedules applied: {setting.name}",
                "Learning rate and momentum at each epoch's last step, read from the trials' "
                "histories (first seed); dashed: the Demon formula from "
                "demon_optim.schedules.curve.",
            )
        )
    for setting in settings:
        shown = samples.panels(data, setting)
        if shown:
            figures.append(
                html.render(
                    samples.draw(setting, shown),
                    f"samples_{setting.slug}",
                    "samples",
                    f"Samples: {setting.name}",
                    "The final model's samples, first seed of each method's selected "
                    "configuration.",
                )
            )
    for table in published:
        lines = imported.table_curves(data, table)
        if lines:
            figures.append(
                html.render(
                    imported.draw(table, lines),
                    f"imported_{table.slug}",
                    "imported",
                    f"Validation {table.metric}: {table.name}",
                    "Each imported method's selected configuration, dashed: against epochs "
                    "(mean over seeds, min-max shaded) or, for timed evaluations (AlgoPerf), "
                    "against training time, one line per seed.",
                )
            )
    glue_tables = glue.glue_tables(settings)
    sections = ("tables", "glue") if glue_tables else ("tables",)
    sections += ("topk", "heatmaps", "curves")
    if any(f.section == "samples" for f in figures):
        sections += ("samples",)
    goals = targets_module.resolve_targets(data, given)
    reaching = targets_module.target_settings(data, settings, goals)
    notes = _store_notes(maps, rank_all)
    if data.searches:
        notes["heatmaps"] += (
            ' Sampled configurations (search = "sample") are not drawn here: they form no '
            "grid; their band is the success rate below."
        )
    # always shown, as the heatmaps are: without a target, its note says how to set one
    sections += ("targets",)
    notes["targets"] = _targets_note(goals)
    if any(t.execution is not None for t in data.trials):
        notes["targets"] += (
            " Trials trained in a batch (header: execution) count their batch's training time "
            "divided by its number of models."
        )
    blocks: dict[str, list[html.Table]] = {"targets": targets_module.tables(reaching)}
    shown = targets_module.profile(reaching)
    if shown is not None:
        sections += ("profiles",)
        count = len(reaching)
        figures.append(
            html.render(
                targets_module.draw_profiles(shown),
                "profiles",
                "profiles",
                "Performance profiles",
                f"Over {count} setting{'s' if count != 1 else ''} (task x budget) with a "
                "target; a method's cost on a setting is the median over the seeds of its "
                "selected configuration; never reached counts as infinite.",
            )
        )
        blocks["profiles"] = [targets_module.profile_table(shown)]
        notes["profiles"] = _PROFILES_NOTE
    views = budgets.budget_views(data, settings, tolerance)  # only a store with searches
    if views:
        sections += ("budgets", "success")
        for view in views:
            figures.append(
                html.render(
                    budgets.draw(view),
                    f"budgets_{view.setting.slug}",
                    "budgets",
                    f"Tuning budgets: {view.setting.name}",
                    "Test metric of the best of the first k sampled configurations by "
                    "validation (solid; the study's tuning budgets marked), the expected "
                    "maximum of k configurations drawn from those sampled (dotted) and one "
                    "standard deviation (shaded, within the values observed); diamonds: "
                    "grid methods, at their number of configurations.",
                )
            )
        blocks["budgets"] = [budgets.budget_table(view) for view in views]
        blocks["success"] = [budgets.success_table(views)]
        notes["budgets"] = _BUDGETS_NOTE
        notes["success"] = (
            "Per search, the fraction of its configurations whose test metric (mean over "
            "seeds) is within the tolerance (--tolerance, as the heatmaps' band) of the best "
            "configuration any search of the setting drew; a configuration with a diverged "
            "or failed seed is outside. It describes the landscape each sampler saw, and "
            "selects nothing."
        )
    if not data.trials:  # imported results only: nothing of the user's to show
        sections = ()
    if published:
        sections += ("imported",)
    return Content(
        title=f"demon-optim report: {data.path.name}",
        header=_header(data),
        settings=settings,
        topk=topk.top_k(settings),
        figures=figures,
        notes=notes,
        sections=sections,
        glue=glue_tables,
        blocks=blocks,
        imported=published,
    )


def _checked_targets(data: StoreData, targets: Mapping[str, float] | None) -> dict[str, float]:
    """``targets`` checked against the store's tasks (ConfigError naming the entry)."""
    from demon_optim.study.spec import parse_targets

    metrics = {t.task: t.about.metric for t in data.trials}
    return parse_targets(targets or {}, metrics, "--target", "a task in the store")


def _targets_note(goals: Mapping[str, object]) -> str:
    from demon_optim.report.targets import Target

    none = sorted(task for task, goal in goals.items() if goal is None)
    notes = [g.note for g in goals.values() if isinstance(g, Target) and g.note]
    text = (
        "Per task x budget, every method's selected configuration (as in the tables): the "
        "first epoch whose validation metric reaches the target, with that epoch's "
        "cumulative optimizer steps and training time (the training steps alone: "
        "evaluation excluded). Median over seeds, min-max in brackets; a seed that never "
        "reaches the target counts as infinite (∞), so the median is 'not reached' once half "
        "the seeds or more never get there. time / best: the median's ratio to the fastest "
        "ranked method's (the performance ratio of the profiles). Epoch granularity: a "
        "target crossed within an epoch counts at the epoch's end."
    )
    if none:
        text += (
            f" No target for {', '.join(none)}: set one in the study ([targets]) or with "
            "report --target TASK=VALUE."
        )
    return " ".join([text, *notes])


_PROFILES_NOTE = (
    "AlgoPerf-style performance profiles (Dolan & Moré 2002; Dahl et al. 2023): with t(s, m) "
    "the cost for method m to reach the target on setting s and r(s, m) = t(s, m) / min over "
    "methods of t(s, m') its ratio to the fastest, rho_m(tau) is the fraction of settings "
    "with r(s, m) <= tau, drawn for tau from 1 to 4 on a log axis; the area is "
    "1/3 x the integral of rho_m over [1, 4]. Ties share the best time; a method that never "
    "reaches the target on a setting, or did not run it, has r = inf there. Ranked methods "
    "only (reference optimizers too with --rank-all)."
)


_BUDGETS_NOTE = (
    'For a method whose configurations were sampled (search = "sample"), its N draws in '
    "the order the sampler asked them. Best of the first k: the configuration with the best "
    "mean validation metric over seeds among the first k (the earliest of ties), and its "
    "test metric. Expected max (Dodge et al. 2019, 'Show your work'): with the N "
    "configurations sorted by validation from worst to best, E = sum_i t_(i) [(i/N)^k - "
    "((i-1)/N)^k], the test metric t expected of the best of k configurations drawn from "
    "them with replacement, ± the standard deviation of that distribution. Over orderings: "
    "the mean and standard deviation of the best of the first k over every order of the N "
    "draws (without replacement; weights [C(i,k) - C(i-1,k)] / C(N,k)). Configurations with "
    "a diverged or failed seed cannot be selected; P(none finished) is the chance that none "
    "of k drawn could (with replacement / over orderings), and the means are given that "
    "one could. Crowded Valley's one-shot (defaults) and small and large random-search "
    "budgets are points of this view."
)


def _store_notes(maps: list, rank_all: bool) -> dict[str, str]:
    reference = (
        "Reference optimizers are ranked too (--rank-all)."
        if rank_all
        else "Reference optimizers (AMSGrad, AdamW, AggMo, QHM, QHAdam, YellowFin; Muon, Lion, "
        "Schedule-Free AdamW) are shown in italics, outside the ranking."
    )
    heatmap_note = (
        "Cells: test metric, mean over seeds (the heatmap describes, it selects nothing); "
        "grey cells diverged or failed. Demon beside its vanilla counterpart on one colour "
        "scale; the band (red boxes) is the cells within the stated tolerance of the best "
        "cell of the figure."
    )
    if not maps:
        heatmap_note = (
            "No setting in this store has a method with at least 2 learning rates and 2 "
            "momenta, so there is nothing to draw (the robustness preset has: "
            "demon-optim run robustness)."
        )
    return {
        "tables": "Setting = task x optimizer family x epoch budget. Per method, the "
        "configuration with the best mean validation metric over seeds (among those whose "
        "every seed finished) is selected; its test metric is reported as mean ± sample "
        "std over seeds, with a 95 % Student-t interval where there are 3 seeds or more. "
        "Ranks: competition ranking (ties share a rank: 1, 1, 3) of the test mean; best "
        "shaded. Diverged and failed trials are counted over all configurations. " + reference,
        "topk": "As in the paper: rank the methods within each setting, count how often each "
        "is ranked first (Top-1) and among the first three (Top-3); ties share a rank, so all "
        "tied methods count. Methods are compared across families by schedule name (demon = "
        "demon-sgdm and demon-adam; lr-cosine = sgdm+lr-cosine and adam+lr-cosine; none = "
        "constant lr). " + reference,
        "glue": "Each method's selected configuration per GLUE task (test metrics: GLUE's "
        "dev sets, whose test labels are not public), as a task score x 100: the mean of the "
        "task's metrics (CoLA Matthews; MRPC and QQP F1 and accuracy; STS-B Pearson and "
        "Spearman; MNLI matched and mismatched accuracy; accuracy otherwise). The GLUE score "
        "is the mean of the nine task scores; with fewer tasks, the mean of those present.",
        "heatmaps": heatmap_note,
        "curves": "Validation metric per epoch of each method's selected configuration, and "
        "the learning rate and momentum it applied, as recorded by the trials.",
        "imported": "Published results imported into this store (demon-optim report --import: "
        "AlgoPerf logs, DeepOBS runs), kept apart from the trials run here: never in the "
        "tables, Top-k, heatmaps or their selection above. Per imported method, the "
        "configuration with the best mean validation metric over its seeds (among those "
        "whose every seed finished) and its test metric, mean ± sample std over seeds; rows "
        "are sorted, not ranked. Their numbers come from other code, data pipelines and "
        "hardware: compare with care.",
    }


def build_report(
    store_path: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    *,
    tolerance: Tolerance | str | None = None,
    rank_all: bool = False,
    trial_ids: Iterable[str] | None = None,
    force: bool = False,
    targets: Mapping[str, float] | None = None,
) -> pathlib.Path:
    """Write the report of a store into ``out_dir``; returns ``out_dir/index.html``.

    ``tolerance``: the heatmap band, ``"0.01"`` (absolute, metric units) or ``"2%"``
    (relative); default 1 percentage point for accuracy, 2 % otherwise. ``rank_all`` ranks
    the reference optimizers too. ``trial_ids`` restricts the report to those trials (e.g.
    one study's, when a store holds several). ``targets``: validation targets by task for
    the time-to-target view, instead of those the trials recorded (e.g. ``{"mnist1d-cnn":
    0.9}``).

    ``out_dir`` may be new, empty, or hold an earlier report (replaced); a folder holding
    anything else is refused with a ConfigError unless ``force``, so a user's own files are
    never silently replaced. A failed write (full disk, read-only file system) raises
    :class:`~demon_optim.errors.EnvironmentFailure` and leaves the earlier report as it was
    (:mod:`demon_optim.report.output`).
    """
    from demon_optim.report import html

    content = store_content(
        store_path, tolerance=tolerance, rank_all=rank_all, trial_ids=trial_ids, targets=targets
    )
    return html.write(content, out_dir, force=force)


def csv_content(
    csv_path: str | pathlib.Path, higher_is_better: bool = False, rank_all: bool = False
) -> Content:
    """Tables and Top-k of a published table (``setting,method,value[,std]``)."""
    from demon_optim.report import external, topk

    settings: list[Setting] = external.read_csv(csv_path, higher_is_better, rank_all)
    path = pathlib.Path(csv_path)
    methods = sorted({row.method for s in settings for row in s.rows})
    return Content(
        title=f"demon-optim report: {path.name}",
        header=[
            ("source", str(path.resolve())),
            ("report built", _now()),
            ("direction", "higher is better" if higher_is_better else "lower is better"),
            ("settings", str(len(settings))),
            ("methods", ", ".join(methods)),
        ],
        settings=settings,
        topk=topk.top_k(settings),
        sections=("tables", "topk"),
        notes={
            "tables": "Values as published; ranks are competition ranks (ties share a rank).",
            "topk": "Methods are counted by schedule name across settings, names compared "
            "case-insensitively: registered method names and the paper's labels (e.g. "
            "'LR cosine', 'sgdm+lr-cosine') map to one key (lr-cosine); other names are "
            "kept as first written. Reference optimizers are "
            + ("ranked (--rank-all)." if rank_all else "left out of the ranking."),
        },
    )


def build_report_from_csv(
    csv_path: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    higher_is_better: bool = False,
    rank_all: bool = False,
    force: bool = False,
) -> pathlib.Path:
    """Write tables, ``topk.csv`` and ``index.html`` of a published table into ``out_dir``
    (the folder rules and ``force``: as :func:`build_report`)."""
    from demon_optim.report import html

    return html.write(csv_content(csv_path, higher_is_better, rank_all), out_dir, force=force)
