"""Heatmaps (cells, band counts, tolerance), curves, and the method-name mapping."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from demon_optim.errors import ConfigError
from demon_optim.report import curves, heatmaps, naming, tables
from demon_optim.report.load import load_store
from demon_optim.study.methods import list_methods, method_names
from demon_optim.study.presets import preset_names
from demon_optim.study.spec import expand, load_study


@pytest.fixture(scope="module")
def loaded(store_path: pathlib.Path):
    data = load_store(store_path)
    return data, tables.store_settings(data)


def test_heatmap_cells_and_band(loaded) -> None:
    data, settings = loaded
    (figure,) = heatmaps.heatmaps(data, settings, heatmaps.parse_tolerance("0.01"))
    assert figure.setting.slug == "mnist1d-mlp_sgdm_10ep"  # B and C have no lr x momentum grid
    demon, sgdm = figure.grids  # Demon first, beside its vanilla counterpart
    assert (demon.method, sgdm.method) == ("demon-sgdm", "sgdm")
    assert demon.lrs == (0.01, 0.1) and demon.momenta == (0.9, 0.95)
    np.testing.assert_allclose(demon.values, [[0.60, 0.80], [0.695, 0.79]])
    assert sgdm.values[0, 0] == pytest.approx(0.792) and sgdm.values[1, 0] == pytest.approx(0.75)
    # a diverged or failed seed: no value (even though the other seed scored 0.95 / 0.9)
    assert math.isnan(sgdm.values[0, 1]) and math.isnan(sgdm.values[1, 1])
    assert sgdm.notes == {(0, 1): "div", (1, 1): "failed"}
    assert figure.best == pytest.approx(0.80) and figure.threshold == pytest.approx(0.79)
    assert (figure.band(demon), figure.band(sgdm)) == (2, 1)
    assert "demon-sgdm: 2 of 4 cells; sgdm: 1 of 4 cells" in figure.summary()
    assert "0.01 accuracy (1 percentage point)" in figure.summary()


@pytest.mark.parametrize(
    ("tolerance", "bands"),
    [("0.005", (1, 0)), ("0.1", (2, 2)), ("2%", (2, 1)), ("0", (1, 0)), ("14%", (3, 2))],
)
def test_band_follows_the_tolerance(loaded, tolerance: str, bands: tuple[int, int]) -> None:
    data, settings = loaded
    (figure,) = heatmaps.heatmaps(data, settings, heatmaps.parse_tolerance(tolerance))
    assert tuple(figure.band(g) for g in figure.grids) == bands


def test_tolerance_parsing_and_defaults() -> None:
    assert heatmaps.parse_tolerance("2%") == heatmaps.Tolerance(0.02, relative=True)
    assert heatmaps.parse_tolerance(" 0.01 ") == heatmaps.Tolerance(0.01, relative=False)
    assert heatmaps.default_tolerance("accuracy") == heatmaps.Tolerance(0.01, False)
    assert heatmaps.default_tolerance("perplexity") == heatmaps.Tolerance(0.02, True)
    # lower is better: the band reaches up from the best
    assert heatmaps.Tolerance(0.02, True).threshold(100.0, higher_is_better=False) == 102.0
    for bad in ("abc", "-1", "1%%", ""):
        with pytest.raises(ConfigError, match="tolerance: got"):
            heatmaps.parse_tolerance(bad)


def test_curves_follow_the_selected_configuration(loaded) -> None:
    data, settings = loaded
    a = settings[0]
    found = {c.method: c for c in curves.setting_curves(data, a)}
    assert set(found) == {"demon-sgdm", "sgdm+lr-cosine", "sgdm+lr-step", "sgdm"}
    demon = found["demon-sgdm"]
    assert demon.seeds == 2 and list(demon.epochs) == list(range(1, 11))
    # the recorded momentum (last step of each epoch, 10 steps per epoch) lies on the formula
    x, beta = curves.demon_formula({"momentum": 0.9, "delay": 0.0}, 10)
    on_formula = np.interp(demon.epochs - 0.1, x, beta)  # step e*10 - 1 is epoch e - 0.1
    np.testing.assert_allclose(demon.momentum, on_formula, atol=1e-9)
    assert beta[0] == 0.9 and beta[-1] == 0.0


def test_schedule_names_are_explicit_and_shared_across_families() -> None:
    expected = {
        "": "none",
        "+lr-step": "lr-step",
        "+lr-cosine": "lr-cosine",
        "+lr-linear": "lr-linear",
        "+lr-warmup-linear": "lr-warmup-linear",
        "+lr-exponential": "lr-exponential",
        "+lr-plateau": "lr-plateau",
        "+onecycle": "onecycle",
        "+mom-onecycle": "mom-onecycle",
        "+mom-cosine": "mom-cosine",
        "+mom-linear": "mom-linear",
        "+mom-exponential": "mom-exponential",
    }
    for family in ("sgdm", "adam"):
        for suffix, schedule in expected.items():
            assert naming.schedule_name(family + suffix) == schedule
        assert naming.schedule_name(f"demon-{family}") == "demon"
    assert naming.schedule_name("amsgrad") == "amsgrad"
    # within a family no two methods share a schedule name, so a setting counts each once
    for family in ("sgdm", "adam"):
        names = [naming.schedule_name(m.name) for m in list_methods() if m.family == family]
        assert len(names) == len(set(names))
    # every ranked schedule has a paper label
    for method in method_names():
        if not naming.is_reference(method):
            assert naming.schedule_name(method) in naming.LABELS


def test_references_and_external_names() -> None:
    assert naming.is_reference("adamw") and naming.is_reference("amsgrad")
    assert naming.is_reference("QHM+lr-step") and naming.is_reference("yellowfin")
    assert not naming.is_reference("demon-adam") and not naming.is_reference("Demon")
    assert naming.canonical("LR cosine") == "lr-cosine"
    assert naming.canonical(" demon ") == "demon"
    assert naming.canonical("demon-adam") == "demon"
    assert naming.canonical("My Method") == "My Method"


def test_trial_ids_restrict_the_report(store_path: pathlib.Path) -> None:
    every = load_store(store_path)
    ids = [t.trial_id for t in every.trials if t.epochs == 20]
    only = load_store(store_path, ids)
    assert len(only.trials) == 3 and {t.epochs for t in only.trials} == {20}
    assert [s.slug for s in tables.store_settings(only)] == ["mnist1d-mlp_sgdm_20ep"]


@pytest.mark.skipif(
    "robustness" not in preset_names(), reason="the robustness preset is not registered yet"
)
def test_robustness_preset_pairs_demon_with_its_vanilla_counterpart() -> None:
    specs = expand(load_study("robustness"))
    # ~1.1 s of CPU per 50-epoch MNIST-1D trial: about 10 minutes with 2 workers
    assert len(specs) <= 800 and {s.task for s in specs} == {"mnist1d-mlp"}
    for demon, vanilla in (("demon-sgdm", "sgdm"), ("demon-adam", "adam")):
        cells = [
            {(s.config["lr"], s.config["momentum"]) for s in specs if s.method == m}
            for m in (demon, vanilla)
        ]
        assert cells[0] == cells[1]  # the same grid, so the heatmaps compare cell by cell
        assert len({lr for lr, _ in cells[0]}) >= 2 and len({m for _, m in cells[0]}) >= 2
