"""Mixed precision: torch.amp.GradScaler, torch.autocast, and bfloat16 parameters.

The rules (docs/optimizers.md, "Mixed precision (AMP)"):

* a step that GradScaler skips (an inf or nan gradient) never calls ``optimizer.step()``,
  so the Demon optimizers' schedule counter (``group["schedule_step"]``) stays where it was,
  as torch's Adam keeps its ``step``: the run is the run without that step, bit for bit;
* ``MomentumScheduler`` advances once per call of its ``step()``, as torch's LR schedulers
  do, skipped optimizer steps included.

Everything runs on the CPU (torch 2.13 has bfloat16 and float16 autocast and GradScaler
there) and, where there is a GPU, on CUDA.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from demon_optim import ConfigError, DemonAdam, DemonSGD, MomentumScheduler, schedules
from demon_optim.optim import QHM, AggMo, QHAdam, YellowFin
from tests import reference as ref
from tests import test_optimizers as demon_tests
from tests import test_reference_optimizers as other_tests
from tests.conftest import DEVICES

T = 20
STEPS = 12
SKIPPED = 4  # the step whose gradient is made non-finite

SCHEDULED = {  # optimizer -> its own counter after the run
    "demon-sgd": lambda ps: DemonSGD(ps, lr=0.05, nesterov=True, total_steps=T),
    "demon-adam": lambda ps: DemonAdam(ps, lr=0.01, total_steps=T),
    "demon-adam-damped": lambda ps: DemonAdam(ps, lr=0.01, total_steps=T, damped=True),
    "torch-adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
}


def counter(opt: torch.optim.Optimizer) -> int:
    """The schedule's counter (the Demon optimizers), or torch Adam's per-parameter step."""
    if "schedule_step" in opt.param_groups[0]:
        return opt.param_groups[0]["schedule_step"]
    return int(opt.state[opt.param_groups[0]["params"][0]]["step"])


def gradients(device: str) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        [torch.randn(s, generator=gen).to(device) for s in ((5,), (3, 2))] for _ in range(STEPS)
    ]


def start(device: str) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(1)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in ((5,), (3, 2))]


def grad_scaler(device: str, **options) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device, growth_interval=10**6, **options)


@pytest.mark.parametrize("name", list(SCHEDULED))
@pytest.mark.parametrize("device", DEVICES)
def test_a_skipped_step_leaves_the_schedule_where_it_was(name, device):
    """The loss sum(p * g) has gradient g: scaled by a power of two and unscaled exactly,
    so the scaled run equals the run without the skipped step bit for bit."""
    grads = gradients(device)
    params = start(device)
    opt, scaler = SCHEDULED[name](params), grad_scaler(device, init_scale=2.0**8)
    for k, gs in enumerate(grads):
        opt.zero_grad()
        loss = sum((p * g).sum() for p, g in zip(params, gs, strict=True))
        scaler.scale(loss).backward()
        if k == SKIPPED:
            params[1].grad[0, 1] = float("nan" if device == "cpu" else "inf")
            before = ([p.detach().clone() for p in params], counter(opt))
        scaler.step(opt)
        scaler.update()
        if k == SKIPPED:
            assert scaler.get_scale() == 2.0**7  # skipped: the scale backed off
            assert counter(opt) == before[1] == SKIPPED
            assert all(torch.equal(p, q) for p, q in zip(params, before[0], strict=True))
    assert counter(opt) == STEPS - 1

    plain = start(device)
    reference = SCHEDULED[name](plain)
    for k, gs in enumerate(grads):
        if k == SKIPPED:
            continue
        for p, g in zip(plain, gs, strict=True):
            p.grad = g.clone()
        reference.step()
    assert all(torch.equal(p, q) for p, q in zip(params, plain, strict=True))
    if hasattr(opt, "get_last_momentum"):
        assert opt.get_last_momentum() == reference.get_last_momentum()


@pytest.mark.parametrize("device", DEVICES)
def test_momentum_scheduler_advances_per_call_as_lr_schedulers_do(device):
    """Stepped after every iteration, skipped optimizer steps included, as torch's LR
    schedulers are in the AMP recipe: both counters count the calls."""
    params = start(device)
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    momentum = MomentumScheduler(opt, "demon", total_steps=T)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k))
    scaler = grad_scaler(device, init_scale=2.0**8)
    steps = 0
    for k, gs in enumerate(gradients(device)):
        opt.zero_grad()
        scaler.scale(sum((p * g).sum() for p, g in zip(params, gs, strict=True))).backward()
        if k == SKIPPED:
            params[0].grad[0] = float("inf")
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        steps += scaler.get_scale() == scale  # not skipped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: lr_scheduler.step() after a skipped step
            lr.step()
        momentum.step()
    assert steps == STEPS - 1
    assert momentum.last_step == lr.last_epoch == STEPS
    assert opt.param_groups[0]["momentum"] == schedules.demon(STEPS, T, 0.9)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 / (1 + STEPS))


# --- autocast -----------------------------------------------------------------------------------

OPTIMIZERS = {
    "demon-sgd": lambda ps: DemonSGD(ps, lr=0.2, total_steps=60),
    "demon-adam": lambda ps: DemonAdam(ps, lr=1e-3, total_steps=60),
    "demon-adam-damped": lambda ps: DemonAdam(ps, lr=1e-2, total_steps=60, damped=True),
    "qhm": lambda ps: QHM(ps, lr=0.5, momentum=0.9),
    "qhadam": lambda ps: QHAdam(ps, lr=1e-2, nus=(0.7, 1.0)),
    "aggmo": lambda ps: AggMo(ps, lr=0.05),
    "yellowfin": lambda ps: YellowFin(ps, initial_lr=0.3, beta=0.9),
}


def model_and_data(device: str):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=gen)
    y = torch.sin(x @ torch.randn(8, 1, generator=gen))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    return model.to(device), x.to(device), y.to(device)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_autocast_trains(name, device):
    model, x, y = model_and_data(device)
    opt = OPTIMIZERS[name](list(model.parameters()))
    losses = []
    for _ in range(60):
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16):
            out = model(x)
        assert out.dtype == torch.bfloat16
        loss = torch.nn.functional.mse_loss(out.float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::10]
    for p in model.parameters():  # the master weights and their state stay float32
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
        for value in opt.state[p].values():
            if torch.is_tensor(value) and value.dim() > 0:
                assert value.dtype == torch.float32


@pytest.mark.parametrize("name", ["demon-sgd", "demon-adam", "demon-adam-damped", "qhadam"])
@pytest.mark.parametrize("device", DEVICES)
def test_float16_autocast_with_grad_scaler(name, device):
    """A huge initial scale overflows float16 at first: those steps are skipped (the scale
    backs off) and the Demon counter counts only the steps taken."""
    model, x, y = model_and_data(device)
    opt = OPTIMIZERS[name](list(model.parameters()))
    scaler = torch.amp.GradScaler(device, init_scale=2.0**24)
    losses, taken = [], 0
    for _ in range(60):
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.float16):
            out = model(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        taken += scaler.get_scale() >= scale
        losses.append(loss.item())
    assert 0 < taken < 60
    if "schedule_step" in opt.param_groups[0]:
        assert opt.param_groups[0]["schedule_step"] == taken
    assert losses[-1] < 0.7 * losses[0], losses[::10]


# --- bfloat16 parameters on the fused paths ---------------------------------------------------

BF16_STEPS = 30
BF16_TOL = 0.08  # bfloat16 keeps 8 bits: the for-loop itself is 5e-2 off after 30 steps
DEMON = ["sgd", "sgd-nesterov", "sgd-dampening-wd", "adam", "adam-damped", "adam-decoupled"]
OTHERS = ["qhm", "qhm-nu1", "qhadam", "qhadam-adam", "aggmo", "yellowfin", "yellowfin-defaults"]


@pytest.mark.parametrize("fused", [False, None], ids=["loop", "default"])
@pytest.mark.parametrize("name", DEMON + OTHERS)
@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_parameters_follow_the_float64_reference(name, fused, device):
    """The default path takes the fused kernels for bfloat16 parameters, except on the CPU
    for the SGD kernel's users, which take the for-loop there: torch's CPU fused SGD kernel
    does not update float16/bfloat16 values (it was 1 to 3 off here)."""
    if name in DEMON:
        kind, _, options = next(c for c in demon_tests.ALL if c[1] == name)
        expected = demon_tests.run_reference(kind, options, BF16_STEPS)
        got, _ = demon_tests.run_optimizer(
            kind, options, torch.bfloat16, fused, steps=BF16_STEPS, device=device
        )
    else:
        kind, options = other_tests.CONFIGS[name]
        expected, _ = other_tests.run_reference(kind, options, steps=BF16_STEPS)
        params = other_tests.initial_params(torch.bfloat16, device)
        other_tests.train(other_tests.build(kind, options, params, fused), params, stop=BF16_STEPS)
        got = other_tests.flat(params)
    assert max(ref.relative_error(g, e) for g, e in zip(got, expected, strict=True)) < BF16_TOL


SGD_KERNEL = [DemonSGD, QHM, AggMo, YellowFin]


@pytest.mark.parametrize("cls", SGD_KERNEL, ids=[c.__name__ for c in SGD_KERNEL])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_fused_sgd_kernel_refused_for_reduced_floats_on_the_cpu(cls, dtype):
    p = torch.nn.Parameter(torch.zeros(4, dtype=dtype))
    kwargs = {"total_steps": 10} if cls is DemonSGD else {}
    with pytest.raises(ConfigError, match=r"^fused: got True; .*float16/bfloat16 on the CPU"):
        cls([p], fused=True, **kwargs)
    cls([p], **kwargs)  # the default takes the for-loop


@pytest.mark.parametrize("cls", [DemonAdam, QHAdam], ids=["DemonAdam", "QHAdam"])
def test_fused_adam_kernel_takes_reduced_floats_on_the_cpu(cls):
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    kwargs = {"total_steps": 10} if cls is DemonAdam else {}
    opt = cls([p], fused=True, **kwargs)
    p.grad = torch.ones(4, dtype=torch.bfloat16)
    opt.step()
    assert torch.all(p < 0)  # every element moved (torch's CPU SGD kernel leaves chunks)
