"""Robustness heatmaps over the learning-rate x momentum (beta1) grid.

One cell per (lr, momentum) of a method, from the trials of one setting (task x family x
budget). A cell shows the **test** metric, mean over seeds, as the paper's heatmaps do: the
heatmap describes how the trained model's quality varies over the grid, it selects nothing,
so the honest-selection rule (validation picks, test reports) is not at stake; showing test
also makes the best cell comparable with the tables. When a method has more than one
configuration per cell (other hyperparameters tuned, e.g. weight decay), the cell takes the
configuration with the best mean validation metric, as the tables do. A cell with a diverged
or failed seed (and no configuration finished on every seed) is drawn grey and marked, and is
never in the band.

Demon is drawn beside its vanilla counterpart (demon-sgdm beside sgdm, demon-adam beside
adam), then any other method of the family with an lr x momentum grid, all on one colour
scale. The *band* of good hyperparameters (the paper's claim: Demon's is markedly larger) is
the set of cells within a tolerance of the best cell of the whole figure: an absolute
tolerance in the metric's units (default for accuracy: 0.01, one percentage point) or a
relative one (default otherwise: 2 %).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demon_optim.errors import invalid
from demon_optim.report.escape import mathtext
from demon_optim.report.load import StoreData, Trial
from demon_optim.report.tables import Setting, setting_key


@dataclass(frozen=True)
class Tolerance:
    """How far from the best a cell may be and still count as good."""

    value: float
    relative: bool  # True: a fraction of |best|; False: metric units

    def threshold(self, best: float, higher_is_better: bool) -> float:
        width = abs(best) * self.value if self.relative else self.value
        return best - width if higher_is_better else best + width

    def describe(self, metric: str) -> str:
        if self.relative:
            return f"{self.value * 100:g} % (relative)"
        if _is_fraction_metric(metric):
            points = self.value * 100
            unit = "percentage point" if points == 1 else "percentage points"
            return f"{self.value:g} {metric} ({points:g} {unit})"
        return f"{self.value:g} {metric} (absolute)"


_TOLERANCE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)\s*$")


def parse_tolerance(text: str) -> Tolerance:
    """``"0.01"``: absolute, in the metric's units; ``"2%"``: relative to the best cell."""
    match = _TOLERANCE.match(str(text))
    if not match:
        raise invalid(
            "tolerance", text, "a number >= 0 in the metric's units (0.01) or a percentage (2%)"
        )
    value = float(match.group(1))
    if match.group(2):
        return Tolerance(value / 100.0, relative=True)
    return Tolerance(value, relative=False)


def _is_fraction_metric(metric: str) -> bool:
    return metric.lower() in {"accuracy", "error", "top1", "top-1 accuracy"}


def default_tolerance(metric: str) -> Tolerance:
    """1 percentage point for accuracy-like metrics (fractions), 2 % relative otherwise."""
    if _is_fraction_metric(metric):
        return Tolerance(0.01, relative=False)
    return Tolerance(0.02, relative=True)


@dataclass(frozen=True)
class Grid:
    """One method's cells: ``values[i, j]`` for momentum ``momenta[i]`` and lr ``lrs[j]``."""

    method: str
    lrs: tuple[float, ...]
    momenta: tuple[float, ...]
    values: np.ndarray  # NaN where no value
    notes: dict[tuple[int, int], str]  # "div", "failed" for cells without a value

    def in_band(self, threshold: float, higher_is_better: bool) -> np.ndarray:
        eps = 1e-12 * max(1.0, abs(threshold))
        with np.errstate(invalid="ignore"):
            if higher_is_better:
                return self.values >= threshold - eps
            return self.values <= threshold + eps

    @property
    def cells(self) -> int:
        return len(self.lrs) * len(self.momenta)


@dataclass(frozen=True)
class Heatmap:
    """The figure for one setting: its grids on one colour scale, and the band counts."""

    setting: Setting
    grids: tuple[Grid, ...]
    tolerance: Tolerance
    best: float
    threshold: float

    def band(self, grid: Grid) -> int:
        return int(grid.in_band(self.threshold, self.setting.higher_is_better).sum())

    @property
    def slug(self) -> str:
        return f"heatmap_{self.setting.slug}"

    def summary(self) -> str:
        parts = [f"{g.method}: {self.band(g)} of {g.cells} cells" for g in self.grids]
        tol = self.tolerance.describe(self.setting.metric)
        return (
            f"band = cells within {tol} of the best cell ({self.best:.4g}; threshold "
            f"{self.threshold:.4g}): " + "; ".join(parts)
        )


def method_grid(trials: Sequence[Trial], method: str, higher_is_better: bool) -> Grid | None:
    """The lr x momentum grid of ``method`` in ``trials``; None without lr and momentum."""
    cells: dict[tuple[float, float], dict[str, list[Trial]]] = {}
    for trial in trials:
        if trial.method != method or trial.lr is None or trial.momentum is None:
            continue
        key = repr(sorted(trial.hyperparameters.items()))
        cells.setdefault((trial.lr, trial.momentum), {}).setdefault(key, []).append(trial)
    if not cells:
        return None
    lrs = tuple(sorted({lr for lr, _ in cells}))
    momenta = tuple(sorted({m for _, m in cells}))
    values = np.full((len(momenta), len(lrs)), np.nan)
    notes: dict[tuple[int, int], str] = {}
    for (lr, momentum), configs in cells.items():
        i, j = momenta.index(momentum), lrs.index(lr)
        best_val, best_test = None, None
        for group in configs.values():
            if any(t.status != "done" for t in group):
                continue
            val = statistics.fmean(t.val_metric for t in group)  # type: ignore[misc]
            if best_val is None or (val > best_val if higher_is_better else val < best_val):
                best_val = val
                best_test = statistics.fmean(t.test_metric for t in group)  # type: ignore[misc]
        if best_test is not None:
            values[i, j] = best_test
        else:
            statuses = {t.status for group in configs.values() for t in group}
            notes[(i, j)] = "div" if "diverged" in statuses else "failed"
    return Grid(method, lrs, momenta, values, notes)


def _panel_order(setting: Setting) -> list[str]:
    """Demon first, its vanilla counterpart second, then the family's other methods."""
    family = setting.family or ""
    first = [f"demon-{family}", family]
    others = [row.method for row in setting.rows if row.method not in first]
    return [m for m in first if any(r.method == m for r in setting.rows)] + others


def heatmaps(
    data: StoreData, settings: Sequence[Setting], tolerance: Tolerance | None = None
) -> list[Heatmap]:
    """One heatmap figure per setting that has a method with >= 2 lrs and >= 2 momenta.

    The trials of sampled configurations (a search's draws) are left out: they are no grid,
    and most cells of their lr x momentum product were never run (the success rate,
    :mod:`demon_optim.report.budgets`, is their band)."""
    drawn = {i for s in data.searches for d in s.draws for i in d.trial_ids}
    by_setting: dict[tuple, list[Trial]] = {}
    for trial in data.trials:
        if trial.trial_id not in drawn:
            by_setting.setdefault(setting_key(trial), []).append(trial)
    figures = []
    for setting in settings:
        trials = by_setting.get(setting.key, [])
        grids = []
        for method in _panel_order(setting):
            grid = method_grid(trials, method, setting.higher_is_better)
            if grid is not None and len(grid.lrs) >= 2 and len(grid.momenta) >= 2:
                grids.append(grid)
        if not grids:
            continue
        finite = np.concatenate([g.values[np.isfinite(g.values)] for g in grids])
        if finite.size == 0:
            continue
        best = float(finite.max() if setting.higher_is_better else finite.min())
        tol = tolerance or default_tolerance(setting.metric)
        if tol.value < 0 or not math.isfinite(tol.value):
            raise invalid("tolerance", tol.value, "a finite number >= 0")
        figures.append(
            Heatmap(setting, tuple(grids), tol, best, tol.threshold(best, setting.higher_is_better))
        )
    return figures


# --- drawing ----------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def draw(heatmap: Heatmap):  # -> matplotlib.figure.Figure
    """The figure: one panel per grid, one colour scale (bright = good), band cells boxed."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    setting = heatmap.setting
    grids = heatmap.grids
    finite = np.concatenate([g.values[np.isfinite(g.values)] for g in grids])
    vmin, vmax = float(finite.min()), float(finite.max())
    if vmin == vmax:
        vmin, vmax = vmin - 0.5 * abs(vmin or 1.0) * 1e-3, vmax + 0.5 * abs(vmax or 1.0) * 1e-3
    cmap_name = "viridis" if setting.higher_is_better else "viridis_r"
    # Narrow grids side by side; wide ones (the paper's 11-13 learning rates) stacked, so
    # the panels' lr columns line up and the page does not shrink the text away.
    most_lrs = max(len(g.lrs) for g in grids)
    most_momenta = max(len(g.momenta) for g in grids)
    columns = len(grids) if most_lrs <= 6 else 1
    rows = math.ceil(len(grids) / columns)
    width = columns * (0.62 * most_lrs + 1.6) + 1.4
    height = rows * (0.42 * most_momenta + 1.7) + 0.7
    fig = Figure(figsize=(min(max(width, 7.5), 28), max(height, 3.2)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for spare in axes[len(grids) :]:
        spare.set_visible(False)
    axes = axes[: len(grids)]
    small = most_lrs > 8
    cmap = matplotlib.colormaps[cmap_name].with_extremes(bad="#d0d0d0")
    for ax, grid in zip(axes, grids, strict=True):
        image = ax.imshow(
            np.ma.masked_invalid(grid.values),
            origin="lower",
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            aspect="auto",
        )
        band = grid.in_band(heatmap.threshold, setting.higher_is_better)
        for i in range(len(grid.momenta)):
            for j in range(len(grid.lrs)):
                value = grid.values[i, j]
                if np.isfinite(value):
                    shade = (value - vmin) / (vmax - vmin)
                    if not setting.higher_is_better:
                        shade = 1.0 - shade
                    colour = "black" if shade > 0.6 else "white"
                    text = _fmt(value)
                else:
                    colour, text = "black", grid.notes.get((i, j), "")
                ax.text(j, i, text, ha="center", va="center", color=colour,
                        fontsize=7 if small else 8)  # fmt: skip
                if band[i, j]:
                    ax.add_patch(
                        Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2)
                    )
        ax.set_xticks(range(len(grid.lrs)), [f"{v:g}" for v in grid.lrs], rotation=45)
        ax.set_yticks(range(len(grid.momenta)), [f"{v:g}" for v in grid.momenta])
        ax.set_xlabel("learning rate")
        ax.set_ylabel("momentum (beta1)" if setting.family == "adam" else "momentum")
        ax.set_title(mathtext(f"{grid.method}\n{heatmap.band(grid)} of {grid.cells} cells in band"),
                     fontsize=10)  # fmt: skip
    fig.colorbar(image, ax=list(axes), label=mathtext(f"test {setting.metric} (mean over seeds)"))
    fig.suptitle(
        mathtext(
            f"{setting.name}: test {setting.metric}, mean over seeds\nred boxes: within "
            f"{heatmap.tolerance.describe(setting.metric)} of the best cell "
            f"({_fmt(heatmap.best)})"
        ),
        fontsize=10,
    )
    return fig
