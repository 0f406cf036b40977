"""One trial: determinism, per-epoch records, divergence and failure as results."""

from __future__ import annotations

import math

import pytest
import torch

from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import get_task
from demon_optim.study.trial import run_trial
from tests.conftest import requires

pytestmark = requires("sklearn", "(ships the digits data)")


@pytest.fixture(autouse=True)
def one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spec(method: str = "demon-sgdm", lr: float = 0.1, epochs: int = 3, seed: int = 0) -> TrialSpec:
    config = {"lr": lr, "momentum": 0.9, "weight_decay": 0.0}
    if method.startswith("demon"):
        config["delay"] = 0.0
    return TrialSpec("digits-mlp", method, tuple(config.items()), seed, epochs, 100)


def run(trial: TrialSpec):
    task = get_task(trial.task)
    return run_trial(trial, task.load_data(), task)


def without_timing(history: tuple[dict, ...]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "elapsed_s"} for record in history]


@pytest.mark.parametrize("method", ["demon-sgdm", "adam+lr-cosine"])
def test_same_spec_same_numbers(method: str) -> None:
    lr = 0.1 if "sgdm" in method else 1e-3
    first, second = run(spec(method, lr)), run(spec(method, lr))
    assert first.status == second.status == "done"
    assert (first.val_metric, first.test_metric) == (second.val_metric, second.test_metric)
    assert without_timing(first.history) == without_timing(second.history)
    other_seed = run(spec(method, lr, seed=1))
    assert without_timing(other_seed.history) != without_timing(first.history)


def test_record_contents() -> None:
    result = run(spec(epochs=3))
    assert result.status == "done" and result.error is None and result.traceback is None
    assert len(result.history) == 3
    assert set(result.history[0]) == {
        "epoch",
        "train_loss",
        "val_metric",
        "lr",
        "momentum",
        "elapsed_s",
    }
    assert result.val_metric == result.history[-1]["val_metric"]
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]
    momenta = [r["momentum"] for r in result.history]
    assert momenta == sorted(momenta, reverse=True) and momenta[-1] < 0.9  # Demon decays
    assert set(result.versions) == {"python", "torch", "numpy", "demon_optim"}
    assert result.wall_time_s > 0 and result.started_at > 0
    assert torch.are_deterministic_algorithms_enabled() is False  # restored after the trial


def test_huge_learning_rate_diverges_and_stops_early() -> None:
    result = run(spec("sgdm", lr=1e6, epochs=20))
    assert result.status == "diverged"
    assert result.val_metric is None and result.test_metric is None
    assert "non-finite training loss" in result.error
    assert len(result.history) < 20
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_exception_becomes_a_failed_result(monkeypatch: pytest.MonkeyPatch) -> None:
    task = get_task("digits-mlp")

    def broken_model() -> torch.nn.Module:
        raise RuntimeError("model exploded")

    monkeypatch.setattr(task, "build_model", broken_model)
    result = run(spec())
    assert result.status == "failed"
    assert result.error == "RuntimeError: model exploded"
    assert "broken_model" in result.traceback
    assert result.history == ()
