"""Validation targets: every built-in task's default, a study's ``[targets]`` overriding it
(recorded with each trial, outside its id), bad entries refused naming the field, and a
study's report reading its own targets."""

from __future__ import annotations

import pathlib
from typing import ClassVar

import pytest
import torch

from demon_optim.errors import ConfigError
from demon_optim.study.spec import TrialSpec, expand, parse_study
from demon_optim.study.tasks import ClassificationTask, Split, TaskData, get_task, task_names
from demon_optim.study.tasks.registry import register_task
from tests.conftest import requires

NO_TARGET = {"cifar10-ncsn", "fmnist-ncsn", "mnist10k-ncsn", "glue-wnli"}  # docs/study.md


def study(**extra: object) -> dict:
    return {
        "tasks": ["mnist1d-mlp", "mnist1d-cnn"],
        "methods": ["sgdm"],
        "seeds": [0],
        "epochs": 2,
        "grid": {"sgdm": {"lr": 0.1, "momentum": 0.9}},
        **extra,
    }


def test_every_built_in_task_has_its_documented_default() -> None:
    docs = (pathlib.Path(__file__).parents[2] / "docs" / "study.md").read_text()
    for name in task_names():
        task = get_task(name)
        if name in NO_TARGET:
            assert task.target is None, name
            assert f"| `{name}` | {task.metric} | none |" in docs, name
            continue
        assert isinstance(task.target, float), name
        # the default is in the table of docs/study.md, as written there
        assert f"| `{name}` | {task.metric} | {task.target:g} |" in docs, name
    assert get_task("mnist1d-cnn").target == 0.9  # the example


def test_a_study_target_replaces_the_default_and_is_recorded_outside_the_id() -> None:
    default = expand(parse_study(study()))
    given = expand(parse_study(study(targets={"mnist1d-cnn": 0.95})))
    assert [s.trial_id for s in default] == [s.trial_id for s in given]  # same trials
    targets = {s.task: s.about.target for s in given if s.about is not None}
    assert targets == {"mnist1d-mlp": 0.6, "mnist1d-cnn": 0.95}
    assert parse_study(study(targets={"mnist1d-cnn": 1})).targets == {"mnist1d-cnn": 1.0}
    # the store keeps it in the spec's "about"; a spec read back has it
    cnn = next(s for s in given if s.task == "mnist1d-cnn")
    record = cnn.to_json()
    assert record["about"]["target"] == 0.95
    assert TrialSpec.from_json(record).about == cnn.about


def test_a_task_without_a_target_records_none_and_old_rows_read_alike() -> None:
    spec = expand(parse_study({**study(), "tasks": ["fmnist-ncsn"]}))[0]
    assert spec.about is not None and spec.about.target is None
    assert "target" not in spec.about.to_json()  # as rows written before targets existed
    assert TrialSpec.from_json(spec.to_json()).about == spec.about


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (0.9, "targets: got 0.9; allowed: a table of task = validation target"),
        (
            {"mnist1d-gru": 0.9},
            "targets: got 'mnist1d-gru'; allowed: mnist1d-mlp (the study's tasks), "
            "mnist1d-cnn (the study's tasks)",
        ),
        (
            {"mnist1d-cnn": "high"},
            "targets.mnist1d-cnn: got 'high'; allowed: a finite number, the validation "
            "accuracy to reach, in [0, 1] (0.9 for 90 %)",
        ),
        ({"mnist1d-cnn": 90}, "targets.mnist1d-cnn: got 90; allowed: a finite number"),
        ({"mnist1d-cnn": True}, "targets.mnist1d-cnn: got True; allowed: a finite number"),
        ({"mnist1d-mlp": float("inf")}, "targets.mnist1d-mlp: got inf; allowed: a finite"),
        ({"mnist1d-mlp": float("nan")}, "targets.mnist1d-mlp: got nan; allowed: a finite"),
    ],
)
def test_a_bad_target_names_the_field(targets: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_study(study(targets=targets))
    assert str(error.value).startswith(message)


def test_targets_from_a_toml_file(tmp_path: pathlib.Path) -> None:
    from demon_optim.study.spec import load_study

    path = tmp_path / "s.toml"
    path.write_text(
        'tasks = ["mnist1d-cnn", "fmnist-vae"]\nmethods = ["adam"]\nseeds = [0]\n'
        "[targets]\nmnist1d-cnn = 0.92\nfmnist-vae = 255.5\n"  # lower is better: any number
    )
    assert load_study(path).targets == {"mnist1d-cnn": 0.92, "fmnist-vae": 255.5}
    path.write_text(
        'tasks = ["mnist1d-cnn"]\nmethods = ["adam"]\nseeds = [0]\n[targets]\nmnist1d-cnn = "90%"\n'
    )
    with pytest.raises(ConfigError, match=r"^targets\.mnist1d-cnn: got '90%'"):
        load_study(path)


def test_a_task_class_with_a_bad_target_is_refused() -> None:
    class Bad(ClassificationTask):
        name = "bad-target-task"
        summary = "a task whose target is text"
        batch_size = 10
        epochs = 1
        data_key = "bad-target-task"
        num_classes = 2
        target: ClassVar = "0.9"

        def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
            split = Split(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
            return TaskData(split, split, split)

        def build_model(self) -> torch.nn.Module:
            return torch.nn.Linear(2, 2)

    with pytest.raises(ConfigError, match=r"Bad: target: got '0.9'; allowed: None or a finite"):
        register_task(Bad)
    assert "bad-target-task" not in task_names()


@requires("sklearn", "(ships the digits data)")
@requires("matplotlib", "(draws the report's figures)")
def test_a_studys_report_uses_its_own_targets(tmp_path: pathlib.Path) -> None:
    from demon_optim.study.runner import run

    torch.set_num_threads(1)
    spec = {
        "tasks": ["digits-mlp"],
        "methods": ["sgdm"],
        "seeds": [0],
        "epochs": 2,
        "grid": {"sgdm": {"lr": 0.1, "momentum": 0.9}},
    }
    first = run({**spec, "name": "a"}, store=tmp_path / "s.sqlite", workers=1)
    assert first.report is not None and first.exit_code == 0
    markdown = (first.report.parent / "report.md").read_text()
    assert "&gt;= 0.95 (recorded with the trials)" in markdown  # digits-mlp's default
    # the same trial in a second study with another target: nothing runs again, and the
    # second study's report reads its own target, not the one the trial recorded
    second = run(
        {**spec, "name": "b", "targets": {"digits-mlp": 0.5}},
        store=tmp_path / "s.sqlite",
        workers=1,
    )
    assert second.progress is not None
    assert (second.progress.skipped, second.progress.written) == (1, 0)
    markdown = (second.report.parent / "report.md").read_text()  # type: ignore[union-attr]
    assert "digits-mlp · 2 epochs: validation accuracy &gt;= 0.5 (given to the report)" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| sgdm |"))
    assert "| 1/1 | 1 |" in row  # 0.5 is reached after the first epoch
