"""Training curves and the schedules actually applied, per setting.

* Validation metric per epoch of each method's *selected* configuration (the one the tables
  report): the mean over its seeds, with the min-max range over seeds shaded.
* The learning rate and momentum each selected configuration applied, read from the trials'
  histories (``lr`` and ``momentum`` at each epoch's last step, so plateau decay and any
  schedule no formula reproduces are plotted as they happened; seeds agree except for
  plateau decay, and the first seed is drawn), with the Demon formula
  ``demon_optim.schedules.curve("demon", ...)`` drawn over Demon's recorded momentum. The
  formula depends on k / T only, so it is drawn against epochs at 50 points per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from demon_optim import schedules
from demon_optim.report import naming
from demon_optim.report.escape import mathtext
from demon_optim.report.load import StoreData, Trial
from demon_optim.report.tables import Row, Setting
from demon_optim.study.methods import Value

POINTS_PER_EPOCH = 50


@dataclass(frozen=True)
class Curve:
    """One selected configuration's validation metric per epoch over its seeds."""

    method: str
    schedule: str
    epochs: np.ndarray  # 1..E
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int
    lr: np.ndarray  # applied, first seed
    momentum: np.ndarray


def _selected_trials(trials: Sequence[Trial], row: Row) -> list[Trial]:
    config: Mapping[str, Value] | None = row.config
    if config is None:
        return []
    return [
        t
        for t in trials
        if t.method == row.method and t.status == "done" and t.hyperparameters == dict(config)
    ]


def _column(history: Sequence[Mapping[str, object]], key: str) -> np.ndarray:
    return np.array(
        [np.nan if r.get(key) is None else float(r[key]) for r in history],  # type: ignore[arg-type]
        dtype=float,
    )


def setting_curves(data: StoreData, setting: Setting) -> list[Curve]:
    """The curves of every method with a selected configuration in ``setting``."""
    trials = [
        t
        for t in data.trials
        if (t.task, t.epochs, t.batch_size) == (setting.task, setting.epochs, setting.batch_size)
    ]
    curves = []
    for row in setting.rows:
        chosen = sorted(_selected_trials(trials, row), key=lambda t: t.seed)
        if not chosen:
            continue
        length = min(len(t.history) for t in chosen)
        if length == 0:
            continue
        vals = np.stack([_column(t.history[:length], "val_metric") for t in chosen])
        first = chosen[0].history[:length]
        curves.append(
            Curve(
                method=row.method,
                schedule=row.schedule,
                epochs=_column(first, "epoch"),
                mean=vals.mean(axis=0),
                low=vals.min(axis=0),
                high=vals.max(axis=0),
                seeds=len(chosen),
                lr=_column(first, "lr"),
                momentum=_column(first, "momentum"),
            )
        )
    return curves


def demon_formula(config: Mapping[str, Value], epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, beta) of the Demon schedule for ``config`` over ``epochs`` (x from 0 to E)."""
    total = epochs * POINTS_PER_EPOCH
    beta = schedules.curve(
        "demon",
        total,
        float(config["momentum"]),  # type: ignore[arg-type]
        delay=float(config.get("delay", 0.0)),  # type: ignore[arg-type]
    )
    return np.arange(total + 1) / POINTS_PER_EPOCH, beta


_PALETTE = (  # matplotlib's tab10 without red (Demon's), then tab20's light shades
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
)  # fmt: skip


#: Imported (published) curves: dark and muted, always dashed, so none reads as a user's.
IMPORTED_PALETTE = ("#3b3b3b", "#8c564b", "#7b4173", "#637939", "#843c39", "#5254a3")


def colour(schedule: str) -> str:
    """A fixed colour per schedule name, the same in every figure; Demon is red."""
    if schedule == "demon":
        return "#d62728"
    names = [n for n in naming.LABELS if n != "demon"]
    index = names.index(schedule) if schedule in names else len(names) + sum(map(ord, schedule))
    return _PALETTE[index % len(_PALETTE)]


def draw_validation(
    setting: Setting, curves: Sequence[Curve], imported: Sequence[Curve] = ()
):  # -> Figure
    """The selected configurations' validation curves; ``imported``: published curves of
    the same task and metric (:func:`demon_optim.report.imported.overlay`), drawn dashed
    and unshaded beside them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 4.6), layout="constrained")
    ax = fig.subplots()
    for curve in curves:
        demon = curve.schedule == "demon"
        c = colour(curve.schedule)
        seeds = f"{curve.seeds} seed" + ("s" if curve.seeds != 1 else "")
        ax.plot(curve.epochs, curve.mean, color=c, lw=2.2 if demon else 1.3,
                label=mathtext(f"{curve.method} ({seeds})"))  # fmt: skip
        if curve.seeds > 1:
            ax.fill_between(curve.epochs, curve.low, curve.high, color=c, alpha=0.15, lw=0)
    for index, curve in enumerate(imported):
        seeds = f"{curve.seeds} seed" + ("s" if curve.seeds != 1 else "")
        shade = IMPORTED_PALETTE[index % len(IMPORTED_PALETTE)]
        ax.plot(curve.epochs, curve.mean, color=shade, lw=1.3, ls="--", marker=".", ms=3,
                label=mathtext(f"{curve.method} ({seeds})"))  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(mathtext(f"validation {setting.metric}"))
    ax.set_title(
        mathtext(f"{setting.name}: validation {setting.metric} of each selected configuration")
        + "\n(line: mean over seeds; band: min-max over seeds)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def draw_schedules(setting: Setting, curves: Sequence[Curve]):  # -> Figure
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_lr, ax_m = fig.subplots(1, 2)
    rows = {row.method: row for row in setting.rows}
    formula_drawn = False
    for curve in curves:
        demon = curve.schedule == "demon"
        c = colour(curve.schedule)
        kw = {"color": c, "lw": 2.0 if demon else 1.2, "marker": "o" if demon else None, "ms": 2.5}
        ax_lr.plot(curve.epochs, curve.lr, label=mathtext(curve.method), **kw)
        ax_m.plot(curve.epochs, curve.momentum, label=mathtext(f"{curve.method} (applied)"), **kw)
        config = rows[curve.method].config
        if demon and config is not None and setting.epochs:
            x, beta = demon_formula(config, setting.epochs)
            name = None if formula_drawn else "Demon formula (schedules.curve)"
            ax_m.plot(x, beta, color="black", ls="--", lw=1.0, label=name)
            formula_drawn = True
    ax_lr.set_title("learning rate applied (last step of each epoch)", fontsize=10)
    ax_m.set_title("momentum / beta1 applied", fontsize=10)
    for ax in (ax_lr, ax_m):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_lr.set_ylabel("learning rate")
    ax_m.set_ylabel("momentum")
    ax_m.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle(mathtext(f"{setting.name}: schedules of the selected configurations"), fontsize=10)
    return fig
