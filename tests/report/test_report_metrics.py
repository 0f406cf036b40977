"""Tasks with several metrics and final outputs: the store keeps them all and the report
shows them (other test metrics and final metrics as columns, metrics equal for every method
once beside the table, sample grids per method)."""

from __future__ import annotations

import csv
import io
import pathlib
import time

import numpy as np
import pytest
import torch

from demon_optim.report import build_report, samples, store_content, tables
from demon_optim.report.load import load_store
from demon_optim.study.methods import get_method
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.trial import Samples, TrialResult

TASK = "mnist1d-mlp"  # registered (accuracy); the metrics below are what a task reported


def _spec(method: str, seed: int, lr: float) -> TrialSpec:
    config = dict(get_method(method).grid()[0])
    config["lr"] = lr
    return TrialSpec(TASK, method, tuple(config.items()), seed, 3, 100)


def _result(
    method: str, seed: int, lr: float, val: float, f1: float, quality: float
) -> TrialResult:
    images = torch.full((4, 1, 3, 3), quality)
    images[0, 0, 0, 0] = 1.0  # one white pixel, to find in the grid
    return TrialResult(
        spec=_spec(method, seed, lr),
        status="done",
        val_metric=val,
        test_metric=val - 0.01,
        history=(
            {
                "epoch": 1,
                "train_loss": 1.0,
                "val_metric": val,
                "lr": lr,
                "momentum": 0.9,
                "elapsed_s": 0.1,
                "val_metrics": {"accuracy": val, "f1": f1},
            },
        ),
        wall_time_s=1.0,
        started_at=time.time(),
        versions={"torch": "test"},
        metrics={
            "val": {"accuracy": val, "f1": f1},
            "test": {"accuracy": val - 0.01, "f1": f1 - 0.01},
            "final": {"sample_score": quality, "real_score": 9.5, "broken": float("nan")},
        },
        samples=Samples.of(images),
    )


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "metrics.sqlite"
    with ResultStore(path) as db:
        for seed in (0, 1):
            db.write(_result("adam", seed, 1e-3, 0.8, 0.7 + 0.02 * seed, 0.2))
            db.write(_result("adam", seed, 1e-4, 0.6, 0.5, 0.1))  # not selected
            db.write(_result("demon-adam", seed, 1e-4, 0.85, 0.75, 0.4 + 0.2 * seed))
    return path


def test_the_store_keeps_every_metric_and_the_samples(store: pathlib.Path) -> None:
    with ResultStore(store, readonly=True) as db:
        row = db.rows()[0]
    assert row["metrics"]["test"] == {"accuracy": pytest.approx(0.79), "f1": pytest.approx(0.69)}
    assert row["metrics"]["final"]["broken"] is None  # non-finite values are stored as NULL
    assert row["history"][0]["val_metrics"] == {"accuracy": 0.8, "f1": 0.7}
    pixels = Samples.from_json(row["samples"]).array()
    assert pixels.shape == (4, 1, 3, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0, 0, 0] == 255 and pixels[1, 0, 0, 0] == round(0.2 * 255)


def test_the_table_shows_the_selected_configurations_other_metrics(store: pathlib.Path) -> None:
    (setting,) = tables.store_settings(load_store(store))
    by_method = {row.method: row for row in setting.rows}
    adam = {m.label: m for m in by_method["adam"].metrics}
    assert adam["test f1"].mean == pytest.approx(0.70) and adam["test f1"].std > 0  # lr 1e-3
    assert adam["sample_score"].mean == pytest.approx(0.2)
    assert "test accuracy" not in adam  # the selection metric is the table's own column
    demon = {m.label: m for m in by_method["demon-adam"].metrics}
    assert demon["sample_score"].mean == pytest.approx(0.5)
    # equal for every method: shown once, beside the table
    assert [m.label for m in setting.shared] == ["real_score"]
    assert setting.metric_columns == ("test f1", "sample_score", "broken")
    header, cells = tables.header_and_cells(setting)
    assert header[4:7] == ["test f1", "sample_score", "broken"]
    assert cells[0][5].startswith("0.5000 ± ") and cells[0][6] == "-"
    markdown = tables.to_markdown(setting)
    assert "The same for every method" in markdown and "real\\_score 9.5000." in markdown
    parsed = list(csv.DictReader(io.StringIO(tables.to_csv(setting))))
    assert float(parsed[0]["test_f1_mean"]) == pytest.approx(0.74)
    assert parsed[0]["broken_mean"] == ""


def test_the_report_draws_each_methods_samples(store: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = load_store(store)
    (setting,) = tables.store_settings(data)
    panels = samples.panels(data, setting)
    assert [p.method for p in panels] == ["demon-adam", "adam"] and panels[0].seed == 0
    assert panels[0].count == 4 and panels[0].image.shape == (2 * 4 + 1, 2 * 4 + 1)
    assert panels[0].image[1, 1] == 1.0 and panels[0].image[1, 2] == pytest.approx(0.4, abs=0.01)
    content = store_content(store)
    assert "samples" in content.sections
    index = build_report(store, tmp_path / "report")
    html = index.read_text()
    assert "Samples of the final models" in html and 'id="figure-samples_' in html
    assert (tmp_path / "report" / "figures").is_dir()


def test_tile_colour_and_a_partial_last_row() -> None:
    pixels = np.zeros((5, 3, 2, 2), dtype=np.uint8)
    pixels[4] = 255
    grid = samples.tile(pixels)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3)  # 3 columns, 2 rows
    assert (grid[4:6, 4:6] == 1.0).all() and (grid[1:3, 1:3] == 0.0).all()


def test_published_results_of_a_task_go_beside_its_table(
    store: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from demon_optim.study.tasks import get_task

    said = "Someone 2014, model X: 0.761 (10-fold cross-validation, not this split)."
    monkeypatch.setattr(type(get_task(TASK)), "published", said)
    (setting,) = tables.store_settings(load_store(store))
    assert setting.published == said
    assert f"Published on this data: {said}" in tables.to_markdown(setting)
    html = build_report(store, tmp_path / "report").read_text()
    assert "Published on this data: Someone 2014" in html


def test_the_glue_view_averages_task_scores(tmp_path: pathlib.Path) -> None:
    """glue-* settings give each method's task scores (the mean of a task's metrics) and
    their average; the GLUE score itself needs all nine tasks."""
    from demon_optim.report import glue

    path = tmp_path / "glue.sqlite"
    tests = {  # task -> method -> test metrics
        "glue-cola": {
            "adam+lr-warmup-linear": {"matthews": 0.50},
            "demon-adam": {"matthews": 0.56},
        },
        "glue-mrpc": {
            "adam+lr-warmup-linear": {"f1": 0.88, "accuracy": 0.84},
            "demon-adam": {"f1": 0.90, "accuracy": 0.86},
        },
    }
    with ResultStore(path) as db:
        for task, by_method in tests.items():
            for method, metrics in by_method.items():
                config = dict(get_method(method).grid()[0])
                spec = TrialSpec(task, method, tuple(config.items()), 0, 3, 32)
                primary = "matthews" if task == "glue-cola" else "f1"
                db.write(
                    TrialResult(
                        spec=spec,
                        status="done",
                        val_metric=metrics[primary],
                        test_metric=metrics[primary],
                        history=(),
                        started_at=time.time(),
                        metrics={"val": metrics, "test": metrics},
                    )
                )
    settings = tables.store_settings(load_store(path))
    (table,) = glue.glue_tables(settings)
    assert table.tasks == ("cola", "mrpc")
    assert table.methods == ("demon-adam", "adam+lr-warmup-linear")
    assert table.scores["demon-adam"] == {"cola": 0.56, "mrpc": pytest.approx(0.88)}
    assert table.average("adam+lr-warmup-linear") == pytest.approx((0.50 + 0.86) / 2)
    assert table.header()[-1] == "average of these tasks"
    assert table.cells()[0] == ["demon-adam", "56.0", "88.0", "72.0"]
    index = build_report(path, tmp_path / "report")
    assert "GLUE: task scores and their average" in index.read_text()
    assert "demon-adam,average,72.0" in (tmp_path / "report" / "glue.csv").read_text()
