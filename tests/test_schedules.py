"""The pure schedule math, against docs/optimizers.md's values and torch's LR schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from demon_optim import ConfigError, schedules
from tests import reference as ref


def test_demon_reference_values():
    assert schedules.demon(0, 100, 0.9) == 0.9
    assert schedules.demon(50, 100, 0.9) == pytest.approx(0.8181818181818, abs=1e-12)
    assert schedules.demon(90, 100, 0.9) == pytest.approx(0.4736842105263, abs=1e-12)
    assert schedules.demon(99, 100, 0.9) == pytest.approx(0.0825688073394, abs=1e-12)
    assert schedules.demon(100, 100, 0.9) == 0.0


@pytest.mark.parametrize("beta_init", [0.0, 0.5, 0.9, 0.999])
def test_demon_total_future_weight_decays_linearly(beta_init):
    total = 1000
    for k in range(total):
        beta = schedules.demon(k, total, beta_init)
        assert beta == ref.demon_beta(k, total, beta_init)
        expected = (1 - k / total) * beta_init / (1 - beta_init)
        assert beta / (1 - beta) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_demon_is_clamped_past_the_end_and_never_hits_the_pole():
    # the unclamped formula has a pole at k = T / beta_init (0.1 % past T for beta 0.999)
    assert [schedules.demon(k, 1000, 0.999) for k in (1000, 1001, 1002, 5000)] == [0.0] * 4
    betas = schedules.curve("demon", 1000, 0.999, steps=np.arange(3000))
    assert np.all((betas >= 0) & (betas < 1)) and np.all(np.diff(betas) <= 0)


def test_demon_delay():
    assert schedules.demon(74, 100, 0.9, delay=0.75) == 0.9
    assert schedules.demon(75, 100, 0.9, delay=0.75) == 0.9
    assert schedules.demon(80, 100, 0.9, delay=0.75) == schedules.demon(5, 25, 0.9)
    assert schedules.demon(100, 100, 0.9, delay=0.75) == 0.0


def test_linear_cosine_exponential_shapes():
    assert schedules.linear(25, 100, 0.8) == pytest.approx(0.6)
    assert schedules.linear(150, 100, 0.8) == 0.0
    assert schedules.cosine(50, 100, 0.8) == pytest.approx(0.4)
    assert schedules.cosine(100, 100, 0.8) == pytest.approx(0.0, abs=1e-15)
    assert schedules.exponential(100, 100, 0.9) == pytest.approx(0.9 * math.exp(-5))
    assert schedules.exponential(0, 100, 0.9) == 0.9
    assert schedules.constant(7, 10, 0.9) == 0.9


def lr_trace(make_scheduler, steps, per_epoch=1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = make_scheduler(opt)
    lrs, moms = [], []
    for k in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        if (k + 1) % per_epoch == 0 and k + 1 < steps:
            sched.step()
    return lrs, moms


def test_learning_rate_shapes_match_torch_schedulers():
    total = 120
    lrs, _ = lr_trace(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total), total)
    assert lrs == pytest.approx([schedules.cosine(k, total, 0.1) for k in range(total)], rel=1e-9)
    lrs, _ = lr_trace(
        lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=total), total
    )
    assert lrs == pytest.approx([schedules.linear(k, total, 0.1) for k in range(total)], abs=1e-12)


def test_step_decay_matches_multistep_per_epoch():
    per_epoch, epochs = 7, 20
    total = per_epoch * epochs
    milestones = [round(f * epochs) for f in (0.5, 0.75)]
    lrs, _ = lr_trace(
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, gamma=0.1), total, per_epoch
    )
    ours = [schedules.step_decay(k, total, 0.1, steps_per_epoch=per_epoch) for k in range(total)]
    assert lrs == pytest.approx(ours, rel=1e-12)


@pytest.mark.parametrize("total", [10, 37, 200])
def test_one_cycle_matches_torch(total):
    lrs, moms = lr_trace(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=total), total
    )
    assert lrs == [schedules.one_cycle_lr(k, total, 0.1) for k in range(total)]
    assert moms == [schedules.one_cycle_momentum(k, total, 0.95) for k in range(total)]
    assert schedules.one_cycle_momentum(total + 5, total, 0.95) == moms[-1]


def test_curve_is_the_scalar_function_vectorised():
    values = schedules.curve("cosine", 50, 0.9)
    assert values.shape == (51,) and values.dtype == np.float64
    assert list(values) == [schedules.cosine(k, 50, 0.9) for k in range(51)]
    one_cycle = schedules.curve("one_cycle", 50, 0.95, base_momentum=0.9)
    assert one_cycle.min() == pytest.approx(0.9)


def test_get_binds_options_and_rejects_unknown_names():
    fn = schedules.get("one_cycle", base_momentum=0.9)
    assert fn(0, 10, 0.95) == 0.95
    with pytest.raises(ConfigError, match="schedule: got 'cosinus'; allowed: constant, cosine"):
        schedules.get("cosinus")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1, 10, 0.9), "step"),
        ((1.5, 10, 0.9), "step"),
        ((0, 0, 0.9), "total_steps"),
        ((0, 10.0, 0.9), "total_steps"),
        ((0, True, 0.9), "total_steps"),
        ((0, 10, 1.0), "beta_init"),
        ((0, 10, -0.1), "beta_init"),
        ((0, 10, float("nan")), "beta_init"),
    ],
)
def test_demon_rejects_bad_input_by_name(args, field):
    with pytest.raises(ValueError, match=rf"^{field}: got"):
        schedules.demon(*args)


def test_curve_rejects_non_integer_steps():
    with pytest.raises(ConfigError, match="steps"):
        schedules.curve("demon", 10, 0.9, steps=np.linspace(0, 1, 5))
