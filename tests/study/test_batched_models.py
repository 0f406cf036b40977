"""Batched models (study/batched/models.py): M models as one, against the M models alone."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from demon_optim.errors import ConfigError
from demon_optim.study.batched import models as batched_models
from demon_optim.study.batched.models import (
    BatchedConvNet1D,
    BatchedGRUClassifier,
    BatchedMLP,
    FunctionalBatchedModel,
    NotBatchable,
    batch_models,
)
from demon_optim.study.models import MLP, ConvNet1D, GRUClassifier
from demon_optim.study.tasks.base import Split
from demon_optim.study.tasks.mnist1d import MNIST1DMLP
from tests.conftest import DEVICES

M, B, LENGTH = 3, 5, 40

# name -> (builder, batch_models options, the form it must get, input length)
DEDICATED: dict[str, tuple[Callable[[], nn.Module], dict, type, int]] = {
    "mlp-mnist1d": (lambda: MLP(LENGTH, (100, 100), 10, residual=True), {}, BatchedMLP, LENGTH),
    "mlp-digits": (lambda: MLP(64, (128,), 10), {}, BatchedMLP, 64),
    "mlp-residual-3": (lambda: MLP(LENGTH, (16, 16, 16), 4, residual=True), {}, BatchedMLP, LENGTH),
    "mlp-residual-widths": (
        lambda: MLP(LENGTH, (16, 8, 8), 4, residual=True),
        {},
        BatchedMLP,
        LENGTH,
    ),
    "cnn-unfold": (lambda: ConvNet1D(LENGTH, 25, 10), {"conv": "unfold"}, BatchedConvNet1D, LENGTH),
    "cnn-grouped": (
        lambda: ConvNet1D(LENGTH, 25, 10),
        {"conv": "grouped"},
        BatchedConvNet1D,
        LENGTH,
    ),
    "cnn-odd-length": (lambda: ConvNet1D(23, 4, 3), {"conv": "unfold"}, BatchedConvNet1D, 23),
    "gru-bidirectional": (lambda: GRUClassifier(LENGTH, 6, 10), {}, BatchedGRUClassifier, LENGTH),
    "gru-one-way": (
        lambda: GRUClassifier(LENGTH, 6, 10, bidirectional=False),
        {},
        BatchedGRUClassifier,
        LENGTH,
    ),
    "cnn-vmap": (
        lambda: ConvNet1D(LENGTH, 25, 10),
        {"form": "generic"},
        FunctionalBatchedModel,
        LENGTH,
    ),
}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def seeded(builder: Callable[[], nn.Module], count: int = M, dtype=torch.float32) -> list:
    """``count`` models as trials build them: torch.manual_seed(seed) then the builder."""
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(builder().to(dtype))
    return models


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str, floor: float = 0.0
) -> None:
    """``max |a - e| <= rel * max(max |e|, floor)``: relative to the tensor's scale
    (elementwise relative error means nothing for entries near zero); ``floor``, for a
    tensor that is ~0 by construction (a bias before BatchNorm), a fraction of its
    neighbours' scale."""
    scale = max(expected.abs().max().item(), floor) or 1.0
    error = (actual - expected).abs().max().item()
    assert error <= rel * scale, f"{what}: max error {error:.3g} > {rel:g} x {scale:.3g}"


def gradient_floor(model: nn.Module) -> float:
    """A hundredth of the largest gradient entry of the model."""
    return 1e-2 * max(p.grad.abs().max().item() for p in model.parameters())


def inputs_for(length: int, dtype: torch.dtype, device: str = "cpu") -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(M, B, length, generator=generator, dtype=dtype).to(device)


def compare(
    name: str, dtype: torch.dtype, training: bool, device: str = "cpu"
) -> tuple[nn.Module, list[nn.Module]]:
    """Outputs and per-model gradients of the batched form against the models alone."""
    builder, options, form, length = DEDICATED[name]
    models = [model.to(device) for model in seeded(builder, dtype=dtype)]
    alone = copy.deepcopy(models)
    batched = batch_models(models, **options)
    assert type(batched) is form
    batched.train(training)
    for model in alone:
        model.train(training)
    x = inputs_for(length, dtype, device)
    targets = torch.randint(0, 3, (M, B), generator=torch.Generator().manual_seed(3)).to(device)
    out = batched(x)
    assert out.shape[:2] == (M, B)
    # the sum of the models' losses: each model's gradient is its own
    sum(F.cross_entropy(out[m], targets[m]) for m in range(M)).backward()
    rel = TOLERANCE[dtype]
    for m, model in enumerate(alone):
        expected = model(x[m])
        assert_close(out[m].detach(), expected.detach(), rel, f"{name} output of model {m}")
        F.cross_entropy(expected, targets[m]).backward()
        floor = gradient_floor(model)
        for (pname, p), stacked in zip(model.named_parameters(), batched.stacked, strict=True):
            assert stacked.grad is not None, pname
            what = f"{name} gradient of {pname}, model {m}"
            assert_close(stacked.grad[m], p.grad, rel, what, floor)
    return batched, alone


@pytest.mark.parametrize("name", list(DEDICATED))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_each_form_equals_the_models_alone(name: str, dtype: torch.dtype) -> None:
    compare(name, dtype, training=True)


@pytest.mark.parametrize("name", ["mlp-mnist1d", "cnn-unfold", "cnn-grouped", "gru-bidirectional"])
def test_eval_mode_equals_the_models_alone(name: str) -> None:
    compare(name, torch.float64, training=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["mlp-mnist1d", "cnn-unfold", "gru-bidirectional"])
def test_forms_on_each_device(name: str, device: str) -> None:
    compare(name, torch.float32, training=True, device=device)


def test_initial_weights_are_each_models_own_bit_for_bit() -> None:
    models = seeded(lambda: MLP(LENGTH, (100, 100), 10, residual=True))
    originals = [{n: p.detach().clone() for n, p in m.named_parameters()} for m in models]
    batched = batch_models(models)
    for name, stacked in zip(batched.parameter_names, batched.stacked, strict=True):
        for m in range(M):
            assert torch.equal(stacked[m], originals[m][name]), (name, m)
    # and they are the trials' own: seed m builds model m
    torch.manual_seed(1)
    again = MLP(LENGTH, (100, 100), 10, residual=True)
    assert torch.equal(batched.stacked[0][1], again.hidden[0].weight)
    assert batched.stacked_parameters() == list(batched.stacked)
    assert batched.size == M


def test_auto_conv_is_the_measured_winner() -> None:
    batched = batch_models(seeded(lambda: ConvNet1D(LENGTH, 25, 10)))
    assert batched.conv == batched_models.AUTO_CONV


def test_member_shares_the_stacked_storage_and_sees_updates() -> None:
    task = MNIST1DMLP()
    models = seeded(task.build_model)
    reference = copy.deepcopy(models[1])
    batched = batch_models(models)
    member = batched.member(1)
    assert type(member) is MLP and member is models[1]
    weight = member.hidden[0].weight
    stacked = batched.stacked[0]
    assert weight.untyped_storage().data_ptr() == stacked.untyped_storage().data_ptr()
    assert torch.equal(weight, stacked[1])
    # an optimizer's in-place update of the stacked weights shows in the member at once
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p, q in zip(batched.stacked, reference.parameters(), strict=True):
            delta = torch.randn(p.shape[1:], generator=generator)
            p[1].add_(delta)
            q.add_(delta)
    split = Split(torch.randn(200, LENGTH, generator=generator), torch.randint(0, 10, (200,)))
    assert task.evaluate_metrics(batched.member(1), split) == task.evaluate_metrics(
        reference, split
    )
    with torch.no_grad():
        assert torch.equal(member(split.inputs), reference(split.inputs))
    # moved (new storage): member() rebinds its views to it
    batched = batched.to(torch.float64)
    member = batched.member(1)
    assert member.hidden[0].weight.dtype == torch.float64
    with torch.no_grad():
        batched.stacked[0][1].zero_()
    assert not member.hidden[0].weight.any()


def test_member_of_a_gru_runs_on_the_stacked_weights() -> None:
    """nn.GRU caches its weights (_flat_weights): the member must see the rebound views."""
    models = seeded(lambda: GRUClassifier(LENGTH, 6, 10))
    reference = copy.deepcopy(models[2])
    batched = batch_models(models)
    x = torch.randn(4, LENGTH)
    with torch.no_grad():
        batched.stacked[batched.parameter_names.index("gru.weight_hh_l0")][2].mul_(0.5)
        reference.gru.weight_hh_l0.mul_(0.5)
        assert torch.equal(batched.member(2)(x), reference(x))


class Normed(nn.Module):
    """A small model with BatchNorm and dropout: the generic form's case."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(LENGTH, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.relu(self.bn(self.linear(x)))))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_generic_form_batchnorm_keeps_per_model_running_statistics(dtype) -> None:
    models = seeded(Normed, dtype=dtype)
    alone = copy.deepcopy(models)
    batched = batch_models(models)
    assert type(batched) is FunctionalBatchedModel
    rel = TOLERANCE[dtype]
    x = torch.randn(M, B, LENGTH, dtype=dtype)
    targets = torch.randint(0, 3, (M, B))
    for step in range(2):  # train mode: batch statistics, running stats move per model
        out = batched(x + step)
        sum(F.cross_entropy(out[m], targets[m]) for m in range(M)).backward()
        for m, model in enumerate(alone):
            expected = model(x[m] + step)
            assert_close(out[m].detach(), expected.detach(), rel, f"output {m}")
            F.cross_entropy(expected, targets[m]).backward()
    buffers = batched.stacked_buffers()
    for m, model in enumerate(alone):
        assert_close(buffers["bn.running_mean"][m], model.bn.running_mean, rel, "running mean")
        assert_close(buffers["bn.running_var"][m], model.bn.running_var, rel, "running var")
        assert int(buffers["bn.num_batches_tracked"][m]) == 2
        assert torch.equal(batched.member(m).bn.running_mean, buffers["bn.running_mean"][m])
        floor = gradient_floor(model)
        for (name, p), stacked in zip(model.named_parameters(), batched.stacked, strict=True):
            assert_close(stacked.grad[m], p.grad, rel, f"gradient of {name}, model {m}", floor)
    assert not torch.equal(buffers["bn.running_mean"][0], buffers["bn.running_mean"][1])
    batched.eval()  # eval mode: the running statistics, and they stay
    before = buffers["bn.running_mean"].clone()
    out = batched(x)
    assert torch.equal(buffers["bn.running_mean"], before)
    for m, model in enumerate(alone):
        model.eval()
        assert_close(out[m].detach(), model(x[m]).detach(), rel, f"eval output {m}")
        assert not batched.member(m).training or model.training is False


def test_generic_form_draws_dropout_per_model() -> None:
    """Equal models on equal inputs: dropout masks differ per model in train mode (so a
    batched trial with dropout equals its unbatched run in distribution, not in values)."""
    torch.manual_seed(0)
    model = Normed(dropout=0.5)
    batched = batch_models([copy.deepcopy(model) for _ in range(4)])
    x = torch.randn(1, 16, LENGTH).expand(4, 16, LENGTH)
    with torch.no_grad():
        out = batched(x)
        assert all(not torch.equal(out[0], out[m]) for m in range(1, 4))
        batched.eval()
        out = batched(x)
        assert all(torch.equal(out[0], out[m]) for m in range(1, 4))


def test_probe_leaves_no_trace() -> None:
    models = seeded(lambda: Normed(dropout=0.5))
    alone = copy.deepcopy(models)
    example = torch.randn(4, LENGTH)
    rng = torch.get_rng_state()
    batched = batch_models(models, example=example)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in batched.stacked)
    assert int(batched.stacked_buffers()["bn.num_batches_tracked"].sum()) == 0
    for m, model in enumerate(alone):
        assert torch.equal(batched.stacked_buffers()["bn.running_var"][m], model.bn.running_var)


def test_hooks_send_a_model_to_the_generic_form() -> None:
    models = seeded(lambda: MLP(LENGTH, (8,), 3))
    seen = []
    for model in models:
        model.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    batched = batch_models(models)
    assert type(batched) is FunctionalBatchedModel
    batched(torch.randn(M, B, LENGTH))
    assert seen == [torch.Size([B, 3])]  # once, inside vmap: one example's shape


class WritesInPlace(nn.Module):
    """Adds its output into a fresh unbatched tensor in place: vmap refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(LENGTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 3)
        out += self.linear(x)
        return out


class HoldsATensor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(LENGTH, 3)
        self.scale = torch.ones(3)  # neither a parameter nor a buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_not_batchable_says_why() -> None:
    with pytest.raises(NotBatchable, match="different classes"):
        batch_models([MLP(LENGTH, (8,), 3), ConvNet1D()])
    with pytest.raises(NotBatchable, match=r"parameters \(hidden.0.bias\)|hidden.0"):
        batch_models([MLP(LENGTH, (8,), 3), MLP(LENGTH, (9,), 3)])
    with pytest.raises(NotBatchable, match=r"outside its parameters and buffers \(scale\)"):
        batch_models([HoldsATensor(), HoldsATensor()])
    with pytest.raises(NotBatchable, match="tied within the model"):
        batch_models([Tied(), Tied()])
    shared = MLP(LENGTH, (8,), 3)
    other = MLP(LENGTH, (8,), 3)
    other.out = shared.out
    with pytest.raises(NotBatchable, match="share a tensor"):
        batch_models([shared, other])
    with pytest.raises(NotBatchable, match="vmap refuses"):
        batch_models([WritesInPlace(), WritesInPlace()], example=torch.randn(2, LENGTH))
    with pytest.raises(NotBatchable, match=r"vmap refuses .*gru"):  # nn.GRU has no rule
        batch_models(seeded(GRUClassifier, 2), form="generic", example=torch.randn(2, LENGTH))


def test_without_an_example_the_first_forward_says_it() -> None:
    batched = batch_models([WritesInPlace(), WritesInPlace()])
    with pytest.raises(NotBatchable, match="vmap refuses"):
        batched(torch.randn(2, B, LENGTH))


def test_bad_arguments_are_config_errors() -> None:
    models = seeded(lambda: MLP(LENGTH, (8,), 3), 2)
    with pytest.raises(ConfigError, match="form: got 'fast'"):
        batch_models(models, form="fast")
    with pytest.raises(ConfigError, match="conv: got 'fft'"):
        batch_models(models, conv="fft")
    with pytest.raises(ConfigError, match="models"):
        batch_models([])
    with pytest.raises(ConfigError, match="the same module twice"):
        batch_models([models[0], models[0]])
    batched = batch_models(models)
    with pytest.raises(ConfigError, match=r"m: got 2; allowed: 0 \.\. 1"):
        batched.member(2)


@pytest.mark.parametrize("name", ["mlp-mnist1d", "cnn-unfold", "gru-bidirectional"])
def test_autocast_runs_in_its_dtype_and_grads_reach_float32(name: str) -> None:
    builder, options, _, length = DEDICATED[name]
    batched = batch_models(seeded(builder), **options)
    reference = batch_models(seeded(builder), **options)
    x = inputs_for(length, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = batched(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    expected = reference(x)
    assert_close(out.float().detach(), expected.detach(), 0.05, "bf16 output")
    for p in batched.stacked:
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()
