"""The paper's networks: parameter counts against the literature, shapes, and the pieces
(option-A shortcuts, capsule routing and loss, the ELBO, the LSTM's carried state)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from demon_optim.study.models import count_parameters
from demon_optim.study.models.capsnet import CapsNet, CapsuleOutput, capsule_loss, squash
from demon_optim.study.models.cnn import ConvNet2C2D, ImageMLP
from demon_optim.study.models.layers import PixelStandardize
from demon_optim.study.models.lstm import LSTMLanguageModel, detach_state
from demon_optim.study.models.resnet import CifarResNet
from demon_optim.study.models.vae import VAE, VAEOutput, negative_elbo
from demon_optim.study.models.vgg import VGG
from demon_optim.study.models.wrn import WideResNet


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the study executors use: on a shared 2-core machine several
    threads per process can make small convolutions 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# model -> (exact count here, figure in the literature, tolerance)
COUNTS = {
    "resnet20": (lambda: CifarResNet(20, 10), 269_722, 0.27e6, 0.02),  # He et al.: 0.27M
    "resnet56": (lambda: CifarResNet(56, 10), 853_018, 0.85e6, 0.02),  # He et al.: 0.85M
    "resnet56-200": (lambda: CifarResNet(56, 200), 865_368, 0.85e6 + 64 * 190 + 190, 0.02),
    "vgg16-bn": (lambda: VGG(100), 14_774_436, 15.0e6, 0.03),
    "wrn-16-8": (lambda: WideResNet(16, 8, 10), 10_961_370, 11.0e6, 0.01),  # Zagoruyko: 11.0M
    "capsnet": (lambda: CapsNet(10), 8_215_568, 8.2e6, 0.01),  # Sabour et al.: 8.2M
    "lstm-medium": (lambda: LSTMLanguageModel.zaremba("medium"), 19_780_400, 20e6, 0.02),
    "lstm-small": (lambda: LSTMLanguageModel.zaremba("small"), 4_653_200, 4.65e6, 0.01),
    "vae": (lambda: VAE(), 1_289_788, None, 0),
    "2c2d": (lambda: ConvNet2C2D(), 3_274_634, 3.27e6, 0.01),  # DeepOBS fmnist_2c2d
    "mlp": (lambda: ImageMLP(), 1_336_610, None, 0),  # DeepOBS fmnist_mlp
}


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts_match_the_literature(name: str) -> None:
    build, exact, published, tolerance = COUNTS[name]
    count = count_parameters(build())
    assert count == exact
    if published is not None:
        assert abs(count - published) / published <= tolerance


def test_resnet_shortcuts_and_depths() -> None:
    assert count_parameters(CifarResNet(20, shortcut="B")) == 272_474  # + 1x1 projections
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="shortcut"):
        CifarResNet(20, shortcut="C")
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(17)


@pytest.mark.parametrize(
    ("model", "shape", "classes"),
    [
        (lambda: CifarResNet(20, 10), (2, 3, 32, 32), 10),
        (lambda: CifarResNet(56, 200), (2, 3, 64, 64), 200),
        (lambda: VGG(100), (2, 3, 32, 32), 100),
        (lambda: WideResNet(16, 8, 10), (2, 3, 32, 32), 10),
        (lambda: ConvNet2C2D(), (2, 1, 28, 28), 10),
        (lambda: ImageMLP(), (2, 1, 28, 28), 10),
    ],
)
def test_classifier_shapes_on_uint8_and_float_images(model, shape, classes) -> None:
    torch.manual_seed(0)
    net = model().eval()
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8)
    with torch.no_grad():
        from_bytes = net(pixels)
        from_floats = net(pixels.float() / 255)
    assert from_bytes.shape == (shape[0], classes)
    torch.testing.assert_close(from_bytes, from_floats)


def test_pixel_standardize() -> None:
    layer = PixelStandardize((0.5, 0.25), (0.5, 0.25))
    x = torch.tensor([[[[255]], [[0]]]], dtype=torch.uint8)
    assert layer(x).flatten().tolist() == [1.0, -1.0]
    assert count_parameters(layer) == 0


# --- CapsNet --------------------------------------------------------------------------------


def test_squash_keeps_direction_and_bounds_length() -> None:
    s = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.03, 0.04]])
    v = squash(s)
    norms = v.norm(dim=-1)
    assert norms[0] == pytest.approx(25 / 26) and norms[1] == 0
    assert norms[2] == pytest.approx(0.0025 / 1.0025, rel=1e-3)
    torch.testing.assert_close(v[0] / norms[0], s[0] / 5)


def test_capsnet_forward_and_all_class_decoding_equals_masking() -> None:
    torch.manual_seed(0)
    model = CapsNet()
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    out = model(images)
    assert out.lengths.shape == (3, 10) and out.reconstructions.shape == (3, 10, 784)
    assert (out.lengths > 0).all() and (out.lengths < 1).all()
    torch.testing.assert_close(out.images, images.flatten(1).float() / 255)
    v = model.capsules(images.float() / 255)
    for k in range(10):  # masked decoding, the paper's way
        mask = torch.zeros(3, 10, 1)
        mask[:, k] = 1
        h = F.relu(model.decoder1((v * mask).flatten(1)))
        reference = torch.sigmoid(model.decoder3(F.relu(model.decoder2(h))))
        torch.testing.assert_close(out.reconstructions[:, k], reference, atol=1e-5, rtol=1e-4)


def test_capsule_loss_by_hand() -> None:
    lengths = torch.tensor([[0.95, 0.3, 0.05], [0.5, 0.05, 0.2]])
    recon = torch.zeros(2, 3, 4)
    recon[0, 0] = 1.0  # the true class's reconstruction of image 0 is perfect
    images = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.5, 0.0, 0.0, 0.0]])
    loss = capsule_loss(CapsuleOutput(lengths, recon, images), torch.tensor([0, 2]))
    # image 0: present 0.95 >= 0.9 -> 0; absent 0.3 -> 0.5 * 0.2^2; absent 0.05 -> 0
    # image 1: present 0.2 -> 0.7^2; absent 0.5 -> 0.5 * 0.4^2; absent 0.05 -> 0; recon 0.25
    expected = (0.5 * 0.04 + 0.49 + 0.5 * 0.16 + 0.0005 * 0.25) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


# --- VAE ------------------------------------------------------------------------------------


def test_vae_negative_elbo_by_hand() -> None:
    logits = torch.zeros(1, 4)  # p = 1/2 for every pixel: BCE = log 2 each
    out = VAEOutput(logits, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4)]]))
    images = torch.tensor([[0, 255, 0, 255]], dtype=torch.uint8)
    # KL = -1/2 [(1 + 0 - 1 - 1) + (1 + log 4 - 0 - 4)]
    kl = -0.5 * ((1 + 0 - 1 - 1) + (1 + math.log(4) - 4))
    assert negative_elbo(out, images).item() == pytest.approx(4 * math.log(2) + kl, rel=1e-6)


def test_vae_shapes_and_sampling() -> None:
    torch.manual_seed(0)
    model = VAE()
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    out = model(x)
    assert out.logits.shape == (5, 784) and out.mean.shape == (5, 2) and out.logvar.shape == (5, 2)
    torch.manual_seed(1)
    a = model(x).logits
    torch.manual_seed(1)
    assert torch.equal(a, model(x).logits)  # the only randomness is torch's global RNG
    assert (negative_elbo(out, x) > 0).all()


# --- LSTM -----------------------------------------------------------------------------------


def test_lstm_carries_state_across_windows() -> None:
    torch.manual_seed(0)
    model = LSTMLanguageModel(vocab_size=30, hidden=8, layers=2, dropout=0.5, init_scale=0.1)
    model.eval()
    tokens = torch.randint(0, 30, (12, 3))
    whole, _ = model(tokens)
    first, state = model(tokens[:5])
    second, _ = model(tokens[5:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second]), whole)
    assert whole.shape == (12, 3, 30)
    h, c = model.init_state(4)
    assert h.shape == c.shape == (2, 4, 8) and not h.any()
    assert all(p.abs().max() <= 0.1 for p in model.parameters())  # Zaremba's uniform init


def test_lstm_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = LSTMLanguageModel.zaremba("small", vocab_size=50)
    tokens = torch.randint(0, 50, (4, 2))
    model.eval()
    assert torch.equal(model(tokens)[0], model(tokens)[0])
    medium = LSTMLanguageModel(50, 16, 2, 0.5, 0.05).train()
    assert not torch.equal(medium(tokens)[0], medium(tokens)[0])
