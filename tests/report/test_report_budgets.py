"""Tuning budgets and success rates: the formulas by hand, a store with a search, the page.

The store (written through the store's public API): mnist1d-mlp, 10 epochs, 2 seeds; sgdm
sampled, its 4 draws in order (validation and test are means over the seeds):

    draw 0  lr 0.01   val 0.60  test 0.61 / 0.59 -> 0.60
    draw 1  lr 0.1    val 0.80  test 0.78 / 0.80 -> 0.79
    draw 2  lr 0.3    seed 1 diverged: cannot be selected
    draw 3  lr 0.03   val 0.70  test 0.72 / 0.72 -> 0.72

and demon-sgdm on a grid of one configuration (test 0.75): a point at k = 1.

Best of the first k: k=1 0.60, k=2 0.79, k=4 0.79. Dodge's expected maximum at k = 2, N = 4
(one unselectable, at the bottom): weights (c/4)^2 differences 1/16 (none), 3/16, 5/16,
7/16, so E = (3 * 0.60 + 5 * 0.72 + 7 * 0.79) / 15 = 10.93 / 15 given one finished, and
P(none) = 1/16. Over orderings at k = 2: C(4, 2) = 6 pairs; weights 0, 1/6, 2/6, 3/6, so the
mean is (0.60 + 2 * 0.72 + 3 * 0.79) / 6 = 0.735. Success rate (tolerance 0.01): the best
drawn test is 0.79, the band >= 0.78 holds draw 1 alone: 1 of 4.
"""

from __future__ import annotations

import csv
import io
import math
import pathlib

import pytest

from demon_optim.report import budgets, build_report, tuning
from demon_optim.report.heatmaps import Tolerance
from demon_optim.report.load import load_store
from demon_optim.report.tables import store_settings
from demon_optim.study.store import ResultStore
from tests.report.conftest import _result, _spec, rendered_dom

# --- the formulas -------------------------------------------------------------------------------


def test_best_of_first_is_the_earliest_best_by_validation() -> None:
    values = [0.5, None, 0.7, 0.7, 0.9]
    assert tuning.best_of_first(values, 1, True) == 0
    assert tuning.best_of_first(values, 4, True) == 2  # tie with draw 3: the earlier
    assert tuning.best_of_first(values, 5, True) == 4
    assert tuning.best_of_first(values, 4, False) == 0  # lower is better
    assert tuning.best_of_first([None, None], 2, True) is None


def test_expected_max_is_dodges_formula() -> None:
    values = [0.1, 0.3, 0.2]
    # k = 1: the mean; k = 2: (0.1 * 1 + 0.2 * 3 + 0.3 * 5) / 9; k = 3: (1, 7, 19) / 27
    assert tuning.expected_max(values, values, 1).mean == pytest.approx(0.2)
    two = tuning.expected_max(values, values, 2)
    assert two.mean == pytest.approx(2.2 / 9) and two.none == 0
    second = (0.01 * 1 + 0.04 * 3 + 0.09 * 5) / 9
    assert two.std == pytest.approx(math.sqrt(second - (2.2 / 9) ** 2))
    assert tuning.expected_max(values, values, 3).mean == pytest.approx(
        (0.1 + 0.2 * 7 + 0.3 * 19) / 27
    )
    # lower is better: the same values, the best is 0.1
    low = tuning.expected_max(values, values, 2, higher_is_better=False)
    assert low.mean == pytest.approx((0.3 * 1 + 0.2 * 3 + 0.1 * 5) / 9)
    # the outcome is the test metric of the validation-best: here reversed
    assert tuning.expected_max(values, [3.0, 1.0, 2.0], 2).mean == pytest.approx(
        (3.0 * 1 + 2.0 * 3 + 1.0 * 5) / 9
    )


def test_ties_share_their_mean_and_unfinished_draws_are_the_worst() -> None:
    tied = tuning.expected_max([0.5, 0.5], [0.2, 0.4], 3)
    assert tied.mean == pytest.approx(0.3) and tied.std == pytest.approx(0.1)
    found = tuning.expected_max([None, 0.6, 0.8], [None, 0.6, 0.8], 2)
    assert found.none == pytest.approx(1 / 9)
    assert found.mean == pytest.approx((0.6 * 3 + 0.8 * 5) / 8)  # given one finished
    assert tuning.expected_max([None], [None], 2).mean is None


def test_over_orderings_by_hand() -> None:
    values = [0.1, 0.3, 0.2]
    two = tuning.over_orderings(values, values, 2)
    assert two.mean == pytest.approx((0.3 + 0.2 + 0.3) / 3)
    assert two.std == pytest.approx(math.sqrt((0.09 * 2 + 0.04) / 3 - (0.8 / 3) ** 2))
    every = tuning.over_orderings(values, values, 3)  # every order tries them all
    assert every.mean == pytest.approx(0.3) and every.std == pytest.approx(0.0, abs=1e-12)
    one = tuning.over_orderings(values, values, 1)
    assert one.mean == pytest.approx(0.2)
    assert tuning.over_orderings([None, None, 0.5], [None, None, 0.5], 2).none == pytest.approx(
        1 / 3
    )
    with pytest.raises(ValueError, match="1 <= k <= N"):
        tuning.over_orderings(values, values, 4)


# --- a store with a search ------------------------------------------------------------------------

DRAWS = [  # lr, (test seed 0, test seed 1) or None for the diverged seed 1, val
    (0.01, (0.61, 0.59), 0.60),
    (0.1, (0.78, 0.80), 0.80),
    (0.3, None, 0.90),
    (0.03, (0.72, 0.72), 0.70),
]


@pytest.fixture(scope="module")
def search_store(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("search") / "search.sqlite"
    with ResultStore(path) as store:
        store.record_search(
            {
                "search_id": "s" * 64,
                "task": "mnist1d-mlp",
                "method": "sgdm",
                "epochs": 10,
                "batch_size": 100,
                "sampler": "qmc",
                "search_seed": 0,
                "search_batch": 4,
                "definition": {"space": [{"name": "lr", "kind": "float"}]},
                "tuning_budgets": [1, 2, 4],
                "versions": {"optuna": "test"},
            }
        )
        rows = []
        for draw, (lr, tests, val) in enumerate(DRAWS):
            specs = [_spec("sgdm", seed, 10, lr=lr, momentum=0.9) for seed in (0, 1)]
            for seed, spec in enumerate(specs):
                if tests is None and seed == 1:
                    store.write(_result(spec, "diverged"))
                else:
                    store.write(_result(spec, "done", val, (tests or (0.9, 0.9))[seed]))
            config = dict(specs[0].hyperparameters)
            rows.append(
                {
                    "draw": draw,
                    "batch": 0,
                    "params": {"lr": lr},
                    "hyperparameters": config,
                    "trial_ids": [s.trial_id for s in specs],
                }
            )
        store.record_draws("s" * 64, rows)
        store.record_tells("s" * 64, [(i, "complete", 0.5) for i in range(4)])
        for seed in (0, 1):
            spec = _spec("demon-sgdm", seed, 10, lr=0.1, momentum=0.9)
            store.write(_result(spec, "done", 0.74, 0.75))
    return path


def test_budget_view_of_the_store(search_store: pathlib.Path) -> None:
    data = load_store(search_store)
    (view,) = budgets.budget_views(data, store_settings(data), Tolerance(0.01, relative=False))
    (curve,) = view.curves
    assert curve.values == [0.60, 0.80, None, 0.70]
    assert [curve.best(k, True).test for k in (1, 2, 4)] == pytest.approx([0.60, 0.79, 0.79])
    two = tuning.expected_max(curve.values, curve.outcomes, 2)
    assert two.mean == pytest.approx(10.93 / 15) and two.none == pytest.approx(1 / 16)
    assert tuning.over_orderings(curve.values, curve.outcomes, 2).mean == pytest.approx(0.735)
    assert [(p.method, p.configs, p.test) for p in view.grid] == [("demon-sgdm", 1, 0.75)]
    assert view.best == pytest.approx(0.79) and view.within(curve) == 1

    table = budgets.budget_table(view)
    rows = list(csv.DictReader(io.StringIO(table.csv)))
    assert [int(r["k"]) for r in rows] == [1, 2, 4]
    assert float(rows[1]["expected_mean"]) == pytest.approx(10.93 / 15)
    assert float(rows[1]["orderings_mean"]) == pytest.approx(0.735)
    assert rows[1]["best_config"] == "lr=0.1"  # only what the space varies
    success = list(csv.DictReader(io.StringIO(budgets.success_table([view]).csv)))
    assert [(r["method"], r["draws"], r["within"]) for r in success] == [("sgdm", "4", "1")]


def test_a_store_without_searches_has_no_budget_views(store_path: pathlib.Path) -> None:
    data = load_store(store_path)
    assert data.searches == () and budgets.budget_views(data, store_settings(data)) == []


def test_the_page_shows_the_budget_curves_and_the_success_rate(
    search_store: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    index = build_report(search_store, tmp_path / "report")
    assert (tmp_path / "report" / "success.csv").is_file()
    assert (tmp_path / "report" / "budgets" / "mnist1d-mlp_sgdm_10ep.csv").is_file()
    dom = rendered_dom(index, tmp_path)
    assert 'id="budgets"' in dom and 'id="success"' in dom
    assert 'id="table-budgets-mnist1d-mlp_sgdm_10ep"' in dom and 'id="table-success-rate"' in dom
    figure = dom.split('id="figure-budgets_mnist1d-mlp_sgdm_10ep"', 1)[1].split("</figure>")[0]
    assert 'data-loaded="yes"' in figure
    shown, loaded = dom.split('data-images="', 1)[1].split('"', 1)[0].split("/")
    assert shown == loaded and int(shown) >= 3  # curves, schedules, budgets (and profiles)
    assert "sampled: sgdm" in dom and "4 configurations by qmc" in dom
