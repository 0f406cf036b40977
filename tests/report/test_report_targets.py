"""Time to target and performance profiles: the formulas against hand-computed examples, the
first epoch that reaches a target in a hand-made history (training time only), and the
report's view of a small synthetic store whose every number is worked out below.

The store (task mnist1d-mlp, accuracy, target 0.7 recorded with the trials):

4 epochs     seed: val per epoch            train_s per epoch     reach: epoch, steps, s
 demon-sgdm  lr 0.1 (selected, final .82/.80)
             0: .50 .72 .80 .82              1   2   3   4          2, 20, 2.0
             1: .60 .69 .71 .80              1.5 3 4.5  6           3, 30, 4.5
             -> median epoch 2.5, steps 25, time 3.25 (2-4.5)
             lr 0.3 (not selected, final .70): reaches at epoch 1, which must not count
 sgdm        0: .40 .60 .65 .75              1 2 3 4                4, 40, 4.0
             1: .40 .50 .60 .68              never                  inf
             -> median inf: "not reached (4-inf)"
 adam        0: .70 .71 .72 .73 ; 1: .71 ...  2 4 6 8 ; 3 6 9 12    1, 10, 2.0 / 3.0 -> 2.5
 demon-adam  both seeds diverged: no configuration finished on every seed -> inf
 adamw       (reference) .75 .76 .77 .78     1 2 3 4                1, 10, 1.0
2 epochs
 demon-sgdm  0: .71 .75 (1, 2) ; 1: .65 .72 (1.5, 3.0)   -> (1, 10, 1.0), (2, 20, 3.0):
             median time 2.0, steps 15
 adam        0 and 1: .72 .73 (2, 4)                      -> 1, 10, 2.0: a tie at 2.0

Time ratios (ranked methods): 4 epochs adam 1, demon-sgdm 3.25/2.5 = 1.3, sgdm inf,
demon-adam inf; 2 epochs adam 1, demon-sgdm 1 (tie), sgdm and demon-adam did not run: inf.
Areas (tau_max 4): adam (3 + 3) / 6 = 1; demon-sgdm (2.7 + 3) / 6 = 0.95; sgdm, demon-adam 0.
Steps: adam [1, 1] -> 1; demon-sgdm [25/10, 15/10] -> (1.5 + 2.5) / 6 = 2/3.
With --rank-all adamw (1.0 s on 4 epochs, absent on 2) joins: 4 epochs adamw 1, adam 2.5,
demon-sgdm 3.25; areas adamw 3/6, adam (1.5 + 3)/6, demon-sgdm (0.75 + 3)/6.
"""

from __future__ import annotations

import csv
import io
import math
import pathlib
import time

import pytest

from demon_optim.errors import ConfigError
from demon_optim.report import profiles, store_content, tables, targets
from demon_optim.report.load import load_store
from demon_optim.study.methods import get_method
from demon_optim.study.spec import TrialAbout, TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.trial import TrialResult
from tests.conftest import requires

INF = math.inf
TASK = "mnist1d-mlp"
STEPS = 10  # per epoch


# --- the formulas ------------------------------------------------------------------------------


def test_profile_and_area_by_hand_with_ties_a_method_that_never_reaches_and_nobody() -> None:
    costs = {
        "s1": {"A": 10.0, "B": 10.0, "C": INF},  # A and B tie for best
        "s2": {"A": 30.0, "B": 15.0, "C": INF},
        "s3": {"A": INF, "B": INF, "C": INF},  # nobody reaches the target
        "s4": {"A": 50.0, "B": 10.0},  # C did not run; A is 5 x the best, beyond tau_max
    }
    r = profiles.ratios(costs, ["A", "B", "C"])
    assert r == {"A": [1.0, 2.0, INF, 5.0], "B": [1.0, 1.0, INF, 1.0], "C": [INF] * 4}
    assert [profiles.rho(r["A"], tau) for tau in (1, 1.5, 2, 4, 5)] == [0.25, 0.25, 0.5, 0.5, 0.75]
    assert profiles.rho(r["B"], 1) == 0.75 and profiles.rho(r["C"], 1e9) == 0.0
    # B = 1/|S| sum_s max(0, 4 - r) / 3
    assert profiles.area(r["A"]) == pytest.approx((3 + 2 + 0 + 0) / 12)
    assert profiles.area(r["B"]) == pytest.approx((3 + 3 + 0 + 3) / 12)
    assert profiles.area(r["C"]) == 0.0
    # the exact area is the integral of the step function: a fine Riemann sum agrees
    n = 30_000
    for method in "AB":
        riemann = sum(profiles.rho(r[method], 1 + 3 * (i + 0.5) / n) for i in range(n)) * 3 / n
        assert riemann / 3 == pytest.approx(profiles.area(r[method]), abs=1e-3)
    assert profiles.steps(r["A"]) == ([1.0, 2.0, 4.0], [0.25, 0.5, 0.5])
    assert profiles.steps(r["C"]) == ([1.0, 4.0], [0.0, 0.0])


def test_one_setting_and_zero_costs() -> None:
    r = profiles.ratios({"only": {"A": 12.0, "B": 18.0, "C": 60.0}}, ["A", "B", "C"])
    assert r == {"A": [1.0], "B": [1.5], "C": [5.0]}
    assert [profiles.area(r[m]) for m in "ABC"] == [1.0, pytest.approx(2.5 / 3), 0.0]
    zero = profiles.ratios({"s": {"A": 0.0, "B": 0.0, "C": 1.0}}, ["A", "B", "C"])
    assert zero == {"A": [1.0], "B": [1.0], "C": [INF]}
    assert profiles.area([]) == 0.0 and profiles.rho([], 1) == 0.0


@pytest.mark.parametrize("bad", [math.nan, -1.0])
def test_a_cost_that_is_not_a_time_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"cost of 'A' on 's'.*allowed: a number >= 0 or inf"):
        profiles.ratios({"s": {"A": bad}}, ["A"])


def test_first_reach_uses_the_training_time_of_the_first_epoch_at_the_target() -> None:
    history = [  # evaluation takes longer than training here: elapsed_s must not be used
        {"epoch": 1, "val_metric": 0.50, "steps": 35, "train_s": 1.25, "elapsed_s": 9.0},
        {"epoch": 2, "val_metric": None, "steps": 70, "train_s": 2.5, "elapsed_s": 18.0},
        {"epoch": 3, "val_metric": 0.90, "steps": 105, "train_s": 3.75, "elapsed_s": 27.0},
        {"epoch": 4, "val_metric": 0.95, "steps": 140, "train_s": 5.0, "elapsed_s": 36.0},
    ]
    assert targets.first_reach(history, 0.9, True) == targets.Reach(3.0, 105.0, 3.75)
    assert targets.first_reach(history, 0.5, True) == targets.Reach(1.0, 35.0, 1.25)
    assert targets.first_reach(history, 0.96, True) == targets.NEVER
    assert not targets.NEVER.reached and math.isinf(targets.NEVER.train_s)  # type: ignore[arg-type]
    # lower is better: the first epoch at or below the target
    losses = [{"epoch": e, "val_metric": v, "steps": e, "train_s": e} for e, v in
              [(1, 300.0), (2, 260.0), (3, 250.0)]]  # fmt: skip
    assert targets.first_reach(losses, 260.0, False).epoch == 2
    # a history from before steps and train_s were kept: the epoch is known, the rest is not
    old = [{"epoch": 1, "val_metric": 0.8, "elapsed_s": 2.0}]
    assert targets.first_reach(old, 0.7, True) == targets.Reach(1.0, None, None)


def test_spreads_and_their_text() -> None:
    assert targets.Spread.of([2.0, 4.5]) == targets.Spread(3.25, 2.0, 4.5)
    assert targets.Spread.of([4.0, INF]) == targets.Spread(INF, 4.0, INF)
    assert targets.Spread.of([1.0, 2.0, INF]) == targets.Spread(2.0, 1.0, INF)
    assert targets.Spread.of([1.0, None]) == targets.Spread(None, None, None)
    assert targets.spread_text(targets.Spread(3.25, 2.0, 4.5)) == "3.25 (2-4.5)"
    assert targets.spread_text(targets.Spread(INF, 4.0, INF)) == "not reached (4-∞)"
    assert targets.spread_text(targets.Spread(INF, INF, INF)) == "not reached"
    assert targets.spread_text(targets.Spread(None, None, None)) == "-"


# --- a synthetic store ---------------------------------------------------------------------------


def _result(
    method: str,
    seed: int,
    vals: list[float],
    train_s: list[float],
    lr: float | None = None,
    status: str = "done",
    target: float | None = 0.7,
    task: str = TASK,
) -> TrialResult:
    config = dict(get_method(method).grid()[0])
    if lr is not None:
        config["lr"] = lr
    about = TrialAbout.of(task, method, target)
    spec = TrialSpec(task, method, tuple(config.items()), seed, len(vals), 100, about=about)
    history = tuple(
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_metric": v,
            "lr": 0.1,
            "momentum": 0.9,
            "steps": e * STEPS,
            "elapsed_s": 10.0 * e,  # evaluation-heavy: never what time to target reads
            "train_s": t,
        }
        for e, (v, t) in enumerate(zip(vals, train_s, strict=True), start=1)
    )
    done = status == "done"
    return TrialResult(
        spec=spec,
        status=status,
        val_metric=vals[-1] if done else None,
        test_metric=vals[-1] - 0.01 if done else None,
        history=history if done else history[:1],
        wall_time_s=1.0,
        started_at=time.time(),
        versions={"torch": "test"},
        error=None if done else "diverged on purpose",
    )


def results() -> list[TrialResult]:
    one = [1.0, 2.0, 3.0, 4.0]
    return [
        _result("demon-sgdm", 0, [0.50, 0.72, 0.80, 0.82], one, lr=0.1),
        _result("demon-sgdm", 1, [0.60, 0.69, 0.71, 0.80], [1.5, 3.0, 4.5, 6.0], lr=0.1),
        _result("demon-sgdm", 0, [0.75, 0.70, 0.70, 0.70], one, lr=0.3),  # faster, not selected
        _result("demon-sgdm", 1, [0.75, 0.70, 0.70, 0.70], one, lr=0.3),
        _result("sgdm", 0, [0.40, 0.60, 0.65, 0.75], one),
        _result("sgdm", 1, [0.40, 0.50, 0.60, 0.68], one),
        _result("adam", 0, [0.70, 0.71, 0.72, 0.73], [2.0, 4.0, 6.0, 8.0]),
        _result("adam", 1, [0.71, 0.72, 0.73, 0.74], [3.0, 6.0, 9.0, 12.0]),
        _result("demon-adam", 0, [0.5, 0.5, 0.5, 0.5], one, status="diverged"),
        _result("demon-adam", 1, [0.5, 0.5, 0.5, 0.5], one, status="diverged"),
        _result("adamw", 0, [0.75, 0.76, 0.77, 0.78], one),
        _result("adamw", 1, [0.75, 0.76, 0.77, 0.78], one),
        # 2 epochs
        _result("demon-sgdm", 0, [0.71, 0.75], [1.0, 2.0], lr=0.1),
        _result("demon-sgdm", 1, [0.65, 0.72], [1.5, 3.0], lr=0.1),
        _result("adam", 0, [0.72, 0.73], [2.0, 4.0]),
        _result("adam", 1, [0.72, 0.73], [2.0, 4.0]),
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("targets") / "targets.sqlite"
    with ResultStore(path) as db:
        for result in results():
            db.write(result)
    return path


def _view(
    store: pathlib.Path, rank_all: bool = False, given: dict[str, float] | None = None
) -> list[targets.TargetSetting]:
    data = load_store(store)
    settings = tables.store_settings(data, rank_all=rank_all)
    return targets.target_settings(data, settings, targets.resolve_targets(data, given))


def test_time_to_target_per_method_of_its_selected_configuration(store: pathlib.Path) -> None:
    two, four = _view(store)  # in the tables' order: by task, then budget
    assert (four.name, four.target, four.source) == (
        "mnist1d-mlp · 4 epochs",
        0.7,
        "recorded with the trials",
    )
    rows = {r.method: r for r in four.rows}
    demon = rows["demon-sgdm"]
    assert (demon.seeds, demon.reached, demon.selected) == (2, 2, "lr=0.1, momentum=0.9")
    assert demon.epochs == targets.Spread(2.5, 2.0, 3.0)
    assert demon.steps == targets.Spread(25.0, 20.0, 30.0)
    assert demon.time == targets.Spread(3.25, 2.0, 4.5)  # train_s, never elapsed_s
    assert (rows["sgdm"].reached, rows["sgdm"].time) == (1, targets.Spread(INF, 4.0, INF))
    assert rows["adam"].time == targets.Spread(2.5, 2.0, 3.0)
    assert (rows["demon-adam"].seeds, rows["demon-adam"].time.median) == (0, INF)
    assert [r.method for r in four.rows] == ["adam", "demon-sgdm", "demon-adam", "sgdm", "adamw"]
    assert rows["demon-sgdm"].time_ratio == pytest.approx(1.3)
    assert rows["demon-sgdm"].steps_ratio == pytest.approx(2.5)
    assert rows["adamw"].time_ratio is None and not rows["adamw"].ranked  # a reference
    cells = {c[0]: c for c in targets.cells(four)}
    assert cells["demon-sgdm"] == (
        "demon-sgdm", "lr=0.1, momentum=0.9", "2/2", "2.5 (2-3)", "25 (20-30)",
        "3.25 (2-4.5)", "1.30", "2.50",
    )  # fmt: skip
    never = "not reached"
    assert cells["sgdm"][2:] == ("1/2", f"{never} (4-∞)", f"{never} (40-∞)", f"{never} (4-∞)",
                                 "∞", "∞")  # fmt: skip
    assert cells["demon-adam"][2:] == ("no configuration finished on every seed",
                                       never, never, never, "∞", "∞")  # fmt: skip
    assert cells["adamw (reference)"][5:] == ("1", "-", "-")
    with_csv = list(csv.DictReader(io.StringIO(targets.to_csv(four))))
    sgdm = next(r for r in with_csv if r["method"] == "sgdm")
    assert (sgdm["time_s_median"], sgdm["time_s_min"], sgdm["time_ratio"]) == ("inf", "4.0", "inf")
    assert {r.method: r.time.median for r in two.rows} == {"demon-sgdm": 2.0, "adam": 2.0}


def test_profiles_of_the_store(store: pathlib.Path) -> None:
    shown = targets.profile(_view(store))
    assert shown is not None
    assert set(shown.methods) == {"adam", "demon-sgdm", "sgdm", "demon-adam"}
    assert shown.time_settings == ("mnist1d-mlp · 2 epochs", "mnist1d-mlp · 4 epochs")
    assert shown.step_settings == shown.time_settings
    areas = {m: shown.area("time", m) for m in shown.methods}
    assert areas == pytest.approx({"adam": 1.0, "demon-sgdm": 0.95, "sgdm": 0.0, "demon-adam": 0.0})
    assert shown.area("steps", "demon-sgdm") == pytest.approx(2 / 3)
    assert shown.best("time", "demon-sgdm") == 0.5  # the tie on 2 epochs counts for both
    assert shown.best("steps", "demon-sgdm") == 0.0  # 15 steps against adam's 10 there
    assert shown.order()[:2] == ["adam", "demon-sgdm"]
    table = targets.profile_table(shown)
    assert table.cells[0] == ("adam", "1.000", "1.000", "100 %", "100 %", "2 of 2")
    assert table.cells[1] == ("demon-sgdm", "0.950", "0.667", "50 %", "0 %", "2 of 2")
    assert ("sgdm", "0.000", "0.000", "0 %", "0 %", "1 of 2") in table.cells
    # the references join with --rank-all, and move every ratio of the setting they win
    everyone = targets.profile(_view(store, rank_all=True))
    assert everyone is not None
    assert {m: everyone.area("time", m) for m in ("adamw", "adam", "demon-sgdm")} == (
        pytest.approx({"adamw": 0.5, "adam": 0.75, "demon-sgdm": 0.625})
    )


def test_a_target_given_to_the_report_replaces_the_recorded_one(store: pathlib.Path) -> None:
    view = _view(store, given={TASK: 0.81})
    assert {s.source for s in view} == {"given to the report"}
    four = next(s for s in view if s.epochs == 4)
    rows = {r.method: r for r in four.rows}
    assert rows["demon-sgdm"].time == targets.Spread(INF, 4.0, INF)  # only seed 0 gets .82
    assert rows["adam"].time.median == INF
    shown = targets.profile(view)
    assert shown is not None and all(shown.area("time", m) == 0 for m in shown.methods)


def test_disagreeing_recorded_targets_and_a_task_without_one(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "mixed.sqlite"
    with ResultStore(path) as db:
        db.write(_result("adam", 0, [0.7, 0.8], [1.0, 2.0], target=0.75))
        db.write(_result("adam", 1, [0.7, 0.8], [1.0, 2.0], target=0.75))
        db.write(_result("sgdm", 0, [0.7, 0.8], [1.0, 2.0], target=0.6))
    data = load_store(path)
    found = targets.resolve_targets(data)[TASK]
    assert found is not None and found.value == 0.75
    assert "0.75 (2 trials), 0.6 (1 trials)" in found.note and "--target mnist1d-mlp=" in found.note
    # a task without a target has no time-to-target table
    assert targets.target_settings(data, tables.store_settings(data), {TASK: None}) == []


def test_the_report_checks_a_given_target(store: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"--target: got 'mnist1d-cnn'; allowed: mnist1d-mlp"):
        store_content(store, targets={"mnist1d-cnn": 0.9})
    with pytest.raises(ConfigError, match=r"--target mnist1d-mlp: got 90; allowed: a finite"):
        store_content(store, targets={TASK: 90})


@requires("matplotlib", "(draws the report's figures)")
def test_the_report_shows_both_views(store: pathlib.Path) -> None:
    from demon_optim.report import html

    content = store_content(store)
    assert content.sections[-2:] == ("targets", "profiles")
    assert [t.csv_path for t in content.blocks["targets"]] == [
        "targets/mnist1d-mlp_2ep.csv",
        "targets/mnist1d-mlp_4ep.csv",
    ]
    (figure,) = [f for f in content.figures if f.section == "profiles"]
    assert figure.png[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in figure.svg[:1000]
    page = html.to_html(content)
    assert '<h2 id="targets">' in page and '<h2 id="profiles">' in page
    assert '<h3 id="table-profiles-area">' in page and 'id="figure-profiles"' in page
    markdown = html.to_markdown(content)
    assert "| adam | 1.000 | 1.000 | 100 % | 100 % | 2 of 2 |" in markdown
    assert "validation accuracy &gt;= 0.7 (recorded with the trials)" in markdown
    written = html.files(content)
    assert {"profiles.csv", "targets/mnist1d-mlp_4ep.csv"} <= set(written)
    areas = list(csv.DictReader(io.StringIO(written["profiles.csv"].decode())))
    assert areas[0] == {
        "method": "adam",
        "area_time": "1.0",
        "area_steps": "1.0",
        "rho1_time": "1.0",
        "rho1_steps": "1.0",
        "settings": "2",
    }


@requires("matplotlib", "(draws the report's figures)")
def test_a_store_without_targets_says_how_to_set_one(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "none.sqlite"
    with ResultStore(path) as db:  # fmnist-ncsn has no default target (docs/study.md)
        db.write(_result("adam", 0, [120.0, 110.0], [1.0, 2.0], target=None, task="fmnist-ncsn"))
    content = store_content(path)
    assert "targets" in content.sections and "profiles" not in content.sections
    assert content.blocks["targets"] == []
    assert "No target for fmnist-ncsn: set one in the study ([targets])" in content.notes["targets"]
    given = store_content(path, targets={"fmnist-ncsn": 115.0})  # lower is better
    (table,) = given.blocks["targets"]
    assert table.title == "fmnist-ncsn · 2 epochs: validation dsm_loss <= 115 (given to the report)"
    assert table.cells[0][2:6] == ("1/1", "2", "20", "2")
    assert "profiles" in given.sections


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("mnist1d-mlp", "--target: got 'mnist1d-mlp'; allowed: TASK=VALUE, e.g. mnist1d-cnn=0.9"),
        ("mnist1d-mlp=high", "--target: got 'mnist1d-mlp=high'; allowed: TASK=VALUE"),
        ("mnist1d-cnn=0.9", "--target: got 'mnist1d-cnn'; allowed: mnist1d-mlp (a task in"),
        (
            "mnist1d-mlp=70",
            "--target mnist1d-mlp: got 70.0; allowed: a finite number, the "
            "validation accuracy to reach, in [0, 1] (0.9 for 90 %)",
        ),
    ],
)
def test_the_command_line_target_names_what_is_wrong(
    store: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    message: str,
) -> None:
    from demon_optim.cli import main

    code = main(["report", "--store", str(store), "--out", str(tmp_path / "r"), "--target", option])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"demon-optim: error: {message}")
    assert not (tmp_path / "r").exists()  # refused before anything is written
