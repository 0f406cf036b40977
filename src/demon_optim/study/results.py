"""Honest selection and the per-task results table.

For each (task, epoch budget, batch size) and each method, the selected configuration is the
one with the best mean *validation* metric over the study's seeds, among configurations whose
every seed finished (``done``); a configuration with a diverged, failed or missing seed is not
selectable (it is counted instead). The table reports the selected configuration's *test*
metric: mean ± sample standard deviation over seeds (the mean alone with one seed: a spread
needs two), the number of seeds, and a 95 % interval (Student t) when there are 3 seeds or
more. Methods are ranked by that test mean in the metric's direction; means equal at the
printed precision share a rank (1, 2, 2, 4).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from demon_optim.study.methods import Value, format_value, get_method, method_names
from demon_optim.study.spec import TrialAbout, TrialSpec

DIGITS = 4  # printed precision of metrics; ranks compare at this precision

# two-sided 95 % Student t quantiles, by degrees of freedom (1..30); 1.96 beyond
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


@dataclass(frozen=True)
class MethodResult:
    """One row of a task table."""

    method: str
    selected: dict[str, Value] | None  # None: no configuration finished on every seed
    shown: str  # the selected configuration as printed (untuned defaults left out)
    test_mean: float | None
    test_std: float | None  # None with one seed: no spread was measured
    ci95: float | None  # half-width, with 3 seeds or more
    seeds: int
    val_mean: float | None
    configs: int  # configurations in the study's grid
    diverged: int  # trials (all configurations)
    failed: int
    missing: int  # not in the store (interrupted study)
    rank: int | None = None
    trial_ids: tuple[str, ...] = ()  # the selected configuration's trials, one per seed


@dataclass(frozen=True)
class TaskTable:
    task: str
    epochs: int
    batch_size: int
    metric: str
    higher_is_better: bool
    rows: tuple[MethodResult, ...]
    token_budget: int | None = None


def _config_key(spec: TrialSpec) -> str:
    return json.dumps(spec.identity()["hyperparameters"])


def summarize(specs: Sequence[TrialSpec], rows: Iterable[Mapping[str, Any]]) -> list[TaskTable]:
    """Tables for the study ``specs`` from store ``rows`` (``ResultStore.rows()``)."""
    by_id = {row["trial_id"]: row for row in rows}
    # (task, epochs, batch, token budget) -> method -> config key -> [(spec, row or None)]
    groups: dict[tuple[str, int, int, int | None], dict[str, dict[str, list]]] = {}
    for spec in specs:
        key = (spec.task, spec.epochs, spec.batch_size, spec.token_budget)
        setting = groups.setdefault(key, {})
        setting.setdefault(spec.method, {}).setdefault(_config_key(spec), []).append(
            (spec, by_id.get(spec.trial_id))
        )
    tables = []
    for (task_name, epochs, batch_size, token_budget), methods in groups.items():
        about = _about(specs, task_name)
        results = [
            _method_result(name, configs, about.higher_is_better)
            for name, configs in methods.items()
        ]
        tables.append(
            TaskTable(
                task=task_name,
                epochs=epochs,
                batch_size=batch_size,
                token_budget=token_budget,
                metric=about.metric,
                higher_is_better=about.higher_is_better,
                rows=tuple(_ranked(results, about.higher_is_better)),
            )
        )
    return tables


def _about(specs: Sequence[TrialSpec], task: str) -> TrialAbout:
    """How a task's metric reads: from its specs (expanded specs carry it), else the registry."""
    for spec in specs:
        if spec.task == task and spec.about is not None:
            return spec.about
    spec = next(s for s in specs if s.task == task)
    return TrialAbout.of(task, spec.method)


def _method_result(name: str, configs: Mapping[str, list], higher_is_better: bool) -> MethodResult:
    counts = {"diverged": 0, "failed": 0, "missing": 0}
    best: tuple[float, list] | None = None
    for trials in configs.values():
        statuses = [row["status"] if row else "missing" for _, row in trials]
        for status in statuses:
            if status in counts:
                counts[status] += 1
        if any(status != "done" for status in statuses):
            continue
        val = statistics.fmean(row["val_metric"] for _, row in trials)
        better = best is None or (val > best[0] if higher_is_better else val < best[0])
        if better:
            best = (val, trials)
    if best is None:
        return MethodResult(name, None, "", None, None, None, 0, None, len(configs), **counts)
    val_mean, trials = best
    tests = [row["test_metric"] for _, row in trials]
    std = statistics.stdev(tests) if len(tests) > 1 else None
    ci = None
    if std is not None and len(tests) >= 3:
        ci = _T95[min(len(tests) - 1, len(_T95)) - 1] * std / math.sqrt(len(tests))
    selected = trials[0][0].config
    return MethodResult(
        method=name,
        selected=selected,
        shown=_shown(name, selected, configs),
        test_mean=statistics.fmean(tests),
        test_std=std,
        ci95=ci,
        seeds=len(tests),
        val_mean=val_mean,
        configs=len(configs),
        trial_ids=tuple(spec.trial_id for spec, _ in trials),
        **counts,
    )


def _shown(name: str, selected: Mapping[str, Value], configs: Mapping[str, list]) -> str:
    """Selected values, leaving out hyperparameters that were neither tuned nor changed
    (a method no longer registered, e.g. a plugin's in a report: every value is shown)."""
    defaults = get_method(name).default_grid() if name in method_names() else {}
    grid_values: dict[str, set] = {}
    for trials in configs.values():
        for key, value in trials[0][0].hyperparameters:
            grid_values.setdefault(key, set()).add(value)
    parts = []
    for key, value in selected.items():
        untouched = len(grid_values[key]) == 1 and defaults.get(key) == (value,)
        if not untouched:
            parts.append(f"{key}={format_value(value)}")
    return ", ".join(parts)


def _ranked(results: list[MethodResult], higher_is_better: bool) -> list[MethodResult]:
    """Rows sorted best first, with competition ranks; unselectable methods last, unranked."""
    sign = -1.0 if higher_is_better else 1.0
    scored = [r for r in results if r.test_mean is not None]
    scored.sort(key=lambda r: sign * round(r.test_mean, DIGITS))  # type: ignore[arg-type]
    ranked = []
    for i, row in enumerate(scored):
        same = i > 0 and round(row.test_mean, DIGITS) == round(scored[i - 1].test_mean, DIGITS)  # type: ignore[arg-type]
        rank = ranked[-1].rank if same else i + 1
        ranked.append(dataclasses.replace(row, rank=rank))
    return ranked + [r for r in results if r.test_mean is None]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.{DIGITS}f}"


def to_markdown(tables: Sequence[TaskTable]) -> str:
    """One Markdown table per (task, budget, batch size)."""
    blocks = []
    for table in tables:
        direction = "higher is better" if table.higher_is_better else "lower is better"
        with_ci = any(row.ci95 is not None for row in table.rows)
        with_std = any(row.test_std is not None for row in table.rows)
        header = [
            "rank",
            "method",
            "selected hyperparameters",
            f"test {table.metric} (mean ± std)" if with_std else f"test {table.metric}",
            *(["95 % CI"] if with_ci else []),
            "seeds",
            f"val {table.metric}",
            "configs",
            "diverged",
            "failed",
        ]
        if any(row.missing for row in table.rows):
            header.append("missing")
        align = ["---:", "---", "---", "---:", *(["---:"] if with_ci else []), *["---:"] * 5]
        if len(header) > len(align):
            align.append("---:")
        lines = [
            f"### {table.task}: {table.epochs} epochs, batch {table.batch_size}"
            + (f", {table.token_budget} tokens/epoch" if table.token_budget else "")
            + f" ({table.metric}, {direction})",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(align) + "|",
        ]
        for row in table.rows:
            if row.test_mean is None:
                test = "no configuration finished on every seed"
            elif row.test_std is None:  # one seed: no spread to show
                test = _number(row.test_mean)
            else:
                test = f"{_number(row.test_mean)} ± {_number(row.test_std)}"
            cells = [
                "-" if row.rank is None else str(row.rank),
                row.method,
                row.shown or "-",
                test,
                *([f"± {_number(row.ci95)}" if row.ci95 is not None else "-"] if with_ci else []),
                str(row.seeds),
                _number(row.val_mean),
                str(row.configs),
                str(row.diverged),
                str(row.failed),
            ]
            if "missing" in header:
                cells.append(str(row.missing))
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
