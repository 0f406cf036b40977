"""The public door for a user's own task: ``demon_optim.study.register_task``."""

from __future__ import annotations

import pathlib
import sys
import types
from collections.abc import Iterator

import pytest
import torch

from demon_optim.errors import ConfigError
from demon_optim.study import (
    ClassificationTask,
    Split,
    Task,
    TaskData,
    get_task,
    register_task,
)
from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import registry
from demon_optim.study.trial import run_trial


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Each test's tasks leave the registry as it was."""
    before = dict(registry._TASKS)
    yield
    registry._TASKS.clear()
    registry._TASKS.update(before)


def _two_blobs() -> TaskData:
    """Two Gaussian blobs in 4-d, 120/40/40 examples (a fixture made here, not a data set)."""
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        targets = torch.arange(n) % 2
        inputs = torch.randn(n, 4, generator=generator) + 2.0 * targets[:, None].float()
        return Split(inputs, targets)

    return TaskData(split(120), split(40), split(40))


def _blobs_class(name: str = "user-blobs") -> type[ClassificationTask]:
    class Blobs(ClassificationTask):
        summary = "two Gaussian blobs, linear model; accuracy in [0, 1]"
        data_key = "user-blobs"
        num_classes = 2
        batch_size = 20
        epochs = 3

        def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
            return _two_blobs()

        def build_model(self) -> torch.nn.Module:
            return torch.nn.Linear(4, 2)

    Blobs.name = name
    return Blobs


def test_a_registered_task_trains_through_the_protocol() -> None:
    cls = register_task(_blobs_class())
    assert isinstance(get_task("user-blobs"), cls)
    spec = TrialSpec(
        task="user-blobs",
        method="demon-sgdm",
        hyperparameters=(("lr", 0.1), ("momentum", 0.9), ("weight_decay", 0.0), ("delay", 0.0)),
        seed=0,
        epochs=3,
        batch_size=20,
    )
    task = get_task("user-blobs")
    result = run_trial(spec, task.load_data(), task)
    assert result.status == "done", result.error
    assert len(result.history) == 3 and result.test_metric is not None
    assert result.test_metric > 0.8  # the blobs are two standard deviations apart


def test_the_same_class_twice_is_fine_also_from_a_fresh_import() -> None:
    cls = _blobs_class()
    assert register_task(cls) is cls
    assert register_task(cls) is cls
    again = _blobs_class()  # a plugin file imported twice makes a new class object
    assert again is not cls
    register_task(again)
    assert isinstance(get_task("user-blobs"), again)


def test_another_class_under_a_taken_name_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as caught:
        register_task(_blobs_class("digits-mlp"))
    message = str(caught.value)
    assert message.startswith("task name 'digits-mlp': already registered by ")
    assert "so test_register_task._blobs_class.<locals>.Blobs cannot register it" in message
    assert "already registered by demon_optim.study.tasks.digits.DigitsMLP" in message
    assert type(get_task("digits-mlp")).__name__ == "DigitsMLP"


def test_a_missing_class_attribute_is_named() -> None:
    cls = _blobs_class()
    del cls.data_key
    with pytest.raises(ConfigError, match=r"got 'no data_key'; allowed: a Task subclass"):
        register_task(cls)
    assert "user-blobs" not in registry._TASKS


def test_an_unimplemented_hook_is_named() -> None:
    class NoModel(ClassificationTask):
        name, summary, data_key, num_classes, batch_size, epochs = ("x", "x", "x", 2, 1, 1)

        def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
            return _two_blobs()

    with pytest.raises(ConfigError, match="build_model not implemented"):
        register_task(NoModel)


@pytest.mark.parametrize(
    ("attribute", "value", "allowed"),
    [
        ("name", "", "a non-empty string"),
        ("name", "two\nlines", "without line breaks"),
        ("higher_is_better", 1, "True or False"),
        ("batch_size", 0, "integers >= 1"),
        ("epochs", 2.5, "integers >= 1"),
    ],
)
def test_bad_class_attributes_are_named(attribute: str, value: object, allowed: str) -> None:
    cls = _blobs_class()
    setattr(cls, attribute, value)
    with pytest.raises(ConfigError, match=f"{attribute}: got .*; allowed: .*{allowed}"):
        register_task(cls)


def test_something_that_is_not_a_task_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"allowed: a subclass of demon_optim\.study\.Task"):
        register_task(types.SimpleNamespace)  # type: ignore[type-var]


def test_the_public_names_are_the_registry_s() -> None:
    from demon_optim.study import tasks

    assert register_task is tasks.register_task is tasks.register
    assert Task is tasks.Task and Split is tasks.Split
    assert "demon_optim.study.tasks" in sys.modules
