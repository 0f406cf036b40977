"""The `demon-optim` command, run in-process (one worker, so monkeypatching reaches trials)."""

from __future__ import annotations

import csv
import hashlib
import pathlib
import subprocess
import sys

import pytest

from demon_optim.cli import main
from demon_optim.study.methods import builtin, method_names
from demon_optim.study.store import ResultStore
from demon_optim.study.tasks import task_names
from tests.conftest import requires

needs_sklearn = requires("sklearn", "(ships the digits data)")

STUDY = """
name = "tiny"
tasks = ["digits-mlp"]
methods = ["sgdm", "demon-sgdm", "adam"]
seeds = [0, 1]
epochs = 2

[grid.sgdm]
lr = [0.03, 0.1]
momentum = 0.9

[grid.demon-sgdm]
lr = 0.1
momentum = 0.9

[grid.adam]
lr = 1e-3
momentum = 0.9
"""


@pytest.fixture
def study(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_tasks_and_methods_listings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tasks")
    assert code == 0
    assert all(name in out for name in task_names()) and "accuracy (higher is better)" in out
    code, out, _ = run(capsys, "methods")
    assert code == 0
    assert all(name in out for name in method_names())
    assert "lr=[0.01, 0.03, 0.1, 0.3]" in out and "momentum_range=[0.95/0.85" in out


@needs_sklearn
def test_run_prints_and_writes_the_table_then_resumes(
    study: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "out" / "tiny.sqlite"
    code, out, err = run(capsys, "run", str(study), "--store", str(store), "--workers", "1")
    assert code == 0, err
    assert "### digits-mlp: 2 epochs, batch 100 (accuracy, higher is better)" in out
    assert "| rank | method | selected hyperparameters | test accuracy (mean ± std) |" in out
    for method in ("sgdm", "demon-sgdm", "adam"):
        assert f"| {method} |" in out
    assert "running 8 on 1 worker(s)" in err and "8 trials (8 done, 0 diverged, 0 failed)" in err
    markdown = (tmp_path / "out" / "tiny.md").read_text()
    assert markdown.startswith("# Study tiny") and out.strip() in markdown
    code, again, err = run(capsys, "run", str(study), "--store", str(store), "--workers", "1")
    assert code == 0 and "8 already in" in err and "running 0" in err
    assert again == out
    with ResultStore(store, readonly=True) as results:
        assert results.count() == 8


@needs_sklearn
def test_failed_trials_give_exit_1_and_a_summary_then_rerun(
    study: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("optimizer on fire")

    monkeypatch.setitem(builtin.OPTIMIZERS, "adam", broken)
    store = tmp_path / "tiny.sqlite"
    code, out, err = run(capsys, "run", str(study), "--store", str(store), "--workers", "1")
    assert code == 1
    assert "2 trials failed" in err and "RuntimeError: optimizer on fire" in err
    assert "2 trial(s), e.g. digits-mlp adam" in err
    assert "| adam | - | no configuration finished on every seed |" in out
    assert "| sgdm |" in out  # the study went on
    monkeypatch.undo()
    code, out, err = run(capsys, "run", str(study), "--store", str(store), "--workers", "1")
    assert code == 0 and "running 2" in err  # only the failed trials run again
    with ResultStore(store, readonly=True) as results:
        rows = results.rows()
    assert len(rows) == 8 and {r["status"] for r in rows} == {"done"}
    assert sorted(r["attempts"] for r in rows) == [1] * 6 + [2] * 2


@needs_sklearn
def test_diverged_trials_are_kept_and_counted(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wild.toml"
    path.write_text(
        'tasks = ["digits-mlp"]\nmethods = ["sgdm"]\nseeds = [0, 1]\nepochs = 3\n'
        "[grid.sgdm]\nlr = [0.1, 1e6]\nmomentum = 0.9\n"
    )
    store = str(tmp_path / "w.sqlite")
    code, out, err = run(capsys, "run", str(path), "--store", store, "--workers", "1")
    assert code == 0, err
    assert "4 trials (2 done, 2 diverged, 0 failed)" in err
    assert "| 1 | sgdm | lr=0.1, momentum=0.9 |" in out and "| 2 | 2 | 0 |" in out


def test_bad_study_file_exits_2_without_traceback(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('tasks = ["digits-mlp"]\nmethods = ["sgdm", "sgd"]\nseeds = [0]\n')
    code, out, err = run(capsys, "run", str(path))
    assert code == 2 and out == ""
    assert err.startswith("demon-optim: error: methods[1]: got 'sgd'; allowed: sgdm, ")
    assert "Traceback" not in err
    code, _, err = run(capsys, "run", "no-such-preset")
    assert code == 2 and "study: got 'no-such-preset'; allowed: " in err
    assert "quick" in err and "smoke" in err and "the path of an existing .toml" in err
    path.write_text('tasks = ["digits-mlp"]\nmethods = ["sgdm"]\nseeds = [0]\nepochs = -3\n')
    code, _, err = run(capsys, "run", str(path))
    assert code == 2 and "epochs: got -3; allowed: positive integers" in err


def test_not_a_store_is_refused_and_left_alone(
    tmp_path: pathlib.Path, study: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n")
    before = hashlib.sha256(notes.read_bytes()).hexdigest()
    code, _, err = run(capsys, "run", str(study), "--store", str(notes))
    assert code == 2 and "is not an SQLite database" in err and "Traceback" not in err
    code, _, err = run(capsys, "export", "--store", str(notes), "--out", str(tmp_path / "x.csv"))
    assert code == 2 and "notes.txt" in err
    assert hashlib.sha256(notes.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "tiny.toml"]
    code, _, err = run(capsys, "export", "--store", str(tmp_path / "nope.sqlite"), "--out", "x")
    assert code == 2 and "an existing results store" in err


@needs_sklearn
def test_export_writes_one_row_per_trial(
    study: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "tiny.sqlite"
    assert run(capsys, "run", str(study), "--store", str(store), "--workers", "1")[0] == 0
    out_csv = tmp_path / "tiny.csv"
    code, _, err = run(capsys, "export", "--store", str(store), "--out", str(out_csv))
    assert code == 0 and "wrote 8 trials" in err
    with out_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    assert list(rows[0]) == [
        "trial_id",
        "task",
        "method",
        "seed",
        "epochs",
        "batch_size",
        "lr",
        "momentum",
        "weight_decay",
        "delay",
        "status",
        "val_metric",
        "test_metric",
        "epochs_run",
        "wall_time_s",
        "error",
    ]
    assert {r["method"] for r in rows} == {"sgdm", "demon-sgdm", "adam"}
    assert all(0 <= float(r["test_metric"]) <= 1 for r in rows)


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "demon_optim", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "run" in done.stdout and "export" in done.stdout


# --- the results table: selection on validation, report on test ------------------------------


def table_rows(entries: list[tuple[str, float, int, str, float | None, float | None]]) -> tuple:
    """Specs and store-like rows from (method, lr, seed, status, val, test) tuples."""
    from demon_optim.study.spec import TrialSpec

    specs, rows = [], []
    for method, lr, seed, status, val, test in entries:
        config = (("lr", lr), ("momentum", 0.9), ("weight_decay", 0.0))
        spec = TrialSpec("digits-mlp", method, config, seed, 5, 100)
        specs.append(spec)
        if status != "missing":
            row = {"trial_id": spec.trial_id, "status": status}
            rows.append({**row, "val_metric": val, "test_metric": test})
    return specs, rows


def test_selection_uses_validation_and_ranks_on_test(monkeypatch: pytest.MonkeyPatch) -> None:
    from demon_optim.study import results

    specs, rows = table_rows(
        [
            # sgdm: lr 0.1 has the better validation (selected) but the worse test metric
            ("sgdm", 0.1, 0, "done", 0.8, 0.5),
            ("sgdm", 0.1, 1, "done", 0.8, 0.7),
            ("sgdm", 0.3, 0, "done", 0.7, 0.9),
            ("sgdm", 0.3, 1, "done", 0.7, 0.9),
            # sgdm+lr-cosine: a diverged seed makes lr 0.1 unselectable
            ("sgdm+lr-cosine", 0.1, 0, "done", 0.99, 0.99),
            ("sgdm+lr-cosine", 0.1, 1, "diverged", None, None),
            ("sgdm+lr-cosine", 0.3, 0, "done", 0.5, 0.95),
            ("sgdm+lr-cosine", 0.3, 1, "done", 0.5, 0.95),
            # sgdm+lr-step: same test mean as sgdm -> shares its rank
            ("sgdm+lr-step", 0.1, 0, "done", 0.6, 0.55),
            ("sgdm+lr-step", 0.1, 1, "done", 0.6, 0.65),
            # adam: nothing finished
            ("adam", 0.1, 0, "failed", None, None),
            ("adam", 0.1, 1, "missing", None, None),
        ]
    )
    (table,) = results.summarize(specs, rows)
    by_method = {row.method: row for row in table.rows}
    sgdm = by_method["sgdm"]
    assert sgdm.selected["lr"] == 0.1 and sgdm.test_mean == pytest.approx(0.6)
    assert sgdm.test_std == pytest.approx(0.1414213562) and sgdm.val_mean == pytest.approx(0.8)
    assert sgdm.shown == "lr=0.1, momentum=0.9" and sgdm.configs == 2 and sgdm.ci95 is None
    cosine = by_method["sgdm+lr-cosine"]
    assert cosine.selected["lr"] == 0.3 and cosine.diverged == 1 and cosine.rank == 1
    assert sgdm.rank == by_method["sgdm+lr-step"].rank == 2
    adam = by_method["adam"]
    assert adam.rank is None and adam.selected is None and (adam.failed, adam.missing) == (1, 1)
    assert [row.method for row in table.rows][-1] == "adam"
    markdown = results.to_markdown([table])
    assert "| - | adam | - | no configuration finished on every seed |" in markdown
    assert "| diverged | failed | missing |" in markdown


def test_three_seeds_give_an_interval_and_lower_can_be_better() -> None:
    import dataclasses

    from demon_optim.study import results
    from demon_optim.study.spec import TrialAbout

    # the table reads the metric and its direction from the specs (as a plugin's task has it)
    lower = TrialAbout("perplexity", False, "sgdm", False, "none")
    specs, rows = table_rows(
        [
            ("sgdm", lr, seed, "done", lr * 100 + seed, 10.0 + seed)
            for lr in (0.1, 0.3)
            for seed in range(3)
        ]
        + [("adam", 0.1, seed, "done", 1.0, 20.0 + seed) for seed in range(3)]
    )
    specs = [dataclasses.replace(spec, about=lower) for spec in specs]
    (table,) = results.summarize(specs, rows)
    first, second = table.rows
    assert (first.method, first.rank, second.method, second.rank) == ("sgdm", 1, "adam", 2)
    assert first.selected["lr"] == 0.1  # the lower validation perplexity
    assert first.ci95 == pytest.approx(4.303 * 1.0 / 3**0.5)
    markdown = results.to_markdown([table])
    assert "(perplexity, lower is better)" in markdown and "95 % CI" in markdown
    assert "| 1 | sgdm | lr=0.1, momentum=0.9 | 11.0000 ± 1.0000 | ± 2.4843 | 3 |" in markdown


def test_one_seed_shows_no_spread() -> None:
    from demon_optim.study import results

    specs, rows = table_rows(
        [("sgdm", 0.1, 0, "done", 0.8, 0.75), ("adam", 0.1, 0, "done", 0.7, 0.5)]
    )
    (table,) = results.summarize(specs, rows)
    assert [(row.seeds, row.test_std, row.ci95) for row in table.rows] == [(1, None, None)] * 2
    markdown = results.to_markdown([table])
    assert "±" not in markdown
    assert "| rank | method | selected hyperparameters | test accuracy | seeds |" in markdown
    assert "| 1 | sgdm | lr=0.1, momentum=0.9 | 0.7500 | 1 | 0.8000 |" in markdown
    # a table mixing one-seed and two-seed rows keeps the spread where it was measured
    specs, rows = table_rows(
        [
            ("sgdm", 0.1, 0, "done", 0.8, 0.75),
            ("sgdm", 0.1, 1, "done", 0.8, 0.65),
            ("adam", 0.1, 0, "done", 0.7, 0.5),
            ("adam", 0.1, 1, "failed", None, None),
            ("adam", 0.3, 0, "done", 0.6, 0.4),
        ]
    )
    markdown = results.to_markdown(results.summarize(specs, rows))
    assert "test accuracy (mean ± std)" in markdown and "| 0.7000 ± 0.0707 | 2 |" in markdown


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_bad_workers_exit_2(
    workers: str, study: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "run", str(study), "--workers", workers, "--store", "x.sqlite")
    assert code == 2 and f"workers: got {workers}; allowed: integers >= 1" in err


def test_a_missing_or_odd_study_file_exits_2_in_one_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'name = "caf\xe9"\n')
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b'\xef\xbb\xbftasks = ["digits-mlp"]\nmethods = ["sgdm"]\nseeds = [0]\n')
    newline = tmp_path / "nl.toml"
    newline.write_text('name = "abc\\n"\ntasks = ["digits-mlp"]\nmethods = ["sgdm"]\nseeds = [0]\n')
    cases = [
        (tmp_path / "absent.toml", "or the path of an existing .toml study file"),
        (folder, "(it is a directory)"),
        (latin1, "cannot read"),
        (newline, "name: got 'abc\\n'"),
        (bom, "workers: got 0"),  # the BOM is skipped: the study is read, then --workers
    ]
    for path, fragment in cases:
        code, out, err = run(capsys, "run", str(path), "--workers", "0")
        assert code == 2 and out == "" and "Traceback" not in err
        assert len(err.splitlines()) == 1 and fragment in err, err
    loop = tmp_path / "loop"
    loop.symlink_to(loop.name)
    for data_dir in (str(loop), "~no-such-user-h12/data"):
        code, _, err = run(capsys, "run", str(bom), "--data-dir", data_dir, "--workers", "0")
        assert code == 2 and "workers: got 0" in err and "Traceback" not in err
