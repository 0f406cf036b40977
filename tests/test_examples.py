"""The example of docs/own-task.md runs: a user's task and optimizers through the protocol.

``examples/own_task`` is a study of plugins (a breast-cancer MLP, Lion, RMSprop + cosine)
beside built-in methods. Here it runs from a dict built from its study file, at a tiny
budget, and the report must rank the user's methods in their families' tables.
"""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys

import pytest

from demon_optim.study import run
from tests.conftest import requires

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "own_task"
USER_METHODS = {"my-lion": "adam", "rmsprop+lr-cosine": "sgdm"}

pytestmark = [
    requires("sklearn", "(the example's data ships inside scikit-learn)"),
    requires("matplotlib", "(the report's figures)"),
]


@pytest.fixture(autouse=True)
def clean_registries(restore_registries: None) -> None:
    """The example's plugins leave both registries as they were (tests/study/test_plugins.py)."""


def example_study(**overrides: object) -> dict:
    """The example's study file as a dict: plugin paths absolute (a dict's are relative to
    the current folder), keys overridden."""
    with (EXAMPLE / "study.toml").open("rb") as file:
        study = tomllib.load(file)
    study["plugins"] = [str(EXAMPLE / plugin) for plugin in study["plugins"]]
    return {**study, **overrides}


def report_tables(report: pathlib.Path) -> dict[str, list[dict[str, str]]]:
    """The report's per-setting CSV tables, by family: {"sgdm": rows, "adam": rows}."""
    tables = {}
    for path in sorted((report.parent / "tables").glob("*.csv")):
        family = path.stem.split("_")[1]  # breast-cancer-mlp_<family>_<E>ep
        with path.open(newline="") as file:
            tables[family] = list(csv.DictReader(file))
    return tables


def test_the_example_study_ranks_the_users_methods_beside_the_built_in_ones(
    tmp_path: pathlib.Path,
) -> None:
    study = example_study(epochs=2, seeds=[0])
    result = run(study, store=tmp_path / "own.sqlite", workers=1)
    assert result.failed == [] and result.exit_code == 0
    assert {r["status"] for r in result.rows} == {"done"}
    assert len(result.rows) == len(result.specs) > 0
    table = result.table("breast-cancer-mlp")
    assert {row.method for row in table.rows} == set(study["methods"])
    assert all(row.rank is not None for row in table.rows)

    assert result.report is not None
    html = result.report.read_text(encoding="utf-8")
    assert all(name in html for name in USER_METHODS)
    tables = report_tables(result.report)
    assert set(tables) == {"sgdm", "adam"}
    for method, family in USER_METHODS.items():
        rows = {row["method"]: row for row in tables[family]}
        assert rows[method]["rank"].isdigit(), rows[method]  # ranked, not a reference
        built_in = [m for m in rows if m not in USER_METHODS]
        assert f"demon-{family}" in built_in and family in built_in
        assert all(rows[m]["rank"].isdigit() for m in built_in)
    # the 3 x 3 lr x momentum grids of sgdm and demon-sgdm make a robustness heatmap
    assert (result.report.parent / "figures" / "heatmap_breast-cancer-mlp_sgdm_2ep.png").is_file()
    # Lion's param groups carry lr and betas: the applied values are recorded
    lion = next(r for r in result.rows if r["method"] == "my-lion")
    assert [h["momentum"] for h in lion["history"]] == [0.9, 0.9]
    assert lion["history"][0]["lr"] == lion["hyperparameters"]["lr"]


def test_run_from_python_runs_in_a_fresh_process(tmp_path: pathlib.Path) -> None:
    """The script as a user runs it, from another folder; this checkout's package first."""
    script = EXAMPLE / "run_from_python.py"
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(script), "--epochs", "1", "--seeds", "0", "--workers", "1",
         "--store", str(tmp_path / "own.sqlite")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| my-lion |" in done.stdout and "| rmsprop+lr-cosine |" in done.stdout
    assert "study own-task-adam: 6 trials, 3 already in" in done.stdout
    assert (tmp_path / "own-task-report" / "index.html").is_file()
    assert (tmp_path / "own-task-adam-report" / "index.html").is_file()
