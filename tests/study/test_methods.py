"""The methods registry: every method trains, and applies the schedules it claims.

Each method runs 4 epochs of digits-mlp; the learning rate and momentum the trial records
at each epoch's last step are compared with the pure schedule math of
``demon_optim.schedules`` (docs/optimizers.md, "The other schedule shapes"), which also
checks T = epochs * ceil(n / batch).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from demon_optim import schedules
from demon_optim.errors import ConfigError
from demon_optim.study.methods import Method, baselines, get_method, list_methods, method_names
from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import get_task
from demon_optim.study.trial import run_trial
from tests.conftest import requires

needs_sklearn = requires("sklearn", "(ships the digits data)")

EPOCHS, BATCH = 4, 100


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """Trials run with one torch thread, as in the executors (several threads on a busy
    2-core machine make each step orders of magnitude slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PAPER_SCHEDULES = (
    "",
    "+lr-step",
    "+lr-cosine",
    "+lr-linear",
    "+lr-warmup-linear",
    "+lr-exponential",
    "+lr-plateau",
    "+onecycle",
    "+mom-onecycle",
    "+mom-cosine",
    "+mom-linear",
    "+mom-exponential",
)

BASELINES = baselines.__name__ + "."

# The paper's other momentum methods: tested in test_reference_methods.py; today's
# baselines (Muon, Lion, Schedule-Free AdamW): in test_baselines.py.
REFERENCE_OPTIMIZER_METHODS = (
    "qhm+lr-step",
    "aggmo+lr-step",
    "qhadam",
    "yellowfin",
    *(name for name in method_names() if get_method(name).source.startswith(BASELINES)),
)


def test_registry_covers_the_paper_comparison() -> None:
    names = set(method_names())
    for family in ("sgdm", "adam"):
        assert {family + suffix for suffix in PAPER_SCHEDULES} <= names
        assert f"demon-{family}" in names
    assert {"amsgrad", "adamw"} <= names
    assert get_method("amsgrad").reference and get_method("adamw").reference
    assert not get_method("demon-adam").reference


def test_default_grids_follow_the_protocol() -> None:
    for method in list_methods():
        grid = method.default_grid()
        lrs = grid["lr"]
        assert all(b / a == pytest.approx(3, rel=0.12) for a, b in itertools.pairwise(lrs))
        if "momentum" in grid and method.name not in REFERENCE_OPTIMIZER_METHODS:
            assert grid["momentum"] == (0.9, 0.95, 0.97)
        assert "weight_decay" in grid
    assert get_method("sgdm").default_grid()["lr"] == (0.01, 0.03, 0.1, 0.3)
    assert get_method("adam").default_grid()["lr"] == (1e-4, 3e-4, 1e-3, 3e-3)
    adam_lrs = get_method("adam").default_grid()["lr"]
    demon_lrs = get_method("demon-adam").default_grid()["lr"]
    assert demon_lrs == pytest.approx([lr * 0.1 for lr in adam_lrs])
    assert get_method("sgdm+onecycle").default_grid()["momentum_range"] == (
        (0.95, 0.85),
        (0.9, 0.85),
        (0.95, 0.9),
    )


def test_unknown_method_and_hyperparameter_errors() -> None:
    with pytest.raises(ConfigError, match=r"method: got 'sgd'; allowed: sgdm, "):
        get_method("sgd")
    method = get_method("demon-sgdm")
    with pytest.raises(ConfigError) as caught:
        method.check_grid({"beta": [0.9]}, "grid.demon-sgdm")
    assert str(caught.value) == (
        "grid.demon-sgdm.beta: got 'beta'; allowed: lr, momentum, weight_decay, delay"
    )
    with pytest.raises(ConfigError, match=r"hyperparameters.eps: got 'eps'"):
        method.check_config({"lr": 0.1, "momentum": 0.9, "weight_decay": 0, "delay": 0, "eps": 1})
    with pytest.raises(ConfigError, match="missing delay"):
        method.check_config({"lr": 0.1, "momentum": 0.9, "weight_decay": 0})
    with pytest.raises(ConfigError, match=r"grid.x.delay: got 1.5; allowed: numbers in \[0, 1\)"):
        method.check_grid({"delay": 1.5}, "grid.x")
    with pytest.raises(ConfigError, match=r"milestones\[0\]: got \[0.75, 0.5\]"):
        get_method("adam+lr-step").check_grid({"milestones": [[0.75, 0.5]]}, "grid.adam+lr-step")


def _first_config(method: Method) -> dict:
    config = method.grid()[0]
    config["lr"] = max(method.default_grid()["lr"])  # learns something within 4 epochs
    if "momentum" in config:
        config["momentum"] = 0.9
    return config


def _shapes(method: Method) -> tuple[str, str]:
    """(lr schedule, momentum schedule) of a built-in method, from its schedule name."""
    name = method.schedule
    if name == "onecycle":
        return "onecycle", "onecycle (with lr)"
    if name == "demon":
        return "constant", "demon"
    if name.startswith("lr-"):
        return name[3:], "constant"
    if name.startswith("mom-"):
        return "constant", name[4:]
    assert name == "none" or method.reference, name  # amsgrad, adamw: constant lr and momentum
    return "constant", "constant"


def _warmup_linear(k: int, total: int, lr0: float, warmup: float) -> float:
    warm = round(warmup * total)
    return lr0 * (k / warm if k < warm else (total - k) / (total - warm))


def _expected(method: Method, config: dict, k: int, total: int, epoch: int) -> tuple:
    """(lr, momentum) the documented schedule shapes give at step k of epoch `epoch`."""
    lr_schedule, momentum_schedule = _shapes(method)
    lr0 = config["lr"]
    top, low = config.get("momentum_range", (config.get("momentum"), None))
    lr = {
        "constant": lr0,
        "cosine": schedules.cosine(k, total, lr0),
        "linear": schedules.linear(k, total, lr0),
        "exponential": lr0 * math.exp(-5.0 / EPOCHS) ** (epoch - 1),
        "step": lr0
        * 0.1 ** sum(epoch - 1 >= round(f * EPOCHS) for f in config.get("milestones", ())),
        "onecycle": schedules.one_cycle_lr(k, total, lr0),
        "warmup-linear": _warmup_linear(k, total, lr0, config.get("warmup", 0.0)),
        "plateau": None,  # depends on the validation curve
    }[lr_schedule]
    momentum = {
        "constant": top,
        "demon": schedules.demon(k, total, top) if top is not None else None,
        "cosine": schedules.cosine(k, total, top) if top is not None else None,
        "linear": schedules.linear(k, total, top) if top is not None else None,
        "exponential": schedules.exponential(k, total, top) if top is not None else None,
        "onecycle": schedules.one_cycle_momentum(k, total, top, low) if low else None,
        "onecycle (with lr)": schedules.one_cycle_momentum(k, total, top, low) if low else None,
    }[momentum_schedule]
    return lr, momentum


@needs_sklearn
@pytest.mark.parametrize(
    "name", [name for name in method_names() if name not in REFERENCE_OPTIMIZER_METHODS]
)
def test_every_method_trains_and_applies_its_schedules(name: str) -> None:
    method = get_method(name)
    config = _first_config(method)
    spec = TrialSpec("digits-mlp", name, tuple(config.items()), 0, EPOCHS, BATCH)
    task = get_task("digits-mlp")
    data = task.load_data()
    result = run_trial(spec, data, task)
    assert result.status == "done", result.traceback
    assert 0.0 <= result.test_metric <= 1.0 and result.val_metric > 0.5
    steps = math.ceil(len(data.train) / BATCH)
    total = EPOCHS * steps
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    for record in result.history:
        k = record["epoch"] * steps - 1  # the epoch's last step
        lr, momentum = _expected(method, config, k, total, record["epoch"])
        if lr is None:
            assert 0 < record["lr"] <= config["lr"]
        else:
            assert record["lr"] == pytest.approx(lr, rel=1e-9, abs=1e-15), record
        assert record["momentum"] == pytest.approx(momentum, rel=1e-9, abs=1e-15), record
        assert math.isfinite(record["train_loss"])


def test_warmup_linear_is_berts_schedule() -> None:
    """adam+lr-warmup-linear applies k/W for k < W, then (T-k)/(T-W), times lr (the
    Hugging Face get_linear_schedule_with_warmup), stepped after every optimizer step."""
    from demon_optim.study.methods import Budget

    param = torch.nn.Parameter(torch.zeros(3))
    method = get_method("adam+lr-warmup-linear")
    config = method.check_config({"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "warmup": 0.2})
    training = method.build([param], config, Budget(epochs=2, steps_per_epoch=25))
    total, warm = 50, 10
    applied = []
    for _ in range(total):
        applied.append(training.optimizer.param_groups[0]["lr"])
        param.grad = torch.ones(3)
        training.optimizer.step()
        for hook in training.after_step:
            hook()
    expected = [k / warm if k < warm else (total - k) / (total - warm) for k in range(total)]
    assert applied == pytest.approx([1e-3 * e for e in expected], rel=1e-12, abs=1e-18)
    assert get_method("sgdm+lr-warmup-linear").schedule == "lr-warmup-linear"
