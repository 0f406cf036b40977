"""The task registry, the data of each task, its model, loss and metric."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from demon_optim.errors import ConfigError
from demon_optim.study import tasks
from demon_optim.study.datasets import mnist1d as mnist1d_data
from demon_optim.study.datasets._cache import arrays_sha256, load_arrays, save_arrays
from demon_optim.study.models import MLP, ConvNet1D, GRUClassifier, count_parameters
from demon_optim.study.tasks import (
    ClassificationTask,
    DataUnavailableError,
    Split,
    TaskData,
    get_task,
    list_tasks,
    register,
    task_names,
)
from demon_optim.study.tasks import mnist1d as mnist1d_module
from demon_optim.study.tasks import registry as registry_module
from demon_optim.study.tasks.base import stratified_split
from tests.conftest import requires

needs_mnist1d = requires("mnist1d", "(generates the MNIST-1D data)")
needs_sklearn = requires("sklearn", "(ships the digits data)")

# name -> (official training size, val size, test size, input shape of one example)
EXPECTED = {
    "mnist1d-mlp": (4000, 500, 1000, (40,)),
    "mnist1d-cnn": (4000, 500, 1000, (40,)),
    "mnist1d-gru": (4000, 500, 1000, (40,)),
    "digits-mlp": (1347, 270, 450, (64,)),
}
TASK_PARAMS = [
    pytest.param(name, marks=needs_sklearn if name.startswith("digits") else needs_mnist1d)
    for name in EXPECTED
]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the tests' cache files out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEMON_OPTIM_CACHE", str(tmp_path_factory.mktemp("demon-optim-cache")))
        yield


@pytest.fixture(scope="session")
def generated_mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D generated once for the tests that need fresh arrays (about a second)."""
    pytest.importorskip("mnist1d")
    return mnist1d_data.generate_mnist1d()


# --- registry -------------------------------------------------------------------------------


def test_every_task_is_registered() -> None:
    assert set(EXPECTED) <= set(task_names())
    assert task_names() == sorted(task_names())
    assert [task.name for task in list_tasks()] == task_names()
    for name in EXPECTED:
        assert get_task(name).name == name


def test_unknown_task_raises_config_error_listing_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        get_task("mnist")
    message = str(caught.value)
    assert message.startswith("task: got 'mnist'")
    for name in task_names():
        assert name in message
    assert isinstance(caught.value, ValueError)


def test_register_works_as_decorator_and_rejects_name_clashes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry_module, "_TASKS", dict(registry_module._TASKS))

    @register
    class Toy(ClassificationTask):
        name = "toy"
        summary = "a toy"
        batch_size, epochs, data_key, num_classes = 2, 1, "toy", 2

        def _load_data(self, data_dir):
            split = Split(torch.zeros(2, 3), torch.tensor([0, 1]))
            return TaskData(split, split, split)

        def build_model(self) -> torch.nn.Module:
            return torch.nn.Linear(3, 2)

    assert isinstance(get_task("toy"), Toy)
    assert "toy" in task_names()

    class Clash(Toy):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register(Clash)
    with pytest.raises(ConfigError, match=r"a subclass of demon_optim\.study\.Task"):
        register(object())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_task_describes_itself(name: str) -> None:
    task = get_task(name)
    assert task.metric == "accuracy" and task.higher_is_better
    assert task.batch_size > 0 and task.epochs > 0 and task.data_key
    assert task.summary and "\n" not in task.summary


# --- data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_PARAMS)
def test_data_splits_have_the_expected_sizes_and_types(name: str) -> None:
    official_train, n_val, n_test, shape = EXPECTED[name]
    data = get_task(name).load_data()
    assert (len(data.train), len(data.val), len(data.test)) == (
        official_train - n_val,
        n_val,
        n_test,
    )
    for split in (data.train, data.val, data.test):
        assert split.inputs.shape == (len(split), *shape)
        assert split.inputs.dtype == torch.float32 and split.targets.dtype == torch.int64
        assert torch.isfinite(split.inputs).all()
        assert set(split.targets.unique().tolist()) == set(range(10))
    # standardised with training statistics
    assert abs(float(data.train.inputs.mean())) < 1e-4
    assert abs(float(data.train.inputs.std()) - 1) < 1e-4


@pytest.mark.parametrize("name", TASK_PARAMS)
def test_data_is_cached_and_fixed_whatever_the_seed(name: str) -> None:
    task = get_task(name)
    first = task.load_data()
    assert task.load_data() is first  # cached per process
    tasks.clear_data_cache()
    torch.manual_seed(12345)
    np.random.seed(12345)
    again = task.load_data()
    assert again is not first
    for a, b in ((first.train, again.train), (first.val, again.val), (first.test, again.test)):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


@needs_mnist1d
def test_mnist1d_tasks_share_one_data_set() -> None:
    datas = {get_task(name).load_data() for name in ("mnist1d-mlp", "mnist1d-cnn", "mnist1d-gru")}
    assert len({id(d) for d in datas}) == 1


def test_stratified_split_is_exact_disjoint_and_leaves_the_global_rng_alone() -> None:
    targets = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[torch.randperm(100)]
    state = torch.get_rng_state()
    keep, held_out = stratified_split(targets, 10, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(held_out) == 10 and len(keep) == 90
    assert torch.equal(torch.sort(torch.cat([keep, held_out])).values, torch.arange(100))
    assert targets[held_out].bincount().tolist() == [5, 3, 2]
    keep2, held_out2 = stratified_split(targets, 10, seed=3)
    assert torch.equal(keep, keep2) and torch.equal(held_out, held_out2)
    assert not torch.equal(held_out, stratified_split(targets, 10, seed=4)[1])
    with pytest.raises(ValueError):
        stratified_split(targets, 0, seed=0)


# --- MNIST-1D generation and cache ----------------------------------------------------------


@needs_mnist1d
def test_generated_mnist1d_matches_the_recorded_checksum(generated_mnist1d) -> None:
    arrays = generated_mnist1d
    assert arrays["x"].shape == (4000, 40) and arrays["x_test"].shape == (1000, 40)
    assert arrays_sha256(arrays, decimals=4) == mnist1d_data.MNIST1D_SHA256


@needs_mnist1d
def test_generation_restores_the_global_numpy_and_python_rngs() -> None:
    np.random.seed(7)
    random.seed(7)
    expected = (np.random.rand(), random.random())
    np.random.seed(7)
    random.seed(7)
    mnist1d_data.generate_mnist1d()
    assert (np.random.rand(), random.random()) == expected


@needs_mnist1d
def test_mnist1d_cache_round_trip(tmp_path, monkeypatch, generated_mnist1d) -> None:
    monkeypatch.setenv("DEMON_OPTIM_CACHE", str(tmp_path))
    calls = []

    def fake_generate() -> dict[str, np.ndarray]:
        calls.append(1)
        return {key: value.copy() for key, value in generated_mnist1d.items()}

    monkeypatch.setattr(mnist1d_data, "generate_mnist1d", fake_generate)
    path = tmp_path / mnist1d_data.CACHE_FILE

    arrays = mnist1d_data.load_mnist1d_arrays()  # generates and writes the cache
    assert len(calls) == 1 and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    cached = mnist1d_data.load_mnist1d_arrays()  # reads the cache
    assert len(calls) == 1
    for key in arrays:
        assert np.array_equal(arrays[key], cached[key])

    path.write_bytes(path.read_bytes()[:1000])  # a truncated file is regenerated
    mnist1d_data.load_mnist1d_arrays()
    assert len(calls) == 2
    assert load_arrays(path) is not None

    stale = dict(cached, x=cached["x"] + 1)  # a file with other data is regenerated too
    save_arrays(path, stale)
    assert np.array_equal(mnist1d_data.load_mnist1d_arrays()["x"], cached["x"])
    assert len(calls) == 3


@needs_mnist1d
def test_mnist1d_data_dir_holds_the_cache(tmp_path, monkeypatch, generated_mnist1d) -> None:
    monkeypatch.setattr(mnist1d_data, "generate_mnist1d", lambda: generated_mnist1d)
    data = mnist1d_module.load_mnist1d(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / mnist1d_data.CACHE_FILE).is_file()
    assert len(data.val) == 500


@needs_mnist1d
def test_changed_generator_is_a_clear_error(tmp_path, monkeypatch, generated_mnist1d) -> None:
    monkeypatch.setenv("DEMON_OPTIM_CACHE", str(tmp_path))
    changed = dict(generated_mnist1d, x=generated_mnist1d["x"] * 2)
    monkeypatch.setattr(mnist1d_data, "generate_mnist1d", lambda: changed)
    with pytest.raises(DataUnavailableError, match=r"mnist1d==0\.0\.2\.post1"):
        mnist1d_data.load_mnist1d_arrays()
    assert not (tmp_path / mnist1d_data.CACHE_FILE).exists()


def test_missing_mnist1d_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # makes `import mnist1d` fail
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(DataUnavailableError, match=r"pip install mnist1d==0\.0\.2\.post1"):
        mnist1d_data.generate_mnist1d()


# --- models, loss and metric ----------------------------------------------------------------


def test_models_have_the_published_parameter_counts() -> None:
    assert count_parameters(MLP(40, (100, 100), 10, residual=True)) == 15_210
    assert count_parameters(ConvNet1D(length=40, channels=25, num_classes=10)) == 5_210
    assert count_parameters(GRUClassifier(length=40, hidden_size=6, num_classes=10)) == 5_134
    assert count_parameters(MLP(64, (128,), 10)) == 9_610


@pytest.mark.parametrize("name", TASK_PARAMS)
def test_model_trains_one_step_and_evaluates(name: str) -> None:
    task = get_task(name)
    data = task.load_data()
    torch.manual_seed(0)
    model = task.build_model()
    batch_inputs, batch_targets = data.train.inputs[:8], data.train.targets[:8]
    outputs = model(batch_inputs)
    assert outputs.shape == (8, 10)

    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = task.loss(outputs, batch_targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))

    model.train()
    accuracy = task.evaluate(model, data.val, batch_size=64)  # several batches, one partial
    assert 0.0 <= accuracy <= 1.0
    assert model.training  # mode restored
    model.eval()
    assert task.evaluate(model, data.val) == accuracy
    assert not model.training


def test_evaluate_counts_correct_predictions() -> None:
    class Echo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    split = Split(torch.eye(4)[[0, 1, 2, 3, 0]], torch.tensor([0, 1, 2, 0, 1]))
    task = get_task("digits-mlp")
    assert task.evaluate(Echo(), split, batch_size=2) == pytest.approx(3 / 5)
    with torch.enable_grad():
        assert task.loss(torch.zeros(2, 4), torch.tensor([0, 3])).item() == pytest.approx(
            float(np.log(4))
        )


def test_default_detach_state_cuts_every_tensor_of_a_nested_state() -> None:
    """A user's stateful task need not write detach_state: the default detaches the tensors
    in tuples (named ones too), lists and dicts, and keeps everything else as it is."""
    import collections

    Pair = collections.namedtuple("Pair", "h c")
    leaf = torch.ones(2, requires_grad=True)
    grown = leaf * 2
    state = {"lstm": Pair(grown, grown + 1), "layers": [grown, (grown, 3)], "step": 5}
    detached = get_task("mnist1d-mlp").detach_state(state)
    assert isinstance(detached["lstm"], Pair) and isinstance(detached["layers"], list)
    tensors = [*detached["lstm"], detached["layers"][0], detached["layers"][1][0]]
    assert all(t.grad_fn is None and not t.requires_grad for t in tensors)
    assert all(torch.equal(t, grown) or torch.equal(t, grown + 1) for t in tensors)
    assert detached["layers"][1][1] == 3 and detached["step"] == 5
    assert grown.grad_fn is not None  # the original state is untouched
    assert get_task("mnist1d-mlp").detach_state(None) is None
