"""Search as a study axis: the keys and their errors, the space, and the coordinator's
sequence of draws (seeded, independent of completion order, worker count and resumption).

The coordinator tests run no training: an executor here returns results computed from each
trial's configuration, in an order of its choosing, so only the sequence is under test.
"""

from __future__ import annotations

import builtins
import math
import random
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from demon_optim.errors import ConfigError
from demon_optim.study.executors import run_study
from demon_optim.study.search.space import DEFAULT_TUNING_BUDGETS, TPE_BATCH
from demon_optim.study.spec import TrialSpec, expand, parse_study
from demon_optim.study.store import ResultStore
from demon_optim.study.trial import TrialResult
from tests.conftest import requires

BASE = {"tasks": ["digits-mlp"], "methods": ["sgdm", "demon-sgdm"], "seeds": [0, 1], "epochs": 2}
SPACE = {"lr": {"low": 1e-3, "high": 1.0, "log": True}, "momentum": {"low": 0.8, "high": 0.99}}


def parse(**extra: Any):
    return parse_study({**BASE, **extra})


# --- the keys ---------------------------------------------------------------------------------


def test_grid_is_the_default_and_sampled_methods_leave_the_grid() -> None:
    assert parse().searches == {}
    study = parse(search="sample", tuning={"sgdm": {"search": "grid"}})
    assert set(study.searches) == {"demon-sgdm"}
    assert {s.method for s in expand(study)} == {"sgdm"}  # demon-sgdm's trials are drawn


def test_defaults_and_overrides() -> None:
    study = parse(search="sample", space={"sgdm": SPACE}, tuning={"demon-sgdm": {"sampler": "tpe"}})
    sgdm, demon = study.searches["sgdm"], study.searches["demon-sgdm"]
    assert (sgdm.sampler, sgdm.tuning_budgets, sgdm.seed) == ("random", DEFAULT_TUNING_BUDGETS, 0)
    assert sgdm.batch == sgdm.draws == 16  # random and QMC: one batch, nothing to wait for
    assert demon.sampler == "tpe" and demon.batch == TPE_BATCH
    study = parse(search="sample", sampler="qmc", tuning_budgets=[8, 2], search_seed=7)
    assert study.searches["sgdm"].tuning_budgets == (2, 8) and study.searches["sgdm"].seed == 7


def test_the_space_its_defaults_and_tuple_valued_choices() -> None:
    study = parse_study(
        {
            **BASE,
            "methods": ["sgdm", "sgdm+onecycle"],
            "search": "sample",
            "grid": {"sgdm": {"momentum": [0.9, 0.95]}},
            "space": {
                "sgdm": {"lr": {"low": 0.01, "high": 1, "log": True}, "weight_decay": 1e-4},
                "sgdm+onecycle": {"momentum_range": {"choices": [[0.95, 0.85], [0.9, 0.8]]}},
            },
        }
    )
    dims = {d.name: d for d in study.searches["sgdm"].space.dimensions}
    assert (dims["lr"].kind, dims["lr"].low, dims["lr"].high, dims["lr"].log) == (
        "float",
        0.01,
        1.0,
        True,
    )
    assert dims["momentum"].choices == (0.9, 0.95)  # from [grid.sgdm]: choices
    assert dims["weight_decay"].choices == (1e-4,) and not dims["weight_decay"].varies
    onecycle = study.searches["sgdm+onecycle"].space
    (ranges,) = [d for d in onecycle.dimensions if d.name == "momentum_range"]
    assert ranges.choices == ((0.95, 0.85), (0.9, 0.8))
    config = onecycle.config({"lr": "0.1", "momentum_range": "[0.9, 0.8]"})
    assert config["momentum_range"] == (0.9, 0.8) and config["lr"] == 0.1


BAD = [
    ({"search": "random"}, "search: got 'random'; allowed: grid, sample"),
    ({"search": "sample", "sampler": "bayes"}, "sampler: got 'bayes'; allowed: random, qmc, tpe"),
    ({"search": "sample", "tuning_budgets": []}, "tuning_budgets: got []; allowed: a non-empty"),
    ({"search": "sample", "tuning_budgets": [0, 4]}, "tuning_budgets[0]: got 0; allowed:"),
    ({"search": "sample", "tuning_budgets": [4, 4]}, "tuning_budgets: got [4, 4]; allowed:"),
    ({"search": "sample", "tuning_budgets": 16}, "tuning_budgets: got 16; allowed: a non-empty"),
    ({"search": "sample", "search_seed": -1}, "search_seed: got -1; allowed: integers in [0, 2"),
    ({"search": "sample", "search_batch": 0}, "search_batch: got 0; allowed: positive integers"),
    ({"search": "sample", "search_batch": 1.5}, "search_batch: got 1.5; allowed: positive"),
    ({"sampler": "qmc"}, "sampler: got 'qmc'; allowed: only with search = \"sample\""),
    ({"tuning_budgets": [1, 2]}, "tuning_budgets: got [1, 2]; allowed: only with search"),
    ({"tuning": {"adam": {}}}, "tuning: got 'adam'; allowed: sgdm (the study's methods)"),
    ({"tuning": {"sgdm": {"sampeler": "tpe"}}}, "tuning.sgdm.sampeler: got 'sampeler'; allowed: "
     "search, sampler, tuning_budgets, search_seed, search_batch"),
    ({"tuning": {"sgdm": {"sampler": "tpe"}}}, "tuning.sgdm.sampler: got 'tpe'; allowed: only"),
    ({"tuning": {"sgdm": {"search": "grid", "search_seed": 1}}}, "tuning.sgdm.search_seed: got 1"),
    ({"tuning": {"sgdm": {"search": "grd"}}}, "tuning.sgdm.search: got 'grd'; allowed: grid, "),
    ({"tuning": "tpe"}, "tuning: got 'tpe'; allowed: a table of [tuning.<method>] tables"),
    ({"space": {"sgdm": SPACE}}, "space.sgdm: got 'sgdm'; allowed: a method with search = "),
    ({"search": "sample", "space": {"sgdm": {"beta": 1}}}, "space.sgdm.beta: got 'beta'; "
     "allowed: lr, momentum, weight_decay"),
    ({"search": "sample", "space": {"sgdm": {"lr": {"low": 1e-3}}}}, "space.sgdm.lr.high: "
     "missing; allowed: a range {low = ..., high = ...}"),
    ({"search": "sample", "space": {"sgdm": {"lr": {"low": 1, "high": 0.1}}}}, "space.sgdm.lr: "
     "got {'low': 1, 'high': 0.1}; allowed: low < high"),
    ({"search": "sample", "space": {"sgdm": {"lr": {"low": 0, "high": 1, "log": True}}}},
     "space.sgdm.lr.low: got 0; allowed: numbers > 0 with log = true"),
    ({"search": "sample", "space": {"sgdm": {"lr": {"low": 0.1, "high": 1, "log": "yes"}}}},
     "space.sgdm.lr.log: got 'yes'; allowed: True or False"),
    ({"search": "sample", "space": {"sgdm": {"momentum": {"low": 0.5, "high": 1.5}}}},
     "space.sgdm.momentum.high: got 1.5; allowed: numbers in [0, 1)"),
    ({"search": "sample", "space": {"sgdm": {"lr": {"low": 0.1, "high": 1, "lg": True}}}},
     "space.sgdm.lr.lg: got 'lg'; allowed: low, high, log, step, or choices alone"),
    ({"search": "sample", "space": {"sgdm": {"lr": {"low": 0, "high": 1, "step": 0.3}}}},
     "space.sgdm.lr.step: got 0.3; allowed: a step that divides high - low"),
    ({"search": "sample", "space": {"sgdm": {"lr": {"choices": [0.1, 0.1]}}}},
     "space.sgdm.lr.choices: got [0.1, 0.1]; allowed: lists without repeated values"),
    ({"search": "sample", "space": {"sgdm": {"lr": {"choices": [0.1], "low": 1}}}},
     "space.sgdm.lr.low: got 'low'; allowed: nothing beside choices"),
    ({"search": "sample", "space": {"sgdm": {"lr": [0.1, 0.3]}}}, "space.sgdm.lr: got [0.1, "
     "0.3]; allowed: a range {low = ..., high = ...} (optionally log = true or step = ...), "
     "{choices = [...]}, or one value"),
    ({"search": "sample", "space": {"sgdm": {"lr": 0.1, "momentum": 0.9}}}, "space.sgdm: got "
     "{'lr': 0.1, 'momentum': 0.9}; allowed: a space in which some hyperparameter varies"),
    ({"search": "sample", "grid": {"sgdm": {"lr": 0.1}}, "space": {"sgdm": SPACE}},
     "grid.sgdm.lr: got 'lr'; allowed: a hyperparameter not also in [space.sgdm]"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_keys_and_values_are_named(extra: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(**extra)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_tuple_valued_hyperparameter_takes_no_range() -> None:
    with pytest.raises(ConfigError, match=r"space.sgdm\+onecycle.momentum_range: .*takes no range"):
        parse_study(
            {
                **BASE,
                "methods": ["sgdm+onecycle"],
                "search": "sample",
                "space": {"sgdm+onecycle": {"momentum_range": {"low": 0.8, "high": 0.9}}},
            }
        )


def test_a_missing_optuna_is_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from demon_optim.study.runner import run

    real_import = builtins.__import__

    def no_optuna(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "optuna" or name.startswith("optuna."):
            raise ModuleNotFoundError(f"No module named {name!r}", name="optuna")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "optuna", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(ConfigError) as caught:
        run({**BASE, "search": "sample"}, store=tmp_path / "s.sqlite")
    text = str(caught.value)
    assert "\n" not in text and 'pip install "demon-optim[tuning]"' in text, text
    assert text.startswith("search: sampling configurations needs the package optuna")
    assert not (tmp_path / "s.sqlite").exists()  # stopped before anything was written


# --- the coordinator's sequence ------------------------------------------------------------------

optuna_needed = requires("optuna", "(the tuning extra: pip install 'demon-optim[tuning]')")


def score(spec: TrialSpec) -> tuple[float, float]:
    """A made-up (validation, test) landscape: best near lr 0.1, momentum 0.9."""
    config = spec.config
    lr, momentum = float(config["lr"]), float(config["momentum"])
    val = 0.9 - 0.1 * math.log10(lr / 0.1) ** 2 - (momentum - 0.9) ** 2 + 0.001 * spec.seed
    return val, val - 0.02


class Scripted:
    """An executor without training: results from :func:`score`, yielded in an order of
    its own (``reverse``, or shuffled by ``seed``), ``workers`` at a time; ``stop_after``
    raises KeyboardInterrupt (Ctrl-C) after that many results."""

    def __init__(self, workers: int = 1, order: str = "in", stop_after: int | None = None):
        self.workers = workers
        self.order = order
        self.stop_after = stop_after
        self.yielded = 0

    def map_unordered(self, specs: Iterable[TrialSpec]) -> Iterator[TrialResult]:
        chunk: list[TrialSpec] = []
        shuffle = random.Random(len(self.order))
        for spec in [*specs, None]:
            if spec is not None:
                chunk.append(spec)
                if len(chunk) < self.workers:
                    continue
            if self.order == "reverse":
                chunk.reverse()
            elif self.order == "shuffled":
                shuffle.shuffle(chunk)
            for ready in chunk:
                if self.stop_after is not None and self.yielded >= self.stop_after:
                    raise KeyboardInterrupt
                self.yielded += 1
                val, test = score(ready)
                yield TrialResult(
                    spec=ready,
                    status="done",
                    val_metric=val,
                    test_metric=test,
                    history=({"epoch": 1, "val_metric": val},),
                    started_at=time.time(),
                )
            chunk = []


def sampled(sampler: str, **extra: Any):
    keys = {"tuning_budgets": [2, 6], "search_batch": 2, "search_seed": 3, **extra}
    return parse(
        search="sample", sampler=sampler, space={"sgdm": SPACE, "demon-sgdm": SPACE}, **keys
    )


def run_search(study, store_path, executor) -> tuple[list, list[str], Any]:
    """Run every search of ``study`` to its budget: (each search's drawn params, the trial
    ids drawn, the RunReport)."""
    from demon_optim.study.search.coordinator import Coordinator, plan, run_with_searches

    with ResultStore(store_path) as store:
        coordinator = Coordinator(plan(study), store)
        report = run_with_searches(expand(study), coordinator, store, executor)
        ids = [s.trial_id for s in coordinator.specs()]
        draws = [[row["params"] for row in store.search_draws(s.search_id)] for s in plan(study)]
    return draws, ids, report


@optuna_needed
@pytest.mark.parametrize("sampler", ["random", "qmc", "tpe"])
def test_the_sequence_is_seeded_and_does_not_depend_on_order_or_workers(
    sampler: str, tmp_path
) -> None:
    study = sampled(sampler)
    first, ids, report = run_search(study, tmp_path / "a.sqlite", Scripted())
    assert report.written == 2 * 6 * 2 and len(ids) == 24 and len(first[0]) == 6
    again, ids_again, _ = run_search(study, tmp_path / "b.sqlite", Scripted(3, "reverse"))
    shuffled, ids_shuffled, _ = run_search(study, tmp_path / "c.sqlite", Scripted(5, "shuffled"))
    assert first == again == shuffled and ids == ids_again == ids_shuffled
    other, _, _ = run_search(sampled(sampler, search_seed=4), tmp_path / "d.sqlite", Scripted())
    assert other != first  # the seed matters


def tpe_in_pairs(budget: int):
    """sgdm alone, sampling ``budget`` configurations by TPE in batches of 2."""
    return parse(
        search="sample",
        sampler="tpe",
        tuning_budgets=[budget],
        search_batch=2,
        methods=["sgdm"],
        space={"sgdm": SPACE},
    )


@optuna_needed
def test_tpe_uses_what_it_was_told(tmp_path) -> None:
    """The same seed with other results told gives other TPE draws after its start-up."""
    study = tpe_in_pairs(14)
    told, _, _ = run_search(study, tmp_path / "a.sqlite", Scripted())

    class Inverted(Scripted):
        def map_unordered(self, specs):
            for result in super().map_unordered(specs):
                yield TrialResult(**{**result.__dict__, "val_metric": -result.val_metric})

    other, _, _ = run_search(study, tmp_path / "b.sqlite", Inverted())
    assert told[0][:10] == other[0][:10]  # TPE's 10 independent start-up draws
    assert told[0][10:] != other[0][10:]


@optuna_needed
def test_an_interrupted_search_resumes_the_same_sequence(tmp_path) -> None:
    study = sampled("tpe")
    reference, ids, _ = run_search(study, tmp_path / "ref.sqlite", Scripted())
    path = tmp_path / "cut.sqlite"
    _, _, cut = run_search(study, path, Scripted(2, "reverse", stop_after=9))
    assert cut.interrupted and cut.written == 9
    resumed, resumed_ids, report = run_search(study, path, Scripted(3, "shuffled"))
    assert resumed == reference and resumed_ids == ids
    assert report.written == 24 - 9
    with ResultStore(path, readonly=True) as store:
        assert store.count() == 24
        search, _ = store.searches()
        assert [d["draw"] for d in search["draws"]] == list(range(6))
        assert all(d["state"] == "complete" for d in search["draws"])


@optuna_needed
def test_a_larger_budget_continues_the_search(tmp_path) -> None:
    path = tmp_path / "s.sqlite"
    raw = {**BASE, "methods": ["sgdm"], "search": "sample", "sampler": "tpe", "search_batch": 2}
    raw["space"] = {"sgdm": SPACE}
    first, _, _ = run_search(parse_study({**raw, "tuning_budgets": [4]}), path, Scripted())
    more, _, report = run_search(parse_study({**raw, "tuning_budgets": [6]}), path, Scripted())
    assert more[0][:4] == first[0] and len(more[0]) == 6
    assert report.written == 2 * 2  # the 2 new configurations, 2 seeds each
    fewer, ids, report = run_search(parse_study({**raw, "tuning_budgets": [3]}), path, Scripted())
    assert fewer == more and len(ids) == 3 * 2 and report.written == 0  # the first 3 draws


@optuna_needed
def test_a_diverged_configuration_is_told_as_failed_and_a_failed_one_waits(tmp_path) -> None:
    study = tpe_in_pairs(4)

    class Flaky(Scripted):
        def __init__(self, status: str) -> None:
            super().__init__()
            self.status = status

        def map_unordered(self, specs):
            for result in super().map_unordered(specs):
                if result.spec.seed == 1 and self.yielded <= 2:  # the first draw's seed 1
                    result = TrialResult(
                        spec=result.spec, status=self.status, started_at=time.time(), error="x"
                    )
                yield result

    path = tmp_path / "div.sqlite"
    _, _, report = run_search(study, path, Flaky("diverged"))
    with ResultStore(path, readonly=True) as store:
        (search,) = store.searches()
    assert [d["state"] for d in search["draws"]] == ["fail", "complete", "complete", "complete"]
    assert search["draws"][0]["value"] is None and report.written == 8

    path = tmp_path / "failed.sqlite"
    _, _, report = run_search(study, path, Flaky("failed"))
    with ResultStore(path, readonly=True) as store:
        (search,) = store.searches()
    assert len(search["draws"]) == 2 and all(d["state"] is None for d in search["draws"])
    assert report.written == 4  # the batch waits for its failed trial
    _, _, report = run_search(study, path, Scripted())  # the next run reruns it, goes on
    assert report.written == 1 + 4


@optuna_needed
def test_a_record_another_optuna_would_not_draw_is_refused(tmp_path) -> None:
    import sqlite3

    study = sampled("random")
    path = tmp_path / "s.sqlite"
    run_search(study, path, Scripted())
    with sqlite3.connect(path) as db:
        db.execute(
            'UPDATE search_draws SET params = \'{"lr": 0.5, "momentum": 0.9}\' WHERE draw = 1'
        )
    db.close()
    with pytest.raises(ConfigError, match=r"search sgdm on digits-mlp \(2 epochs\) .*draw 1 is"):
        run_search(study, path, Scripted())


def test_run_study_is_unchanged_for_grids(tmp_path) -> None:
    """A study without search runs as before (one round, nothing recorded)."""
    study = parse(grid={"sgdm": {"lr": 0.1, "momentum": 0.9}, "demon-sgdm": {"lr": 0.1}})
    with ResultStore(tmp_path / "g.sqlite") as store:
        report = run_study(expand(study), store, Scripted())
        assert report.written == len(expand(study)) and store.searches() == []


def test_the_documented_search_example_is_valid(tmp_path) -> None:
    import pathlib
    import re

    from demon_optim.study.spec import load_study

    docs = pathlib.Path(__file__).parents[2] / "docs" / "study.md"
    section = docs.read_text().split("## Search: sampled configurations", 1)[1]
    (tmp_path / "budgets.toml").write_text(re.search(r"```toml\n(.*?)```", section, re.S).group(1))
    study = load_study(tmp_path / "budgets.toml")
    assert set(study.searches) == {"sgdm", "demon-sgdm", "adam", "demon-adam"}
    demon = {d.name: d for d in study.searches["demon-adam"].space.dimensions}
    assert demon["weight_decay"].choices == (0.0, 1e-4) and demon["lr"].log
    assert {s.method for s in expand(study)} == {"adam+lr-cosine"}


def test_the_budgets_quick_preset() -> None:
    from demon_optim.study.spec import load_study

    study = load_study("budgets-quick")
    assert expand(study) == [] and len(study.seeds) == 2 and study.epochs == (30,)
    assert {m: (s.sampler, s.tuning_budgets) for m, s in study.searches.items()} == dict.fromkeys(
        ["sgdm", "demon-sgdm", "adam", "demon-adam"], ("qmc", (1, 4, 16))
    )
