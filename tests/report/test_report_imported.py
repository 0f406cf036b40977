"""Published results imported into a store: in the report apart from the user's own trials.

The synthetic store (conftest) is copied, then the AlgoPerf and DeepOBS fixtures
(tests/fixtures/imports) and one DeepOBS run on the store's own task (mnist1d-mlp, 10
epochs) are imported into the copy. The user's tables and Top-k must be exactly those of
the store without imports; the imported trials get their own section, and the run on
mnist1d-mlp is drawn, dashed and labelled, in that task's validation figures.
"""

from __future__ import annotations

import csv
import json
import pathlib
import re
import shutil

import pytest

from demon_optim.report import build_report, imported, tables, topk
from demon_optim.report.load import load_store
from demon_optim.study.imports import import_paths
from tests.conftest import requires
from tests.report.conftest import rendered_dom

pytestmark = requires("matplotlib", "(draws the report's figures)")

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "imports"
TASK_RUN = "published-demon"  # optimizer_name of the DeepOBS run on the store's own task


def _deepobs_run(path: pathlib.Path, testproblem: str, optimizer: str, epochs: int) -> None:
    """A DeepOBS run file, the way its runner writes one (entry 0: before training)."""
    n = epochs + 1
    accuracy = [round(0.1 + 0.7 * (1 - 0.8**i), 6) for i in range(n)]
    run = {
        "testproblem": testproblem,
        "batch_size": 100,
        "num_epochs": epochs,
        "random_seed": 42,
        "weight_decay": None,
        "optimizer_name": optimizer,
        "optimizer_hyperparams": {"lr": 0.1, "momentum": 0.9},
        "training_params": {},
        "train_losses": [round(2.3 / (1 + i), 6) for i in range(n)],
        "valid_losses": [round(2.3 / (1 + 0.9 * i), 6) for i in range(n)],
        "test_losses": [round(2.3 / (1 + 0.8 * i), 6) for i in range(n)],
        "train_accuracies": [min(0.99, a + 0.02) for a in accuracy],
        "valid_accuracies": accuracy,
        "test_accuracies": [a - 0.01 for a in accuracy],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=4))


@pytest.fixture(scope="module")
def imported_store(store_path: pathlib.Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("imported")
    path = folder / "with-imports.sqlite"
    shutil.copy(store_path, path)  # the session store stays as it is
    run = folder / "runs" / "mnist1d-mlp" / TASK_RUN / "random_seed__42__x.json"
    _deepobs_run(run, "mnist1d-mlp", TASK_RUN, 10)
    summary = import_paths(path, [FIXTURES, run])
    assert summary.new == 11
    return path


@pytest.fixture(scope="module")
def report(imported_store: pathlib.Path, tmp_path_factory: pytest.TempPathFactory):
    return build_report(imported_store, tmp_path_factory.mktemp("report") / "out", tolerance="0.01")


def test_the_users_tables_and_top_k_are_those_without_the_imports(
    store_path: pathlib.Path, imported_store: pathlib.Path, report: pathlib.Path
) -> None:
    plain, data = load_store(store_path), load_store(imported_store)
    assert len(data.trials) == len(plain.trials) == 33 and len(data.imported) == 11
    assert {t.trial_id for t in data.trials} == {t.trial_id for t in plain.trials}
    assert all(t.origin for t in data.imported) and not any(t.origin for t in data.trials)
    settings = tables.store_settings(data)
    assert settings == tables.store_settings(plain)
    out = report.parent
    for setting in settings:
        assert (out / "tables" / f"{setting.slug}.csv").read_text() == tables.to_csv(setting)
    assert (out / "topk.csv").read_text() == topk.to_csv(topk.top_k(settings))


def _csv(path: pathlib.Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_imported_tables_select_on_validation_and_are_labelled(report: pathlib.Path) -> None:
    out = report.parent
    assert sorted(p.name for p in (out / "tables").glob("imported_*")) == [
        "imported_algoperf_mnist.csv",
        "imported_deepobs_mnist1d-mlp_10ep_b100.csv",
        "imported_deepobs_mnist_mlp_3ep_b128.csv",
    ]
    deepobs = _csv(out / "tables" / "imported_deepobs_mnist_mlp_3ep_b128.csv")
    assert [r["method"] for r in deepobs] == ["SGD", "Adam"]
    sgd, adam = deepobs
    # lr=0.1 has the better mean validation accuracy (0.9617 > 0.9495)
    assert sgd["selected"] == "lr=0.1, momentum=0.9, nesterov=false"
    assert float(sgd["test_mean"]) == pytest.approx((0.9571 + 0.9603) / 2)
    assert (sgd["seeds"], sgd["configs"], sgd["trials"], sgd["diverged"]) == ("2", "2", "4", "0")
    assert sgd["files"].count("mnist_mlp/SGD/num_epochs__3__batch_size__128__lr__0.1") == 2
    # Adam's one configuration lost seed 43 (stopped by DeepOBS): nothing to select
    assert (adam["selected"], adam["test_mean"], adam["diverged"]) == ("", "", "1")
    (algo,) = _csv(out / "tables" / "imported_algoperf_mnist.csv")
    assert algo["method"] == "nadamw_baseline" and algo["selected"].startswith("beta2=0.995516")
    assert float(algo["test_mean"]) == pytest.approx((0.971 + 0.974) / 2)
    assert float(algo["time_s"]) == 47.5 and algo["diverged"] == "1"
    page = report.read_text()
    assert '<h2 id="imported">Published results (imported)</h2>' in page
    assert "<td>imported: nadamw_baseline</td>" in page and "<td>imported: SGD</td>" in page
    assert "<dt>imported</dt><dd>algoperf: 4 trial(s) from " in page
    markdown = (out / "report.md").read_text()
    assert "| imported: SGD | lr=0.1, momentum=0.9, nesterov=false | 0.9587 ± 0.0023 |" in markdown
    # the user's tables hold no imported row
    for path in (out / "tables").glob("mnist1d-mlp_*.csv"):
        assert "imported" not in path.read_text() and TASK_RUN not in path.read_text()


def test_a_published_run_on_the_users_task_is_drawn_beside_its_curves(
    imported_store: pathlib.Path, report: pathlib.Path
) -> None:
    data = load_store(imported_store)
    published = imported.imported_tables(data)
    settings = {s.slug: s for s in tables.store_settings(data)}
    beside = imported.overlay(data, published, settings["mnist1d-mlp_sgdm_10ep"])
    assert [c.method for c in beside] == [f"imported: {TASK_RUN} (deepobs)"]
    assert list(beside[0].epochs) == list(range(1, 11)) and beside[0].seeds == 1
    # the other tasks' imports are not drawn there: another task, or no epochs (AlgoPerf)
    page = report.read_text()
    figure = page.split('id="figure-validation_mnist1d-mlp_sgdm_10ep"', 1)[1].split("</figure>")[0]
    assert "Dashed, labelled imported: published results of the same task" in figure
    assert 'id="figure-imported_deepobs_mnist1d-mlp_10ep_b100"' in page


def test_the_page_with_imports_loads_in_headless_chromium(
    report: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    dom = rendered_dom(report, tmp_path)
    # 8 of the user's figures (test_report_html: 7 + the performance profiles) + one per
    # imported table
    assert 'data-images="11/11"' in dom, dom[:500]
    imported_figure = re.search(
        r'<figure id="figure-imported_deepobs_mnist_mlp_3ep_b128"><img[^>]*data-loaded="(\w+)"',
        dom,
    )
    assert imported_figure is not None and imported_figure.group(1) == "yes"
    assert "imported: SGD" in dom


HOSTILE_TASK = "<script>alert(1)</script>"
HOSTILE_METHOD = "=cmd|' /C calc'!A0 $x$ `y` <b>"
HOSTILE_SUBMISSION = "<img src=x onerror=alert(2)>"


def test_hostile_names_in_imported_files_are_shown_never_interpreted(
    tmp_path: pathlib.Path,
) -> None:
    run = tmp_path / "in" / "run.json"
    _deepobs_run(run, HOSTILE_TASK, HOSTILE_METHOD, 3)
    trial = tmp_path / "in" / HOSTILE_SUBMISSION / "a|b_pytorch" / "trial_1"
    trial.mkdir(parents=True)
    (trial / "eval_measurements.csv").write_text(
        "global_step,accumulated_submission_time,validation/accuracy,test/accuracy\n"
        "10,1.0,0.5,0.49\n20,2.0,0.6,0.58\n"
    )
    (trial / "hparams.json").write_text(json.dumps({"<lr>": 0.1}))
    store = tmp_path / "only-imports.sqlite"
    import_paths(store, [tmp_path / "in"])  # a new store holding imported trials only
    out = tmp_path / "report"
    index = build_report(store, out)
    page = index.read_text()
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page and "&lt;lr&gt;=0.1" in page
    assert re.findall(r'<h2 id="(\w+)">', page) == ["imported"]  # nothing of the user's
    markdown = (out / "report.md").read_text()
    assert "\\$x\\$" in markdown and "\\`y\\`" in markdown and "a\\|b" in markdown
    assert "<script>" not in markdown
    rows = [r for p in sorted((out / "tables").iterdir()) for r in _csv(p)]
    methods = {r["method"] for r in rows}
    assert methods == {"'" + HOSTILE_METHOD, HOSTILE_SUBMISSION}  # a formula cell is quoted
    safe = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    for path in out.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert path.parent in (out, out / "tables", out / "figures") and safe.match(path.name)
