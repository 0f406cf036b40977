"""Samples side by side: the images each method's selected configuration produced.

A generative task keeps a few of the final model's outputs with each trial (the store's
``samples`` column; :meth:`~demon_optim.study.tasks.Task.final_outputs`). Per setting, this
draws one panel per method: the first seed's images of its selected configuration (the one
the table reports), tiled into a square grid, so the methods can be compared by eye as the
Demon paper compares its score networks' samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demon_optim.report.escape import mathtext
from demon_optim.report.load import StoreData
from demon_optim.report.tables import Setting


@dataclass(frozen=True)
class Panel:
    """One method's images in one setting, tiled: ``[H, W]`` or ``[H, W, 3]`` in [0, 1]."""

    method: str
    seed: int
    image: np.ndarray
    count: int  # images in the grid


def tile(pixels: np.ndarray, pad: int = 1) -> np.ndarray:
    """``[N, C, H, W]`` uint8 images as one grid image of ceil(sqrt(N)) columns, in [0, 1]
    (white 1-pixel gaps; grayscale as ``[H, W]``, colour as ``[H, W, 3]``)."""
    n, c, h, w = pixels.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.ones((c, rows * (h + pad) + pad, columns * (w + pad) + pad))
    for i in range(n):
        r, k = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top : top + h, left : left + w] = pixels[i] / 255.0
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def panels(data: StoreData, setting: Setting) -> list[Panel]:
    """Per method of the setting, in table order: its selected configuration's first seed
    that has samples (none for a method without them)."""
    out = []
    for row in setting.rows:
        if row.config is None:
            continue
        chosen = [
            t
            for t in data.trials
            if t.method == row.method
            and t.status == "done"
            and t.samples is not None
            and t.hyperparameters == dict(row.config)
            and t.task == setting.task
            and (t.epochs, t.batch_size, t.token_budget)
            == (setting.epochs, setting.batch_size, setting.token_budget)
        ]
        if not chosen:
            continue
        first = min(chosen, key=lambda t: t.seed)
        assert first.samples is not None
        pixels = first.samples.array()
        out.append(Panel(row.method, first.seed, tile(pixels), len(pixels)))
    return out


def draw(setting: Setting, shown: Sequence[Panel]):  # -> Figure
    from matplotlib.figure import Figure

    columns = min(4, len(shown))
    rows = math.ceil(len(shown) / columns)
    fig = Figure(figsize=(3.2 * columns, 3.5 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, panel in zip(axes, shown, strict=False):
        ax.imshow(panel.image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(mathtext(f"{panel.method} (seed {panel.seed})"), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    fig.suptitle(mathtext(f"{setting.name}: samples of each selected configuration"), fontsize=10)
    return fig
