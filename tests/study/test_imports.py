"""Importing published results (AlgoPerf logs, DeepOBS runs) into a store.

The fixtures under tests/fixtures/imports are small files written for these tests in the two
formats (AlgoPerf: nadamw_baseline on mnist_jax, 2 studies x 2 trials, study 1's trial 2
has empty metrics at its last evaluation; DeepOBS: mnist_mlp, SGD 2 configurations x seeds
42/43, Adam 1 configuration whose seed 43 was stopped by DeepOBS after epoch 1 and filled
with its initial values).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pathlib
import shutil
import sqlite3

import pytest

from demon_optim.cli import main
from demon_optim.errors import ConfigError
from demon_optim.study.imports import algoperf, deepobs, import_paths, read_paths
from demon_optim.study.store import SCHEMA_VERSION, ResultStore
from tests.study.test_store import result, spec

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "imports"
ALGOPERF = FIXTURES / "algoperf"
DEEPOBS = FIXTURES / "deepobs"
TRIAL = ALGOPERF / "nadamw_baseline" / "study_0" / "mnist_jax" / "trial_1"
SGD = DEEPOBS / "mnist_mlp" / "SGD"
ADAM = next((DEEPOBS / "mnist_mlp" / "Adam").iterdir())


def _expected_id(fmt: str, files: dict[str, pathlib.Path]) -> str:
    """The documented id: sha256 of the canonical JSON of format, file hashes and record."""
    hashes = {role: hashlib.sha256(p.read_bytes()).hexdigest() for role, p in files.items()}
    identity = {"import": fmt, "files": hashes, "record": ""}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- the two readers --------------------------------------------------------------------------


def test_algoperf_trials_from_their_folder_layout_and_side_files() -> None:
    trials = {(t.details["study"], t.details["trial"]): t for t in read_paths([ALGOPERF])[0]}
    assert sorted(trials) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    first = trials[(0, 1)]
    assert (first.task, first.method, first.format) == ("mnist", "nadamw_baseline", "algoperf")
    assert first.seed == 1520398811  # meta_data_0.json's rng_seed
    assert first.versions == {"framework": "jax"} and first.details["workload"] == "mnist_jax"
    hparams = json.loads((TRIAL / "hparams.json").read_text())
    assert dict(first.hyperparameters) == hparams
    assert (first.metric, first.higher_is_better) == ("accuracy", True)
    assert (first.epochs, first.batch_size) == (0, 0)  # AlgoPerf logs neither
    assert first.status == "done" and first.val_metric == 0.975
    assert first.test_metric == pytest.approx(0.971)
    assert [r["step"] for r in first.history] == [250, 500, 750, 1000]
    assert [r["elapsed_s"] for r in first.history] == [11.5, 23.25, 35.25, 47.5]
    record = first.history[0]
    assert record["val_metrics"] == {"accuracy": 0.912, "loss": pytest.approx(0.082904)}
    assert set(record["test_metrics"]) == {"accuracy", "loss"}  # num_examples is a count
    assert record["train_loss"] == record["train_metrics"]["loss"]
    assert first.metrics["val"]["accuracy"] == 0.975
    assert first.wall_time_s == pytest.approx(47.5 + 8.0 + 0.4 + 4.0)  # total_duration
    # an empty selection-metric cell (pandas' NaN) ends the trial as diverged, at that line
    broken = trials[(1, 2)]
    assert broken.status == "diverged" and len(broken.history) == 3
    assert broken.val_metric is None and broken.test_metric is None and broken.metrics == {}
    assert "global step 1000 (line 5 of eval_measurements.csv)" in (broken.error or "")


def test_deepobs_runs_per_epoch_with_an_aborted_run_diverged() -> None:
    trials = read_paths([DEEPOBS])[0]
    assert len(trials) == 6 and {t.format for t in trials} == {"deepobs"}
    sgd = [t for t in trials if t.method == "SGD" and dict(t.hyperparameters)["lr"] == 0.1]
    assert sorted(t.seed for t in sgd) == [42, 43]
    run = min(sgd, key=lambda t: t.seed)
    raw = json.loads(next(SGD.glob("*lr__0.1*/random_seed__42__*.json")).read_text())
    assert (run.task, run.epochs, run.batch_size) == ("mnist_mlp", 3, 128)
    assert dict(run.hyperparameters) == {"lr": 0.1, "momentum": 0.9, "nesterov": False}
    assert [r["epoch"] for r in run.history] == [1, 2, 3]  # entry 0 (before training) left out
    assert [r["val_metric"] for r in run.history] == raw["valid_accuracies"][1:]
    assert run.history[2]["test_metrics"] == {
        "loss": raw["test_losses"][3],
        "accuracy": raw["test_accuracies"][3],
    }
    assert run.val_metric == raw["valid_accuracies"][-1]
    assert run.test_metric == raw["test_accuracies"][-1] and run.metric == "accuracy"
    adam = sorted((t for t in trials if t.method == "Adam"), key=lambda t: t.seed)
    # lists as tuples, a null ("the default") left out
    assert dict(adam[0].hyperparameters) == {"lr": 0.001, "betas": (0.9, 0.999)}
    assert adam[0].status == "done" and len(adam[0].history) == 3
    assert adam[1].status == "diverged" and [r["epoch"] for r in adam[1].history] == [1]
    assert "stopped in epoch 2" in (adam[1].error or "") and adam[1].val_metric is None


def test_deepobs_without_accuracies_selects_on_the_loss(tmp_path: pathlib.Path) -> None:
    raw = json.loads(next(SGD.glob("*lr__0.1*/random_seed__42__*.json")).read_text())
    for key in deepobs.ACCURACIES:
        del raw[key]
    raw.update(testproblem="quadratic_deep", weight_decay=0.002, training_params={"lr": 3})
    path = tmp_path / "run.json"
    path.write_text(json.dumps(raw))
    (trial,) = deepobs.read(path)
    assert (trial.metric, trial.higher_is_better) == ("loss", False)
    assert trial.val_metric == raw["valid_losses"][-1]
    # the test problem's weight decay and the training parameters join the hyperparameters
    assert dict(trial.hyperparameters)["weight_decay"] == 0.002
    assert dict(trial.hyperparameters)["training_lr"] == 3  # "lr" is the optimizer's


def test_a_nan_validation_value_ends_a_deepobs_run_as_diverged(tmp_path: pathlib.Path) -> None:
    raw = json.loads(next(SGD.glob("*lr__0.1*/random_seed__42__*.json")).read_text())
    raw["valid_accuracies"][2] = math.nan
    path = tmp_path / "run.json"
    path.write_text(json.dumps(raw))  # json writes NaN, as DeepOBS does
    (trial,) = deepobs.read(path)
    assert trial.status == "diverged" and len(trial.history) == 1
    assert "after epoch 2" in (trial.error or "")


def test_an_unknown_algoperf_workload_falls_back_to_a_known_metric(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "mine" / "my_workload_pytorch" / "trial_3"
    folder.mkdir(parents=True)
    (folder / "eval_measurements.csv").write_text(
        "global_step,accumulated_submission_time,validation/loss,validation/wer\n"
        "10,1.5,2.0,0.5\n20,3.0,1.5,0.4\n"
    )
    (trial,) = algoperf.read(folder / "eval_measurements.csv")
    assert (trial.task, trial.method, trial.seed) == ("my_workload", "mine", 0)
    assert (trial.metric, trial.higher_is_better) == ("wer", False)  # before "loss"
    assert trial.hyperparameters == () and trial.val_metric == 0.4
    assert trial.test_metric is None and trial.versions == {"framework": "pytorch"}


# --- into the store ---------------------------------------------------------------------------


def test_import_writes_rows_marked_imported_and_a_second_import_adds_nothing(
    tmp_path: pathlib.Path,
) -> None:
    store = tmp_path / "s.sqlite"
    with ResultStore(store) as results:
        results.write(result(spec(0)))  # one trial of the user's own
    first = import_paths(store, [ALGOPERF, DEEPOBS])
    assert (first.files, first.trials, first.new, first.already) == (10, 10, 10, 0)
    assert first.by_format == {"algoperf": 4, "deepobs": 6}
    assert "10 new" in first.message()
    with ResultStore(store, readonly=True) as results:
        rows = {r["trial_id"]: r for r in results.rows()}
    own = rows.pop(spec(0).trial_id)
    assert own["origin"] is None and own["source"] is None
    assert {r["origin"] for r in rows.values()} == {"import:algoperf", "import:deepobs"}
    expected = _expected_id(
        "algoperf",
        {
            "eval_measurements.csv": TRIAL / "eval_measurements.csv",
            "hparams.json": TRIAL / "hparams.json",
            "meta_data_0.json": TRIAL / "meta_data_0.json",
        },
    )
    row = rows[expected]
    assert row["source"]["file"] == str(TRIAL / "eval_measurements.csv")
    assert row["source"]["format"] == "algoperf" and row["task"] == "mnist"
    assert row["spec"]["about"]["reference"] is True and row["spec"]["protocol"] == 0
    assert row["status"] == "done" and row["epochs_run"] == 4 and row["owner"] is None
    adam = next(ADAM.glob("random_seed__43__*.json"))
    assert rows[_expected_id("deepobs", {"run": adam})]["status"] == "diverged"
    # the same files again, one of them from a copy elsewhere: the content decides the id
    copy = tmp_path / "copy.json"
    shutil.copy(adam, copy)
    again = import_paths(store, [DEEPOBS, copy, ALGOPERF])
    assert (again.trials, again.new, again.already) == (10, 0, 10)
    assert "nothing new (all 10 were already in the store)" in again.message()
    with ResultStore(store, readonly=True) as results:
        assert results.count() == 11


def test_rows_are_written_in_one_transaction(tmp_path: pathlib.Path) -> None:
    from demon_optim.errors import EnvironmentFailure
    from demon_optim.study.imports import store_row

    good, other = (store_row(t) for t in read_paths([SGD])[0][:2])
    broken = {**other, "status": "bogus"}  # the table's CHECK refuses it, after `good`
    with ResultStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(EnvironmentFailure, match="cannot import trials"):
            store.import_rows([good, broken])
        assert store.count() == 0  # `good` was rolled back with it
        with pytest.raises(ValueError, match="not an imported trial row"):
            store.import_rows([{**good, "origin": None}])
        assert store.import_rows([good, other]) == 2


def test_export_keeps_only_the_users_own_trials(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "s.sqlite"
    with ResultStore(store) as results:
        results.write(result(spec(0)))
    import_paths(store, [DEEPOBS])
    with ResultStore(store, readonly=True) as results:
        assert results.count() == 7
        assert results.export_csv(tmp_path / "out.csv") == 1


def test_a_folder_walk_skips_algoperf_side_files_and_other_json(tmp_path: pathlib.Path) -> None:
    shutil.copytree(DEEPOBS, tmp_path / "d")
    (tmp_path / "d" / "notes.json").write_text('{"comment": "not a run"}')
    trials, files, skipped = read_paths([tmp_path / "d", ALGOPERF])
    assert files == 10 and len(trials) == 10  # hparams.json, meta_data_0.json, flags_0.json
    assert skipped == [tmp_path / "d" / "notes.json"]
    summary = import_paths(tmp_path / "s.sqlite", [tmp_path / "d"])
    assert "skipped 1 JSON file(s) that are not DeepOBS runs" in summary.message()


def _v3_store(path: pathlib.Path) -> list[tuple]:
    """A version-3 store (what the release before imports wrote); returns its rows."""
    with ResultStore(path) as store:
        store.write(result(spec(0)))
        store.write(result(spec(1)))
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("ALTER TABLE trials DROP COLUMN execution")
        db.execute("ALTER TABLE trials DROP COLUMN source")
        db.execute("ALTER TABLE trials DROP COLUMN origin")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
        rows = db.execute("SELECT * FROM trials ORDER BY rowid").fetchall()
    db.close()
    return rows


def test_a_version_3_store_is_migrated_with_a_backup_by_the_first_import(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "v3.sqlite"
    before = _v3_store(path)
    with ResultStore(path, readonly=True) as store:  # read as it is: every trial is the user's
        assert store.meta()["schema_version"] == "3"
        assert [r.get("origin") for r in store.rows()] == [None, None]
    with caplog.at_level(logging.WARNING):
        summary = import_paths(path, [TRIAL / "eval_measurements.csv"])
    assert summary.new == 1
    assert f"migrated from schema version 3 to {SCHEMA_VERSION}" in caplog.text
    backup = tmp_path / "v3.sqlite.v3-backup"
    with sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("SELECT * FROM trials ORDER BY rowid").fetchall() == before
        assert dict(db.execute("SELECT * FROM meta"))["schema_version"] == "3"
        columns = [r[1] for r in db.execute("PRAGMA table_info(trials)")]
    db.close()
    assert "origin" not in columns and "source" not in columns
    with sqlite3.connect(path) as db:
        after = db.execute("SELECT * FROM trials ORDER BY rowid").fetchall()
        columns = [r[1] for r in db.execute("PRAGMA table_info(trials)")]
    db.close()
    assert columns[-3:] == ["origin", "source", "execution"]
    assert [row[:-3] for row in after[:2]] == before  # the user's rows intact, origin NULL
    assert [row[-3:] for row in after[:2]] == [(None, None, None), (None, None, None)]
    assert after[2][-3] == "import:algoperf"


# --- malformed files: the file and its line or field named, nothing imported ------------------


def _algoperf_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    target = tmp_path / "logs" / "sub" / "mnist_jax" / "trial_1"
    shutil.copytree(TRIAL, target)
    return target / "eval_measurements.csv"


def _deepobs_copy(tmp_path: pathlib.Path, change) -> pathlib.Path:
    raw = json.loads(next(SGD.glob("*lr__0.1*/random_seed__42__*.json")).read_text())
    change(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    return path


def _edit_csv(path: pathlib.Path, line: int, column: str, text: str) -> None:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = text
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def _drop_column(path: pathlib.Path, column: str) -> None:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    k = rows[0].index(column)
    path.write_text("\n".join(",".join(r[:k] + r[k + 1 :]) for r in rows) + "\n")


ALGOPERF_CASES = {
    "missing column": (
        lambda p: _drop_column(p, "global_step"),
        "line 1: header: missing column(s) global_step;",
        "allowed: AlgoPerf's columns",
    ),
    "missing metric column": (
        lambda p: _drop_column(p, "validation/accuracy"),
        "line 1: header: missing column(s) validation/accuracy (the target metric of "
        "AlgoPerf's mnist)",
        "",
    ),
    "bad number": (
        lambda p: _edit_csv(p, 3, "validation/accuracy", "0.9x"),
        "line 3: validation/accuracy: got '0.9x'",
        "allowed: a number (or an empty cell)",
    ),
    "underscored number": (  # float() would take it; a log never writes it
        lambda p: _edit_csv(p, 4, "test/loss", "1_000"),
        "line 4: test/loss: got '1_000'",
        "a number",
    ),
    "fractional step": (
        lambda p: _edit_csv(p, 2, "global_step", "2.5"),
        "line 2: global_step: got '2.5'",
        "a non-negative integer",
    ),
    "short row": (
        lambda p: p.write_text(p.read_text() + "1.0,2.0\n"),
        "line 6: row: got '2 cells'",
        "15 (the header's)",
    ),
    "no evaluations": (
        lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"),
        "line 2: evaluations: got 'none'",
        "at least one row",
    ),
    "nested hyperparameter": (
        lambda p: (p.parent / "hparams.json").write_text('{"lr": {"low": 1}}'),
        "hparams.json': field 'lr': got {'low': 1}",
        "a number, true/false, a string, or a list of them",
    ),
    "bad seed": (
        lambda p: (p.parent / "meta_data_0.json").write_text('{"rng_seed": "7"}'),
        "meta_data_0.json': field 'rng_seed': got '7'",
        "a non-negative integer",
    ),
    "not json": (
        lambda p: (p.parent / "hparams.json").write_text("{lr: 1}"),
        "hparams.json': not valid JSON",
        "",
    ),
}


@pytest.mark.parametrize("case", ALGOPERF_CASES, ids=list(ALGOPERF_CASES))
def test_a_malformed_algoperf_log_imports_nothing(tmp_path: pathlib.Path, case: str) -> None:
    change, message, allowed = ALGOPERF_CASES[case]
    path = _algoperf_copy(tmp_path)
    change(path)
    store = tmp_path / "s.sqlite"
    with ResultStore(store) as results:
        results.write(result(spec(0)))
    with pytest.raises(ConfigError) as caught:
        import_paths(store, [DEEPOBS, path])  # the good files first: still nothing imported
    text = str(caught.value)
    assert text.startswith("import '") and message in text and allowed in text
    assert "\n" not in text
    with ResultStore(store, readonly=True) as results:
        assert results.count() == 1


def _set(key, value):
    return lambda raw: raw.__setitem__(key, value)


DEEPOBS_CASES = {
    "missing field": (lambda raw: raw.pop("valid_losses"), "field 'valid_losses': got 'nothing"),
    "missing testproblem": (lambda raw: raw.pop("testproblem"), "field 'testproblem'"),
    "hyperparameters not an object": (
        _set("optimizer_hyperparams", [0.1]),
        "field 'optimizer_hyperparams': got [0.1]; allowed: an object",
    ),
    "a string in a list": (
        lambda raw: raw["train_losses"].__setitem__(2, "0.5"),
        "field 'train_losses'[2]: got '0.5'; allowed: a number",
    ),
    "epochs as text": (_set("num_epochs", "3"), "field 'num_epochs': got '3'; allowed: an integer"),
    "boolean seed": (_set("random_seed", True), "field 'random_seed': got True"),
    "wrong length": (
        lambda raw: raw["test_losses"].pop(),
        "field 'test_losses': got '3 entries'; allowed: 4 (num_epochs + 1",
    ),
    "half the accuracies": (
        lambda raw: raw.pop("test_accuracies"),
        "field 'test_accuracies': got 'nothing (it is missing)'",
    ),
    "empty name": (_set("optimizer_name", " "), "field 'optimizer_name': got ' '"),
    "not an object": (lambda raw: raw.clear(), "field 'testproblem'"),
}


@pytest.mark.parametrize("case", DEEPOBS_CASES, ids=list(DEEPOBS_CASES))
def test_a_malformed_deepobs_run_imports_nothing(tmp_path: pathlib.Path, case: str) -> None:
    change, message = DEEPOBS_CASES[case]
    path = _deepobs_copy(tmp_path, change)
    store = tmp_path / "s.sqlite"
    with pytest.raises(ConfigError) as caught:
        import_paths(store, [ALGOPERF, path])
    assert str(caught.value).startswith(f"import '{path}'") and message in str(caught.value)
    assert not store.exists()  # every file is read before the store is opened


def _file(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent", "got nothing there"),
        (lambda d: d, "got a folder with no AlgoPerf eval_measurements.csv"),
        (lambda d: _file(d / "x.txt", ""), "got a .txt file"),
        (lambda d: _file(d / "eval_measurements.csv", "global_step\n"), "folder layout"),
        (lambda d: _file(d / "r.json", "[1,"), "not valid JSON"),
    ],
    ids=["absent", "empty folder", "other file", "layout", "broken json"],
)
def test_paths_that_are_not_logs_are_refused(tmp_path: pathlib.Path, make, message: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"^import '") as caught:
        read_paths([make(folder)])
    assert message in str(caught.value)


# --- the command line ---------------------------------------------------------------------------


def test_the_import_command(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    assert main(["import", "--store", str(store), str(DEEPOBS)]) == 0
    assert "6 new" in capsys.readouterr().err
    assert main(["import", "--store", str(store), str(DEEPOBS)]) == 0
    assert "nothing new" in capsys.readouterr().err
    bad = _deepobs_copy(tmp_path, lambda raw: raw.pop("batch_size"))
    assert main(["import", "--store", str(store), str(bad)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("demon-optim: error: import '") and "field 'batch_size'" in line
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("setting,method,value\na,b,1\n")
    args = ["report", "--from-csv", str(csv_file), "--import", str(DEEPOBS), "--out", "x"]
    assert main(args) == 2
    assert "--import: only with --store" in capsys.readouterr().err
