"""MomentumScheduler on torch's own optimizers."""

from __future__ import annotations

import warnings

import pytest
import torch

from demon_optim import ConfigError, DemonSGD, MomentumScheduler, schedules
from tests.conftest import DEVICES
from tests.test_optimizers import assert_bitwise, initial_params, set_grads


def train_with_scheduler(make_opt, steps=300, device="cpu", **scheduler_kw):
    params = initial_params(torch.float32, device)
    opt = make_opt(params)
    sched = MomentumScheduler(opt, **scheduler_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(steps):
            set_grads(params, k)
            opt.step()
            sched.step()
    return [p.detach().clone() for p in params], opt, sched


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_demon_on_torch_sgd_is_demon_sgd(nesterov, device):
    """Bitwise, past total_steps included."""
    ours, _, _ = train_with_scheduler(
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=nesterov, foreach=False),
        device=device,
        schedule="demon",
        total_steps=200,
    )
    params = initial_params(torch.float32, device)
    opt = DemonSGD(params, lr=0.05, momentum=0.9, nesterov=nesterov, total_steps=200, fused=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(300):
            set_grads(params, k)
            opt.step()
    assert_bitwise(ours, [p.detach() for p in params])


@pytest.mark.parametrize(
    "cls", [torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam]
)
def test_adam_family_moves_only_betas0(cls):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = cls([p], lr=1e-3, betas=(0.9, 0.995))
    sched = MomentumScheduler(opt, "linear", total_steps=10)
    for k in range(1, 6):
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
        assert opt.param_groups[0]["betas"] == (schedules.linear(k, 10, 0.9), 0.995)
    assert sched.get_last_momentum() == [schedules.linear(5, 10, 0.9)]


def test_tensor_betas_are_filled_in_place():
    p = torch.nn.Parameter(torch.zeros(3))
    beta1, beta2 = torch.tensor(0.9), torch.tensor(0.999)
    opt = torch.optim.Adam([p], lr=1e-3, betas=(beta1, beta2))
    sched = MomentumScheduler(opt, "demon", total_steps=10)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["betas"][0] is beta1
    assert beta1.item() == pytest.approx(schedules.demon(1, 10, 0.9))
    assert opt.param_groups[0]["betas"][1] is beta2 and beta2.item() == pytest.approx(0.999)


def test_per_group_beta_init_and_total_steps():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD(
        [{"params": [a], "momentum": 0.9}, {"params": [b], "momentum": 0.5}], lr=0.1
    )
    sched = MomentumScheduler(opt, "demon", total_steps=[10, 20])
    for _ in range(5):
        sched.step()
    assert sched.get_last_momentum() == [schedules.demon(5, 10, 0.9), schedules.demon(5, 20, 0.5)]


def test_schedule_options_and_callables():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.95)
    sched = MomentumScheduler(opt, "one_cycle", total_steps=100, base_momentum=0.85)
    assert sched.get_last_momentum() == [0.95]
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched2 = MomentumScheduler(opt2, lambda k, t, b: b * 0.5, total_steps=10)
    assert sched2.get_last_momentum() == [0.45]


def test_composes_with_lr_scheduler():
    params = initial_params(torch.float32)
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50)
    sched = MomentumScheduler(opt, "demon", total_steps=50)
    for k in range(20):
        set_grads(params, k)
        opt.step()
        lr_sched.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(schedules.cosine(20, 50, 0.1))
    assert opt.param_groups[0]["momentum"] == schedules.demon(20, 50, 0.9)


def test_state_dict_round_trip_equals_uninterrupted():
    def make(p):
        return torch.optim.Adam(p, lr=1e-2)

    straight, _, _ = train_with_scheduler(make, steps=100, schedule="demon", total_steps=80)
    params = initial_params(torch.float32)
    opt = make(params)
    sched = MomentumScheduler(opt, "demon", total_steps=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(40):
            set_grads(params, k)
            opt.step()
            sched.step()
        saved = {"opt": opt.state_dict(), "sched": sched.state_dict()}
        fresh = [torch.nn.Parameter(p.detach().clone()) for p in params]
        opt2 = make(fresh)
        sched2 = MomentumScheduler(opt2, "demon", total_steps=80)
        opt2.load_state_dict(saved["opt"])
        sched2.load_state_dict(saved["sched"])
        assert sched2.last_step == 40
        for k in range(40, 100):
            set_grads(fresh, k)
            opt2.step()
            sched2.step()
    assert_bitwise(straight, [p.detach() for p in fresh])


def test_warns_once_when_the_counter_passes_total_steps():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = MomentumScheduler(opt, "demon", total_steps=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            sched.step()
        assert not caught  # counter == T is the end of a run of exactly T steps
        for _ in range(4):
            sched.step()
    assert len(caught) == 1
    assert sched.get_last_momentum() == [0.0]


def test_optimizer_without_momentum_names_its_keys():
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigError, match="pass key="):
        MomentumScheduler(opt, total_steps=10)
    with pytest.raises(ConfigError, match=r"key: got 'mom'; allowed: .*lr_decay"):
        MomentumScheduler(opt, total_steps=10, key="mom")


def test_explicit_key():
    opt = torch.optim.RMSprop([torch.nn.Parameter(torch.zeros(1))], momentum=0.9, alpha=0.9)
    sched = MomentumScheduler(opt, "linear", total_steps=10, key="alpha")
    sched.step()
    assert opt.param_groups[0]["alpha"] == pytest.approx(0.81)
    assert opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": [5, 5]}, "total_steps"),
        ({"total_steps": 5, "schedule": "nope"}, "schedule"),
    ],
)
def test_bad_arguments(kwargs, field):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=rf"^{field}: got"):
        MomentumScheduler(opt, **kwargs)
