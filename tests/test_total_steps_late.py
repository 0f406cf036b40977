"""T known late: ``total_steps=None`` and ``set_total_steps`` (for framework callbacks)."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

from demon_optim import ConfigError, DemonAdam, DemonSGD, MomentumScheduler, schedules

OPTIMIZERS = [
    pytest.param(lambda p, **kw: DemonSGD(p, lr=0.1, momentum=0.9, **kw), id="sgd"),
    pytest.param(lambda p, **kw: DemonAdam(p, lr=1e-2, betas=(0.9, 0.999), **kw), id="adam"),
]


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]


def _run(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor], steps: int, start: int = 0
) -> None:
    for k in range(start, start + steps):
        for i, p in enumerate(params):
            p.grad = torch.sin(p.detach() * (k + 1) + i)
        optimizer.step()


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_late_total_steps_equals_constructor_total_steps(make) -> None:
    early, late = _params(), _params()
    a = make(early, total_steps=30)
    b = make(late)
    b.set_total_steps(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # past T on purpose
        _run(a, early, 45)
        _run(b, late, 45)
    for x, y in zip(early, late, strict=True):
        assert torch.equal(x, y)
    assert a.get_last_momentum() == b.get_last_momentum() == [0.0]


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_stepping_before_total_steps_is_set_is_a_clear_error(make) -> None:
    params = _params()
    optimizer = make(params)
    assert optimizer.get_last_momentum() == [0.9]  # step 0: beta_init whatever T is
    before = [p.detach().clone() for p in params]
    with pytest.raises(ConfigError, match=r"total_steps is not set.*set_total_steps"):
        _run(optimizer, params, 1)
    assert all(torch.equal(p, q) for p, q in zip(params, before, strict=True))
    assert optimizer.param_groups[0]["schedule_step"] == 0


def test_groups_with_their_own_total_steps_keep_it() -> None:
    a, b = _params()
    optimizer = DemonSGD([{"params": [a], "total_steps": 7}, {"params": [b]}], lr=0.1)
    optimizer.set_total_steps(50)
    assert [g["total_steps"] for g in optimizer.param_groups] == [7, 50]
    c = torch.nn.Parameter(torch.zeros(2))
    optimizer.add_param_group({"params": [c]})  # a later group takes the optimizer's T
    assert optimizer.param_groups[-1]["total_steps"] == 50


def test_changing_total_steps_after_steps_needs_allow_change() -> None:
    params = _params()
    optimizer = DemonSGD(params, lr=0.1)
    optimizer.set_total_steps(20)
    optimizer.set_total_steps(30)  # no step taken yet: a free change
    _run(optimizer, params, 3)
    optimizer.set_total_steps(30)  # the same T: nothing happens
    with pytest.raises(ConfigError, match=r"allow_change=True"):
        optimizer.set_total_steps(40)
    assert optimizer.param_groups[0]["total_steps"] == 30
    optimizer.set_total_steps(40, allow_change=True)
    assert optimizer.param_groups[0]["total_steps"] == 40
    assert optimizer.get_last_momentum() == [schedules.demon(2, 40, 0.9)]


def test_a_constructor_total_steps_is_changed_only_with_allow_change() -> None:
    params = _params()
    optimizer = DemonAdam(params, total_steps=10)
    _run(optimizer, params, 1)
    with pytest.raises(ConfigError, match="param_groups\\[0\\] has been using"):
        optimizer.set_total_steps(11)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "100", None, True])
def test_set_total_steps_checks_its_value(bad) -> None:
    optimizer = DemonSGD(_params(), lr=0.1)
    with pytest.raises(ConfigError, match="total_steps"):
        optimizer.set_total_steps(bad)
    assert optimizer.param_groups[0]["total_steps"] is None


def test_a_loaded_checkpoint_total_steps_wins_and_resume_is_exact() -> None:
    reference, resumed = _params(), _params()
    full = DemonAdam(reference, lr=1e-2, total_steps=25)
    _run(full, reference, 25)
    first = DemonAdam(resumed, lr=1e-2)
    first.set_total_steps(25)
    _run(first, resumed, 10)
    state = copy.deepcopy(first.state_dict())
    second = DemonAdam(resumed, lr=1e-2)  # a fresh process: T not known yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # None -> 25 is not a replacement worth a warning
        second.load_state_dict(state)
    assert second.param_groups[0]["total_steps"] == 25
    second.set_total_steps(25)  # what a framework callback does on resume: a no-op
    _run(second, resumed, 15, start=10)
    for x, y in zip(reference, resumed, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_a_state_dict_saved_before_total_steps_was_set_loads() -> None:
    params = _params()
    state = DemonSGD(params, lr=0.1).state_dict()
    other = DemonSGD(params, lr=0.1, total_steps=5)
    with pytest.warns(UserWarning, match="None replaces 5"):
        other.load_state_dict(state)  # loaded values win, None included
    assert other.param_groups[0]["total_steps"] is None
    other.set_total_steps(5)
    _run(other, params, 2)


def test_pickled_optimizer_keeps_which_groups_follow() -> None:
    a, b = _params()
    optimizer = DemonSGD([{"params": [a], "total_steps": 7}, {"params": [b]}], lr=0.1)
    clone = pickle.loads(pickle.dumps(optimizer))
    clone.set_total_steps(9)
    assert [g["total_steps"] for g in clone.param_groups] == [7, 9]


def test_a_refused_group_is_not_left_half_added() -> None:
    optimizer = DemonSGD(_params(), lr=0.1)
    with pytest.raises(ConfigError, match="momentum"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "momentum": 2})
    assert len(optimizer.param_groups) == 1
    optimizer.set_total_steps(3)


# --- MomentumScheduler ------------------------------------------------------------------


def _sgd(params: list[torch.Tensor]) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def test_scheduler_late_total_steps_equals_constructor_total_steps() -> None:
    early, late = _params(), _params()
    a = _sgd(early)
    sa = MomentumScheduler(a, total_steps=20)
    b = _sgd(late)
    sb = MomentumScheduler(b)
    assert sb.get_last_momentum() == [0.9]
    sb.set_total_steps(20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(30):
            _run(a, early, 1)
            sa.step()
            _run(b, late, 1)
            sb.step()
    assert sa.get_last_momentum() == sb.get_last_momentum() == [0.0]
    for x, y in zip(early, late, strict=True):
        assert torch.equal(x, y)


def test_scheduler_stepping_before_total_steps_is_set_is_a_clear_error() -> None:
    scheduler = MomentumScheduler(_sgd(_params()))
    with pytest.raises(ConfigError, match="total_steps is not set"):
        scheduler.step()
    assert scheduler.last_step == 0


def test_scheduler_groups_with_their_own_total_steps_keep_it() -> None:
    a, b = _params()
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9)
    scheduler = MomentumScheduler(optimizer, total_steps=[8, None])
    scheduler.set_total_steps(16)
    assert scheduler.total_steps == [8, 16]
    scheduler.step()
    with pytest.raises(ConfigError, match="allow_change=True"):
        scheduler.set_total_steps(17)
    scheduler.set_total_steps(17, allow_change=True)
    assert scheduler.total_steps == [8, 17]
    assert scheduler.get_last_momentum()[1] == pytest.approx(schedules.demon(1, 17, 0.9))


def test_scheduler_resume_with_late_total_steps() -> None:
    params = _params()
    optimizer = _sgd(params)
    scheduler = MomentumScheduler(optimizer)
    scheduler.set_total_steps(12)
    for _ in range(5):
        scheduler.step()
    state = scheduler.state_dict()
    fresh = MomentumScheduler(_sgd(params))
    fresh.load_state_dict(state)
    fresh.set_total_steps(12)  # the framework's call on resume: a no-op
    assert fresh.last_step == 5 and fresh.total_steps == [12]
    assert fresh.get_last_momentum() == [pytest.approx(schedules.demon(5, 12, 0.9))]
