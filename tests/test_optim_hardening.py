"""Every optimizer under odd input: complex parameters, sparse gradients, foreign or broken
state dicts, steps that raise, non-finite and out-of-range hyperparameters."""

from __future__ import annotations

import contextlib
import copy
import math
import warnings

import pytest
import torch

from demon_optim import ConfigError, DemonAdam, DemonAdamW, DemonSGD, MomentumScheduler, schedules
from demon_optim.optim import QHM, AggMo, QHAdam, YellowFin

MAKERS = {
    "demon-sgd": lambda ps, **kw: DemonSGD(ps, lr=0.05, momentum=0.9, total_steps=200, **kw),
    "demon-sgd-nesterov-wd": lambda ps, **kw: DemonSGD(
        ps, lr=0.05, nesterov=True, weight_decay=1e-2, total_steps=200, **kw
    ),
    "demon-adam": lambda ps, **kw: DemonAdam(ps, lr=1e-3, total_steps=200, **kw),
    "demon-adam-damped": lambda ps, **kw: DemonAdam(
        ps, lr=1e-2, total_steps=200, damped=True, weight_decay=1e-2, **kw
    ),
    "demon-adamw": lambda ps, **kw: DemonAdamW(ps, lr=1e-3, total_steps=200, **kw),
    "demon-adamw-damped": lambda ps, **kw: DemonAdamW(
        ps, lr=1e-2, total_steps=200, damped=True, **kw
    ),
    "qhm": lambda ps, **kw: QHM(ps, lr=0.5, momentum=0.9, nu=0.7, **kw),
    "qhadam": lambda ps, **kw: QHAdam(ps, lr=1e-2, betas=(0.9, 0.999), nus=(0.7, 1.0), **kw),
    "qhadam-nu2": lambda ps, **kw: QHAdam(ps, lr=1e-2, nus=(0.7, 0.9), weight_decay=1e-2, **kw),
    "aggmo": lambda ps, **kw: AggMo(ps, lr=0.01, betas=(0.0, 0.9, 0.99), **kw),
    "yellowfin": lambda ps, **kw: YellowFin(ps, **kw),
}
CLASSES = {
    "demon-sgd": DemonSGD,
    "demon-adam": DemonAdam,
    "demon-adamw": DemonAdamW,
    "qhm": QHM,
    "qhadam": QHAdam,
    "aggmo": AggMo,
    "yellowfin": YellowFin,
}
TARGET = torch.tensor([0.0, 1.0])  # the real view of 1j


@contextlib.contextmanager
def quiet():
    """Past total_steps the Demon optimizers warn; these tests run past it on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def grad_of_distance(real: torch.Tensor) -> torch.Tensor:
    """The gradient of |z - 1j|^2 for z's real view (torch's convention for complex z)."""
    return 2 * (real.detach() - TARGET)


def complex_and_real_view_runs(make, steps: int, **kw):
    """Train z (complex, beside a real w) and its real view (beside the same w) alike."""
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(6, 2, generator=gen)
    w0 = torch.randn(3, generator=gen)
    z = torch.nn.Parameter(torch.view_as_complex(z0.clone()))
    r = torch.nn.Parameter(z0.clone())
    wz, wr = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt_c, opt_r = make([z, wz], **kw), make([r, wr], **kw)
    with quiet():
        for _ in range(steps):
            z.grad = torch.view_as_complex(grad_of_distance(torch.view_as_real(z)))
            r.grad = grad_of_distance(r)
            wz.grad = wz.detach() * 2 - 1
            wr.grad = wr.detach() * 2 - 1
            opt_c.step()
            opt_r.step()
    return (z, wz, opt_c), (r, wr, opt_r)


# --- 1. complex parameters -----------------------------------------------------------------


@pytest.mark.parametrize("fused", [None, False], ids=["default", "loop"])
@pytest.mark.parametrize("name", list(MAKERS))
def test_complex_parameter_is_its_real_view(name, fused):
    (z, wz, opt_c), (r, wr, _) = complex_and_real_view_runs(MAKERS[name], 300, fused=fused)
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())
    assert torch.equal(wz, wr)
    # the state keeps the parameter's own layout, as torch's
    for value in opt_c.state[z].values():
        for t in value if isinstance(value, list) else [value]:
            if isinstance(t, torch.Tensor) and t.dim() > 0:
                assert t.dtype == z.dtype and t.shape == z.shape


@pytest.mark.parametrize("fused", [None, False], ids=["default", "loop"])
def test_yellowfin_measures_a_complex_parameter_as_its_real_view(fused):
    """YellowFin's tuner takes norms over all parameters: on a complex tensor of 1000 entries
    torch's norm rounds differently from its real view's, so only real views match exactly."""
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(1000, 2, generator=gen)
    z = torch.nn.Parameter(torch.view_as_complex(z0.clone()))
    r = torch.nn.Parameter(z0.clone())
    opts = [YellowFin([z], fused=fused), YellowFin([r], fused=fused)]
    for _ in range(20):
        z.grad = torch.view_as_complex(grad_of_distance(torch.view_as_real(z)))
        r.grad = grad_of_distance(r)
        for opt in opts:
            opt.step()
    assert opts[0].tuner == opts[1].tuner
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())
    assert opts[0].state[z]["grad_avg"].dtype == z.dtype


def test_complex_parameter_under_compiled_qhadam():
    make = MAKERS["qhadam-nu2"]
    (z, _, _), (r, _, _) = complex_and_real_view_runs(make, 20, compiled=True)
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fused", [None, False], ids=["default", "loop"])
def test_damped_constant_demon_adam_is_torch_adam_on_a_complex_parameter(fused):
    def make(ps, fused=None):
        return DemonAdam(ps, lr=1e-2, total_steps=5, damped=True, schedule="constant", fused=fused)

    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(8, dtype=torch.complex64, generator=gen)
    ours, theirs = torch.nn.Parameter(z0.clone()), torch.nn.Parameter(z0.clone())
    opt = make([ours], fused=fused)
    ref = torch.optim.Adam([theirs], lr=1e-2, foreach=False)
    for _ in range(200):
        for p, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            (p - 1j).abs().square().sum().backward()
            o.step()
    if fused is False:
        assert torch.equal(ours, theirs)
    else:
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    second = torch.view_as_real(opt.state[ours]["exp_avg_sq"])
    assert bool((second >= 0).all())


@pytest.mark.parametrize("name", ["demon-sgd", "demon-adam", "qhm", "qhadam", "aggmo", "yellowfin"])
def test_complex_state_dict_save_load_continue(name):
    make = MAKERS[name]
    straight, _ = complex_and_real_view_runs(make, 200)
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(6, 2, generator=gen)
    w0 = torch.randn(3, generator=gen)
    z = torch.nn.Parameter(torch.view_as_complex(z0.clone()))
    w = torch.nn.Parameter(w0.clone())
    opt = make([z, w])
    with quiet():
        for k in range(200):
            if k == 100:
                saved = copy.deepcopy(opt.state_dict())
                z = torch.nn.Parameter(z.detach().clone())
                w = torch.nn.Parameter(w.detach().clone())
                opt = make([z, w])
                opt.load_state_dict(saved)
            z.grad = torch.view_as_complex(grad_of_distance(torch.view_as_real(z)))
            w.grad = w.detach() * 2 - 1
            opt.step()
    assert torch.equal(z, straight[0]) and torch.equal(w, straight[1])


# --- 2. sparse gradients -------------------------------------------------------------------

SPARSE_SGD = [
    {"momentum": 0.9},
    {"momentum": 0.0},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.9, "dampening": 0.3},
    {"momentum": 0.9, "maximize": True},
]


def embedding_run(make, steps=30, sign=1.0):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 4, sparse=True)
    lin = torch.nn.Linear(4, 1)
    opt = make([*emb.parameters(), *lin.parameters()])
    for k in range(steps):
        opt.zero_grad()
        (sign * lin(emb(torch.tensor([k % 10, (3 * k) % 10]))).square().sum()).backward()
        opt.step()
    assert all(bool(p.isfinite().all()) for p in opt.param_groups[0]["params"])
    return [p.detach().clone() for p in (*emb.parameters(), *lin.parameters())], opt


@pytest.mark.parametrize("fused", [None, False], ids=["default", "loop"])
@pytest.mark.parametrize("options", SPARSE_SGD, ids=["m", "m0", "nesterov", "damp", "max"])
def test_demon_sgd_on_sparse_gradients_is_torch_sgd(options, fused):
    sign = -1.0 if options.get("maximize") else 1.0
    ours, _ = embedding_run(
        lambda ps: DemonSGD(
            ps, lr=0.01, total_steps=100, schedule="constant", fused=fused, **options
        ),
        sign=sign,
    )
    theirs, _ = embedding_run(lambda ps: torch.optim.SGD(ps, lr=0.01, **options), sign=sign)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_demon_sgd_on_sparse_gradients_decays_momentum():
    ours, opt = embedding_run(lambda ps: DemonSGD(ps, lr=0.01, total_steps=30), steps=30)
    constant, _ = embedding_run(
        lambda ps: DemonSGD(ps, lr=0.01, total_steps=30, schedule="constant"), steps=30
    )
    assert opt.param_groups[0]["schedule_step"] == 30
    assert not torch.equal(ours[0], constant[0])


def snapshot(opt, params):
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.layout == b.layout
        assert torch.equal(a.to_dense(), b.to_dense())
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)  # nan


def two_groups(make, sparse_second: bool):
    """A dense group that has taken a step, and a second group (an embedding)."""
    torch.manual_seed(0)
    dense = torch.nn.Parameter(torch.randn(5))
    emb = torch.nn.Embedding(10, 4, sparse=sparse_second)
    opt = make([{"params": [dense]}, {"params": list(emb.parameters())}])
    dense.grad = torch.ones(5)
    emb(torch.tensor([1, 2])).sum().backward()
    opt.step()
    return opt, [dense, emb.weight]


@pytest.mark.parametrize(
    "name", ["demon-adam", "demon-adamw", "qhm", "qhadam", "qhadam-nu2", "aggmo", "yellowfin"]
)
def test_sparse_gradient_refused_clearly_and_nothing_changes(name):
    opt, params = two_groups(MAKERS[name], sparse_second=False)
    emb = params[1]
    cls = type(opt).__name__
    sparse = torch.nn.Embedding(10, 4, sparse=True)
    sparse.weight = emb  # the same parameter, now with sparse gradients
    before = snapshot(opt, params)
    params[0].grad = torch.ones(5)
    emb.grad = None
    sparse(torch.tensor([3])).sum().backward()
    assert emb.grad.is_sparse
    with pytest.raises(RuntimeError, match=f"^{cls} does not support sparse gradients"):
        opt.step()
    assert_same(snapshot(opt, params), before)
    emb.grad = emb.grad.to_dense()
    opt.step()  # still steps
    assert not torch.equal(params[0], before[0][0])


@pytest.mark.parametrize(
    ("options", "field"),
    [({"fused": True}, "fused"), ({"weight_decay": 0.1}, "weight_decay")],
    ids=["fused", "weight_decay"],
)
def test_demon_sgd_sparse_limits_are_config_errors_before_any_change(options, field):
    opt, params = two_groups(
        lambda groups: DemonSGD(groups, lr=0.1, total_steps=10), sparse_second=True
    )
    opt.param_groups[1].update(options)
    before = snapshot(opt, params)
    params[0].grad = torch.ones(5)
    with pytest.raises(ConfigError, match=f"^{field}: got .*sparse gradients"):
        opt.step()
    assert_same(snapshot(opt, params), before)
    assert [g["schedule_step"] for g in opt.param_groups] == [1, 1]


def bad_second_schedule(cls):
    def make(groups):
        groups[1]["schedule"] = lambda k, t, b: 0.5 if k == 0 else 1.5
        return cls(groups, total_steps=10)

    return make


@pytest.mark.parametrize("cls", [DemonSGD, DemonAdam])
def test_a_schedule_value_refused_advances_no_group(cls):
    opt, params = two_groups(bad_second_schedule(cls), sparse_second=False)
    before = snapshot(opt, params)
    params[0].grad = torch.ones(5)
    with pytest.raises(ConfigError, match="schedule"):
        opt.step()
    assert [g["schedule_step"] for g in opt.param_groups] == [1, 1]
    assert_same(snapshot(opt, params), before)


def test_aggmo_changed_number_of_betas_changes_nothing():
    opt, params = two_groups(MAKERS["aggmo"], sparse_second=False)
    opt.param_groups[1]["betas"] = (0.0, 0.9)
    opt.param_groups[1]["momentum"] = 0.9
    before = snapshot(opt, params)
    params[0].grad = torch.ones(5)
    with pytest.raises(ConfigError, match="betas"):
        opt.step()
    assert_same(snapshot(opt, params), before)


# --- 3. load_state_dict --------------------------------------------------------------------


def trained(make, steps=3):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(2, 3))]
    opt = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = p.detach().clone()
        opt.step()
    return opt, params


TORCH = {
    "torch-sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "torch-adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
}
FOREIGN = [  # (target, source, a key the message must name)
    ("demon-sgd", "torch-sgd", "total_steps"),
    ("demon-sgd", "torch-adam", "momentum"),
    ("demon-sgd", "demon-adam", "momentum"),
    ("demon-adam", "torch-adam", "total_steps"),
    ("demon-adam", "torch-sgd", "betas"),
    ("demon-adam", "demon-sgd", "betas"),
    ("demon-adamw", "demon-sgd", "betas"),
    ("qhm", "torch-sgd", "nu"),
    ("qhm", "aggmo", "nu"),
    ("qhadam", "torch-adam", "nus"),
    ("qhadam", "demon-adam", "nus"),
    ("aggmo", "torch-sgd", "betas"),
    ("aggmo", "qhm", "betas"),
    # YellowFin's groups hold only lr, weight_decay, maximize, fused, as these do: the
    # tuner in the first parameter's state tells them apart
    ("yellowfin", "torch-sgd", "yellowfin"),
    ("yellowfin", "torch-adam", "yellowfin"),
    ("yellowfin", "demon-sgd", "yellowfin"),
    ("yellowfin", "qhm", "yellowfin"),
]


@pytest.mark.parametrize(
    ("target", "source", "key"), FOREIGN, ids=[f"{t}<-{s}" for t, s, _ in FOREIGN]
)
def test_foreign_state_dict_refused_optimizer_unchanged(target, source, key):
    make_source = TORCH.get(source) or MAKERS[source]
    theirs, _ = trained(make_source)
    opt, params = trained(MAKERS[target])
    before = snapshot(opt, params)
    cls = type(opt).__name__
    with pytest.raises(
        ConfigError, match=rf"^state_dict (param_groups|state)\[0\]: missing .*'{key}'.*{cls}"
    ):
        opt.load_state_dict(theirs.state_dict())
    assert_same(snapshot(opt, params), before)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()


def test_yellowfin_refuses_an_unstepped_torch_sgd_state_dict():
    """A torch SGD that never stepped has no state at all: still not a YellowFin's."""
    opt, params = trained(MAKERS["yellowfin"])
    before = snapshot(opt, params)
    with pytest.raises(ConfigError, match=r"^state_dict state\[0\]: missing 'yellowfin'"):
        opt.load_state_dict(torch.optim.SGD(params, lr=0.1).state_dict())
    assert_same(snapshot(opt, params), before)


@pytest.mark.parametrize("steps", [0, 3], ids=["fresh", "stepped"])
def test_yellowfin_loads_its_own_state_dict_and_continues(steps):
    straight, straight_params = trained(MAKERS["yellowfin"], steps=steps + 2)
    opt, params = trained(MAKERS["yellowfin"], steps=steps)
    saved = copy.deepcopy(opt.state_dict())
    params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    again = MAKERS["yellowfin"](params, initial_lr=0.5)  # the checkpoint's tuner wins
    again.load_state_dict(saved)
    for _ in range(2):
        for p in params:
            p.grad = p.detach().clone()
        again.step()
    assert all(torch.equal(a, b) for a, b in zip(params, straight_params, strict=True))
    assert again.tuner["step"] == straight.tuner["step"] == steps + 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("step"), r"^state_dict state\[0\]\.yellowfin: missing 'step'; "),
        (lambda t: t.clear(), r"^state_dict state\[0\]\.yellowfin: missing 'beta', "),
    ],
    ids=["no-step", "empty"],
)
def test_yellowfin_tuner_state_without_its_entries_refused(change, message):
    opt, params = trained(MAKERS["yellowfin"])
    saved = copy.deepcopy(opt.state_dict())
    change(saved["state"][0]["yellowfin"])
    before = snapshot(opt, params)
    with pytest.raises(ConfigError, match=message):
        opt.load_state_dict(saved)
    assert_same(snapshot(opt, params), before)


def test_yellowfin_tuner_state_not_a_dict_refused():
    opt, params = trained(MAKERS["yellowfin"])
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["yellowfin"] = 1.0
    before = snapshot(opt, params)
    with pytest.raises(ConfigError, match=r"^state_dict state\[0\]\.yellowfin: got 1\.0; "):
        opt.load_state_dict(saved)
    assert_same(snapshot(opt, params), before)


BROKEN = [  # (group entry, value, the message's start)
    ("lr", math.nan, "state_dict param_groups[0].lr: got nan; allowed: "),
    ("lr", math.inf, "state_dict param_groups[0].lr: got inf; allowed: "),
    ("weight_decay", -1.0, "state_dict param_groups[0].weight_decay: got -1.0"),
    ("maximize", "no", "state_dict param_groups[0].maximize: got 'no'"),
]
DEMON_BROKEN = [
    ("total_steps", "x", "state_dict param_groups[0].total_steps: got 'x'; allowed: "),
    ("total_steps", 10**30, "state_dict param_groups[0].total_steps: got 10"),
    ("schedule_step", -1, "state_dict param_groups[0].schedule_step: got -1"),
    ("schedule", "cosinus", "state_dict param_groups[0].schedule: got 'cosinus'"),
]
CASES = [(n, *b) for n in CLASSES for b in BROKEN] + [
    (n, *b) for n in ("demon-sgd", "demon-adam") for b in DEMON_BROKEN
]


@pytest.mark.parametrize(
    ("name", "key", "value", "message"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES]
)
def test_loaded_hyperparameters_are_validated_as_arguments(name, key, value, message):
    opt, params = trained(MAKERS[name])
    saved = copy.deepcopy(opt.state_dict())
    saved["param_groups"][0][key] = value
    before = snapshot(opt, params)
    with pytest.raises(ConfigError) as info:
        opt.load_state_dict(saved)
    assert str(info.value).startswith(message)
    assert_same(snapshot(opt, params), before)


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_tensor_of_another_shape_refused(name):
    opt, params = trained(MAKERS[name])
    other, _ = trained(lambda ps: MAKERS[name]([ps[1], ps[0]]))  # shapes swapped
    before = snapshot(opt, params)
    with pytest.raises(ConfigError, match=r"^state_dict state\[0\]\.\w+: got 'a tensor of shape"):
        opt.load_state_dict(other.state_dict())
    assert_same(snapshot(opt, params), before)


def test_state_dict_with_other_group_count_refused():
    opt, params = trained(MAKERS["demon-sgd"])
    other = DemonSGD([{"params": [params[0]]}, {"params": [params[1]]}], total_steps=5)
    with pytest.raises(ConfigError, match=r"^state_dict param_groups: got 2; allowed: 1 groups"):
        opt.load_state_dict(other.state_dict())


@pytest.mark.parametrize("cls", [DemonSGD, DemonAdam])
def test_loaded_total_steps_wins_and_warns_once(cls):
    p = torch.nn.Parameter(torch.zeros(3))
    saved = cls([p], total_steps=1000).state_dict()
    opt = cls([p], total_steps=500)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.load_state_dict(saved)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "1000" in message and "500" in message and "total_steps" in message
    assert opt.param_groups[0]["total_steps"] == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.load_state_dict(saved)  # the same total_steps: no warning


def test_qhadam_state_dict_from_before_compiled_loads():
    opt, _ = trained(MAKERS["qhadam"])
    saved = copy.deepcopy(opt.state_dict())
    del saved["param_groups"][0]["compiled"]
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["compiled"] is False
    opt.step()


# --- MomentumScheduler.load_state_dict ---------------------------------------------------------


def scheduled():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = MomentumScheduler(opt, "demon", total_steps=100)
    for _ in range(3):
        opt.step()
        sched.step()
    return opt, sched


SCHED_BROKEN = [
    ("last_step", -2, "state_dict last_step: got -2"),
    ("total_steps", ["x"], "state_dict total_steps[0]: got 'x'"),
    ("total_steps", [10**30], "state_dict total_steps[0]: got 10"),
    ("total_steps", [100, 100], "state_dict total_steps: got [100, 100]; allowed: a list of 1"),
    ("keys", ["nope"], "state_dict keys[0]: got 'nope'; allowed: "),
    ("initial_momentum", [1.5], "state_dict initial_momentum[0]: got 1.5"),
    ("initial_momentum", [math.nan], "state_dict initial_momentum[0]: got nan"),
]


@pytest.mark.parametrize(
    ("key", "value", "message"), SCHED_BROKEN, ids=[f"{k}-{v}" for k, v, _ in SCHED_BROKEN]
)
def test_scheduler_state_dict_is_validated_and_nothing_changes(key, value, message):
    opt, sched = scheduled()
    saved = copy.deepcopy(sched.state_dict())
    saved[key] = value
    before = (copy.deepcopy(sched.state_dict()), copy.deepcopy(opt.param_groups[0]["momentum"]))
    with pytest.raises(ConfigError) as info:
        sched.load_state_dict(saved)
    assert str(info.value).startswith(message)
    assert (sched.state_dict(), opt.param_groups[0]["momentum"]) == before
    sched.step()


def test_scheduler_refuses_another_schedulers_state_dict():
    opt, sched = scheduled()
    lr = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    with pytest.raises(ConfigError, match=r"^state_dict: missing 'last_step'.*MomentumScheduler"):
        sched.load_state_dict(lr.state_dict())
    assert sched.last_step == 3


def test_scheduler_loaded_total_steps_wins_and_warns():
    opt, sched = scheduled()
    saved = sched.state_dict()
    fresh = MomentumScheduler(opt, "demon", total_steps=50)
    with pytest.warns(UserWarning, match=r"total_steps=\[100\].*\[50\]"):
        fresh.load_state_dict(saved)
    assert fresh.total_steps == [100] and fresh.last_step == 3
    assert opt.param_groups[0]["momentum"] == schedules.demon(3, 100, 0.9)


# --- 5. bounds ---------------------------------------------------------------------------------

INF, NAN = math.inf, math.nan
BOUNDS = [  # (class, arguments, field, shown)
    (DemonSGD, {"lr": INF}, "lr", "inf"),
    (DemonSGD, {"lr": torch.tensor(INF)}, "lr", "inf"),
    (DemonSGD, {"lr": NAN}, "lr", "nan"),
    (DemonSGD, {"weight_decay": INF}, "weight_decay", "inf"),
    (DemonSGD, {"dampening": INF}, "dampening", "inf"),
    (DemonSGD, {"momentum": NAN}, "momentum", "nan"),
    (DemonSGD, {"delay": NAN}, "delay", "nan"),
    (DemonSGD, {"total_steps": 10**30}, "total_steps", str(10**30)),
    (DemonSGD, {"total_steps": 2**53 + 1}, "total_steps", str(2**53 + 1)),
    (DemonSGD, {"nesterov": "yes"}, "nesterov", "'yes'"),
    (DemonAdam, {"lr": INF}, "lr", "inf"),
    (DemonAdam, {"eps": INF}, "eps", "inf"),
    (DemonAdam, {"eps": NAN}, "eps", "nan"),
    (DemonAdam, {"weight_decay": INF}, "weight_decay", "inf"),
    (DemonAdam, {"betas": (0.9, NAN)}, "betas[1]", "nan"),
    (DemonAdam, {"damped": "False"}, "damped", "'False'"),
    (DemonAdamW, {"lr": INF}, "lr", "inf"),
    (QHM, {"lr": INF}, "lr", "inf"),
    (QHM, {"nu": NAN}, "nu", "nan"),
    (QHM, {"weight_decay": INF}, "weight_decay", "inf"),
    (QHAdam, {"lr": INF}, "lr", "inf"),
    (QHAdam, {"eps": INF}, "eps", "inf"),
    (QHAdam, {"nus": (INF, 1.0)}, "nus[0]", "inf"),
    (AggMo, {"lr": INF}, "lr", "inf"),
    (AggMo, {"betas": (0.0, NAN)}, "betas[1]", "nan"),
    (YellowFin, {"lr": INF}, "lr", "inf"),
    (YellowFin, {"initial_lr": INF}, "initial_lr", "inf"),
    (YellowFin, {"eps": INF}, "eps", "inf"),
]
DEMON = (DemonSGD, DemonAdam, DemonAdamW)


@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "shown"),
    BOUNDS,
    ids=[f"{c.__name__}-{f}-{i}" for i, (c, _, f, _) in enumerate(BOUNDS)],
)
def test_non_finite_and_out_of_range_hyperparameters_refused(cls, kwargs, field, shown):
    extra = {"total_steps": 10} if cls in DEMON else {}
    with pytest.raises(ConfigError) as info:
        cls([torch.nn.Parameter(torch.zeros(1))], **{**extra, **kwargs})
    message = str(info.value)
    assert message.startswith(f"{field}: got ") and shown in message and "allowed" in message


@pytest.mark.parametrize("cls", [DemonSGD, DemonAdam, DemonAdamW, QHM, QHAdam, AggMo, YellowFin])
def test_zero_lr_stays_allowed(cls):
    extra = {"total_steps": 2**53} if cls in DEMON else {}
    p = torch.nn.Parameter(torch.ones(2))
    opt = cls([p], lr=0.0, **extra)
    p.grad = torch.ones(2)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(2))


def test_schedules_bound_total_steps_and_refuse_infinite_values():
    assert schedules.check_total_steps(2**53) == 2**53
    with pytest.raises(ConfigError, match=r"^total_steps: got 9007199254740993; allowed: "):
        schedules.check_total_steps(2**53 + 1)
    with pytest.raises(ConfigError, match=r"^init: got inf"):
        schedules.linear(0, 10, math.inf)
    with pytest.raises(ConfigError, match=r"^rate: got inf"):
        schedules.exponential(0, 10, 0.9, rate=math.inf)
    with pytest.raises(ConfigError, match=r"^total_steps: got"):
        MomentumScheduler(
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9),
            total_steps=10**30,
        )
