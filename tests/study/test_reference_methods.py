"""The reference optimizers in the study registry: QHM, AggMo (SGDM family, LR step), QHAdam
and YellowFin (Adam family). Each trains a short digits-mlp trial and reports the learning
rate and momentum it applied; all stay outside the ranking.
"""

from __future__ import annotations

import math

import pytest
import torch

from demon_optim import QHM, AggMo, QHAdam, YellowFin
from demon_optim.errors import ConfigError
from demon_optim.report.naming import is_reference, schedule_name
from demon_optim.study.methods import Budget, get_method, method_names
from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import get_task
from demon_optim.study.trial import run_trial
from tests.conftest import requires

needs_sklearn = requires("sklearn", "(ships the digits data)")

EPOCHS, BATCH = 2, 100
REFERENCE = {
    "qhm+lr-step": ("sgdm", QHM),
    "aggmo+lr-step": ("sgdm", AggMo),
    "qhadam": ("adam", QHAdam),
    "yellowfin": ("adam", YellowFin),
}


@pytest.fixture(autouse=True)
def one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registered_as_references_with_the_paper_defaults() -> None:
    names = method_names()
    for name, (family, optimizer) in REFERENCE.items():
        method = get_method(name)
        assert name in names and method.reference and method.family == family
        assert is_reference(name) and schedule_name(name) == name
        training = method.build(
            torch.nn.Linear(2, 1).parameters(), method.grid()[0], Budget(EPOCHS, 10)
        )
        assert isinstance(training.optimizer, optimizer)
    assert get_method("qhm+lr-step").default_grid() == {
        "lr": (0.1, 0.3, 1.0, 3.0),
        "momentum": (0.999,),
        "nu": (0.7,),
        "weight_decay": (0.0,),
        "milestones": ((0.5, 0.75),),
    }
    assert get_method("aggmo+lr-step").default_grid() == {
        "lr": (0.003, 0.01, 0.03, 0.1),
        "betas": ((0.0, 0.9, 0.99),),
        "weight_decay": (0.0,),
        "milestones": ((0.5, 0.75),),
    }
    assert get_method("qhadam").default_grid() == {
        "lr": get_method("adam").default_grid()["lr"],
        "momentum": (0.995,),
        "nu": (0.7,),
        "weight_decay": (0.0,),
    }
    # YellowFin's options at its defaults; those at their ``legacy`` value (smooth 1,
    # sparsity_debias 0) leave a configuration, so old trial ids stand (tests/test_yellowfin.py)
    assert get_method("yellowfin").default_grid() == {
        "lr": (1.0,),
        "weight_decay": (0.0,),
        "initial_lr": (1.0,),
        "smooth": (1.0,),
        "slow_start": (1.0,),
        "adapt_clip": (1.0,),
        "sparsity_debias": (0.0,),
        "restart_at_zero_momentum": (1.0,),
    }
    assert "smooth" not in get_method("yellowfin").grid()[0]


def test_grid_overrides() -> None:
    aggmo = get_method("aggmo+lr-step")
    assert aggmo.check_grid({"betas": [0, 0.9]}, "grid.aggmo") == {"betas": ((0.0, 0.9),)}
    assert aggmo.check_grid({"betas": [[0, 0.9], [0, 0.5, 0.9]]}, "grid.aggmo") == {
        "betas": ((0.0, 0.9), (0.0, 0.5, 0.9))
    }
    with pytest.raises(ConfigError, match=r"grid.aggmo.betas: got 1.0"):
        aggmo.check_grid({"betas": [0, 1.0]}, "grid.aggmo")
    qhm = get_method("qhm+lr-step")
    assert qhm.check_grid({"nu": [0, 1]}, "grid.qhm") == {"nu": (0.0, 1.0)}
    with pytest.raises(ConfigError, match=r"grid.qhm.nu: got 1.5; allowed: numbers in"):
        qhm.check_grid({"nu": 1.5}, "grid.qhm")


@needs_sklearn
@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_method_trains_and_reports_what_it_applied(name: str) -> None:
    method = get_method(name)
    config = method.grid()[0]
    config["lr"] = {"qhm+lr-step": 1.0, "aggmo+lr-step": 0.03, "qhadam": 3e-3}.get(
        name, config["lr"]
    )
    spec = TrialSpec("digits-mlp", name, tuple(config.items()), 0, EPOCHS, BATCH)
    task = get_task("digits-mlp")
    result = run_trial(spec, task.load_data(), task)
    assert result.status == "done", result.traceback
    assert 0.0 <= result.test_metric <= 1.0
    assert [r["epoch"] for r in result.history] == [1, 2]
    for record in result.history:
        assert math.isfinite(record["lr"]) and record["lr"] > 0, record
        assert math.isfinite(record["momentum"]) and 0 <= record["momentum"] < 1, record
        assert math.isfinite(record["train_loss"])
    lrs = [r["lr"] for r in result.history]
    momenta = [r["momentum"] for r in result.history]
    if name == "yellowfin":  # the tuner's lr (the factor times alpha) and momentum
        assert lrs[0] != lrs[1] or momenta[0] != momenta[1]
    else:  # LR step: milestones round(0.5 * 2) = 1 and round(0.75 * 2) = 2
        expected = [config["lr"], config["lr"] * 0.1] if "milestones" in config else lrs[:1] * 2
        assert lrs == pytest.approx(expected, rel=1e-12)
        top = max(config["betas"]) if "betas" in config else config["momentum"]
        assert momenta == [top, top]


def test_cli_lists_them_as_references(capsys: pytest.CaptureFixture[str]) -> None:
    from demon_optim.cli import main

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in REFERENCE:
        line = next(line for line in lines if line.split()[0] == name)
        assert line.endswith("(reference, outside the ranking)"), line
    assert "betas=[0/0.9/0.99]" in "\n".join(lines)
