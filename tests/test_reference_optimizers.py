"""QHM, QHAdam, AggMo and YellowFin against float64 references, torch, and themselves."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from demon_optim import ConfigError, MomentumScheduler
from demon_optim.optim import QHM, AggMo, QHAdam, YellowFin
from demon_optim.optim import qhadam as qhadam_module
from tests import reference as ref
from tests import reference_others as ro
from tests.conftest import DEVICES, cuda_only
from tests.test_optimizers import tolerance

SHAPES = [(37,), (5, 4), (64,)]
MEMBERS = [[0, 1], [2]]  # parameter indices of the two groups
STEPS = 300

YF_LEGACY = {  # YellowFin's options before the authors' safeguards were added
    "slow_start": False,
    "adapt_clip": False,
    "restart_at_zero_momentum": False,
}

# One table drives the generic tests: name -> (kind, options applied to both groups).
CONFIGS = {
    "qhm": ("qhm", {}),
    "qhm-wd": ("qhm", {"weight_decay": 1e-2}),
    "qhm-nu0": ("qhm", {"nu": 0.0}),
    "qhm-nu1": ("qhm", {"nu": 1.0}),
    "qhm-beta0": ("qhm", {"momentum": 0.0, "weight_decay": 1e-2}),
    "qhadam": ("qhadam", {}),
    "qhadam-adam": ("qhadam", {"nus": (1.0, 1.0)}),
    "qhadam-nu2": ("qhadam", {"nus": (0.7, 0.9)}),
    "qhadam-nu1-0": ("qhadam", {"nus": (0.0, 1.0)}),
    "qhadam-beta1-0": ("qhadam", {"betas": (0.0, 0.999)}),
    "qhadam-wd": ("qhadam", {"weight_decay": 1e-2}),
    "qhadam-decoupled": ("qhadam", {"weight_decay": 1e-1, "decoupled_weight_decay": True}),
    "aggmo": ("aggmo", {}),
    "aggmo-wd": ("aggmo", {"weight_decay": 1e-2}),
    "aggmo-single": ("aggmo", {"betas": (0.9,), "weight_decay": 1e-3}),
    "yellowfin": ("yellowfin", {"beta": 0.9, "curv_win_width": 10}),
    "yellowfin-defaults": ("yellowfin", {}),
    "yellowfin-raw": ("yellowfin", {"smooth": False, "beta": 0.9, "weight_decay": 1e-2}),
    "yellowfin-nodebias": (
        "yellowfin",
        {"zero_debias": False, "beta": 0.95, "initial_lr": 1.0, "initial_momentum": 0.5},
    ),
    # the authors' PyTorch code: raw tuned values; and the tuner before its safeguards
    "yellowfin-authors": ("yellowfin", {"smooth": False, "initial_lr": 0.1, "beta": 0.9}),
    "yellowfin-legacy": ("yellowfin", {"initial_lr": 1e-3, **YF_LEGACY}),
    "yellowfin-sparsity": ("yellowfin", {"sparsity_debias": True, "curv_win_width": 5}),
}
NAMES = list(CONFIGS)

# Per-group settings: the two groups differ in every hyperparameter a group may set.
GROUPS = {
    "qhm": [
        {"lr": 0.5, "momentum": 0.9, "nu": 0.7},
        {"lr": 0.2, "momentum": 0.99, "nu": 0.5},
    ],
    "qhadam": [
        {"lr": 0.01, "betas": (0.9, 0.999), "nus": (0.7, 1.0)},
        {"lr": 0.003, "betas": (0.995, 0.99), "nus": (0.8, 1.0)},
    ],
    "aggmo": [
        {"lr": 0.01, "betas": (0.0, 0.9, 0.99)},
        {"lr": 0.005, "betas": (0.5, 0.95)},
    ],
    "yellowfin": [{"lr": 1.0}, {"lr": 0.5}],
}
GROUP_KEYS = {"lr", "momentum", "nu", "betas", "nus", "weight_decay", "maximize"}
YF_GROUP_KEYS = {"lr", "weight_decay", "maximize"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: with more threads torch's fused kernels only add parallel
    regions, which on a busy machine wait for a time slice each (seconds per test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def initial_params(dtype: torch.dtype, device: str = "cpu") -> list[torch.nn.Parameter]:
    """The same values on every device (drawn on the CPU, then moved)."""
    gen = torch.Generator().manual_seed(0)
    return [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).to(device))
        for s in SHAPES
    ]


def group_settings(kind: str, options: dict) -> list[dict]:
    keys = YF_GROUP_KEYS if kind == "yellowfin" else GROUP_KEYS
    shared = {k: v for k, v in options.items() if k in keys}
    return [{**g, **shared} for g in GROUPS[kind]]


def build(kind: str, options: dict, params, fused):
    groups = [
        {"params": [params[i] for i in idx], **settings}
        for idx, settings in zip(MEMBERS, group_settings(kind, options), strict=True)
    ]
    if kind == "yellowfin":
        rest = {k: v for k, v in options.items() if k not in YF_GROUP_KEYS}
        return YellowFin(groups, fused=fused, **rest)
    rest = {k: v for k, v in options.items() if k not in GROUP_KEYS}
    cls = {"qhm": QHM, "qhadam": QHAdam, "aggmo": AggMo}[kind]
    return cls(groups, fused=fused, **rest)


def reference_groups(kind: str, options: dict):
    settings = group_settings(kind, options)
    if kind == "qhm":
        return [ro.QHMGroup(**s) for s in settings]
    if kind == "qhadam":
        groups = []
        for s in settings:
            (b1, b2), (n1, n2) = s["betas"], s["nus"]
            extra = {
                ("decoupled" if k == "decoupled_weight_decay" else k): v
                for k, v in {**options, **s}.items()
                if k in ("eps", "weight_decay", "decoupled_weight_decay", "maximize")
            }
            groups.append(ro.QHAdamGroup(s["lr"], b1, b2, n1, n2, **extra))
        return groups
    if kind == "aggmo":
        return [ro.AggMoGroup(**s) for s in settings]
    return [ro.YellowFinGroup(**s) for s in settings]


def yellowfin_tuner(options: dict) -> ro.YellowFinTuner:
    names = {
        "curv_win_width": "width",
        "initial_lr": "alpha",
        "initial_momentum": "mu",
        "restart_at_zero_momentum": "restart",
    }
    kw = {names.get(k, k): v for k, v in options.items() if k not in YF_GROUP_KEYS}
    return ro.YellowFinTuner(**kw)


STEP_FNS = {"qhm": ro.qhm_step, "qhadam": ro.qhadam_step, "aggmo": ro.aggmo_step}


def run_reference(kind, options, steps=STEPS, before_step=None):
    params = {
        i: p.detach().double().flatten().numpy().copy()
        for i, p in enumerate(initial_params(torch.float64))
    }
    groups = reference_groups(kind, options)
    tuner = yellowfin_tuner(options) if kind == "yellowfin" else None
    for k in range(steps):
        if before_step is not None:
            before_step(groups, k)
        grads = {
            i: ref.quadratic_grad(params[i], k, i) if ref.has_grad(k, i) else None for i in params
        }
        subs = [{i: params[i] for i in idx} for idx in MEMBERS]
        sub_grads = [{i: grads[i] for i in idx} for idx in MEMBERS]
        if tuner is not None:
            ro.yellowfin_step(tuner, groups, subs, sub_grads)
        else:
            for group, sub, sub_g in zip(groups, subs, sub_grads, strict=True):
                STEP_FNS[kind](group, sub, sub_g)
        for sub in subs:
            params.update(sub)
    return [params[i] for i in range(len(SHAPES))], tuner


def set_grads(params, k: int, sign: float = 1.0) -> None:
    for i, p in enumerate(params):
        if ref.has_grad(k, i):
            g = ref.quadratic_grad(p.detach().cpu().double().flatten().numpy(), k, i)
            p.grad = (sign * torch.from_numpy(g)).reshape(p.shape).to(p.dtype).to(p.device)
        else:
            p.grad = None


def train(opt, params, start=0, stop=STEPS, sign=1.0, after_step=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(start, stop):
            set_grads(params, k, sign)
            opt.step()
            if after_step is not None:
                after_step()
    return opt


def flat(params):
    return [p.detach().cpu().double().flatten().numpy().copy() for p in params]


def close_to_reference(got, expected, tol):
    return max(ref.relative_error(g, e) for g, e in zip(got, expected, strict=True)) < tol


# --- the float64 references ------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["f64", "f32"]
)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_float64_reference(name, dtype, tol, fused, device):
    tol = tolerance(dtype, tol, device)
    kind, options = CONFIGS[name]
    expected, tuner = run_reference(kind, options)
    params = initial_params(dtype, device)
    opt = train(build(kind, options, params, fused), params)
    assert close_to_reference(flat(params), expected, tol)
    if tuner is not None:  # the tuned values themselves
        assert opt.get_last_momentum()[0] == pytest.approx(tuner.mu, rel=tol, abs=1e-12)
        assert opt.get_last_lr()[1] == pytest.approx(0.5 * tuner.alpha, rel=tol)


def test_references_move():
    """The configurations exercise what they claim: QH differs from momentum, tuning moves."""
    qhm, _ = run_reference("qhm", {})
    qhm1, _ = run_reference("qhm", {"nu": 1.0})
    assert max(ref.relative_error(a, b) for a, b in zip(qhm, qhm1, strict=True)) > 1e-3
    _, tuner = run_reference("yellowfin", {"beta": 0.9, "curv_win_width": 10})
    assert 0.0 < tuner.mu < 1.0 and tuner.alpha != 1.0


# --- exact special cases -------------------------------------------------------------------


def run_single(make, steps=250, dtype=torch.float32, sign=1.0, device="cpu"):
    params = initial_params(dtype, device)
    opt = make(params)
    train(opt, params, stop=steps, sign=sign)
    return [p.detach().clone() for p in params], opt


def assert_bitwise(a, b):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


class EMAMomentumSGD(torch.optim.Optimizer):
    """Momentum SGD in EMA form, from a zero buffer: b = beta b + (1 - beta) g; theta -= lr b."""

    def __init__(self, params, lr, momentum, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(beta).add_(g, alpha=1 - beta)
                p.add_(buf, alpha=-group["lr"])


SGD_VARIANTS = [{}, {"weight_decay": 1e-2}, {"maximize": True, "weight_decay": 1e-3}]
SGD_IDS = ["plain", "wd", "max-wd"]


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("options", SGD_VARIANTS, ids=SGD_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_qhm_nu0_is_plain_sgd(options, fused, device):
    """Bitwise on both paths: nu = 0 always takes the for-loop (it keeps the buffer too)."""
    ours, _ = run_single(
        lambda p: QHM(p, lr=0.05, momentum=0.9, nu=0.0, fused=fused, **options), device=device
    )
    theirs, _ = run_single(
        lambda p: torch.optim.SGD(p, lr=0.05, foreach=False, **options), device=device
    )
    assert_bitwise(ours, theirs)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("device", DEVICES)
def test_qhm_nu1_is_ema_momentum_sgd(weight_decay, device):
    """Bitwise on the for-loop; to float rounding on the fused path and vs torch SGD."""

    def ours(fused):
        return lambda p: QHM(
            p, lr=0.5, momentum=0.9, nu=1.0, weight_decay=weight_decay, fused=fused
        )

    ema, _ = run_single(lambda p: EMAMomentumSGD(p, 0.5, 0.9, weight_decay), device=device)
    loop, _ = run_single(ours(False), device=device)
    assert_bitwise(loop, ema)
    fused, _ = run_single(ours(True), device=device)
    # torch's b' = beta b' + g from b' = 0 is b / (1 - beta): the same steps with lr (1 - beta)
    torch_sgd, _ = run_single(
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=weight_decay),
        device=device,
    )
    for other in (fused, torch_sgd):
        for a, b in zip(other, ema, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


ADAM_VARIANTS = [
    ({}, torch.optim.Adam, {}),
    ({"weight_decay": 1e-2}, torch.optim.Adam, {"weight_decay": 1e-2}),
    ({"maximize": True}, torch.optim.Adam, {"maximize": True}),
    (
        {"weight_decay": 1e-1, "decoupled_weight_decay": True},
        torch.optim.AdamW,
        {"weight_decay": 1e-1},
    ),
]


@pytest.mark.parametrize(
    ("options", "torch_cls", "torch_options"), ADAM_VARIANTS, ids=["plain", "wd", "max", "adamw"]
)
@pytest.mark.parametrize("device", DEVICES)
def test_qhadam_nus_one_is_torch_adam(options, torch_cls, torch_options, device):
    """Bitwise on the for-loop; the fused path folds the bias corrections: float rounding."""

    def ours(fused):
        return lambda p: QHAdam(p, lr=3e-3, nus=(1.0, 1.0), fused=fused, **options)

    theirs, _ = run_single(
        lambda p: torch_cls(p, lr=3e-3, foreach=False, **torch_options), device=device
    )
    loop, _ = run_single(ours(False), device=device)
    assert_bitwise(loop, theirs)
    fused, _ = run_single(ours(True), device=device)
    for a, b in zip(fused, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", SGD_VARIANTS, ids=SGD_IDS)
@pytest.mark.parametrize(
    ("fused", "torch_impl"),
    [(False, {"foreach": False}), (True, {"fused": True})],
    ids=["loop", "fused"],
)
@pytest.mark.parametrize("device", DEVICES)
def test_aggmo_single_beta_is_torch_sgd(options, fused, torch_impl, device):
    """Torch's convention b = beta b + g (first b = g), theta -= lr b: bitwise, both paths."""
    ours, _ = run_single(
        lambda p: AggMo(p, lr=0.05, betas=(0.9,), fused=fused, **options), device=device
    )
    theirs, _ = run_single(
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, **torch_impl, **options),
        device=device,
    )
    assert_bitwise(ours, theirs)


MAKERS = {
    "qhm": lambda p, f: QHM(p, lr=0.5, momentum=0.9, nu=0.7, weight_decay=1e-2, fused=f),
    "qhadam": lambda p, f: QHAdam(
        p, lr=3e-3, betas=(0.95, 0.999), nus=(0.7, 1.0), weight_decay=1e-2, fused=f
    ),
    "aggmo": lambda p, f: AggMo(p, lr=0.01, weight_decay=1e-2, fused=f),
    "yellowfin": lambda p, f: YellowFin(p, beta=0.9, weight_decay=1e-2, fused=f),
}


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_maximize_on_negated_gradients_is_minimize(kind, fused):
    make = MAKERS[kind]
    ours, _ = run_single(lambda p: make(p, fused), steps=100)
    params = initial_params(torch.float32)
    opt = make(params, fused)
    for group in opt.param_groups:
        group["maximize"] = True
    train(opt, params, stop=100, sign=-1.0)
    assert_bitwise(ours, [p.detach() for p in params])


@pytest.mark.parametrize("kind", list(MAKERS))
@pytest.mark.parametrize("device", DEVICES)
def test_fused_and_loop_paths_agree(kind, device):
    a, _ = run_single(lambda p: MAKERS[kind](p, False), dtype=torch.float64, device=device)
    b, _ = run_single(lambda p: MAKERS[kind](p, True), dtype=torch.float64, device=device)
    for x, y in zip(a, b, strict=True):
        assert ref.relative_error(x.cpu().numpy(), y.cpu().numpy()) < 1e-12


# --- save, load, continue --------------------------------------------------------------------


def save_load(opt, params, kind, options, fused):
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    fresh = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    opt2 = build(kind, options, fresh, fused)
    opt2.load_state_dict(saved["opt"])
    return opt2, fresh


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_save_load_continue_is_uninterrupted(name, fused):
    kind, options = CONFIGS[name]
    straight_params = initial_params(torch.float32)
    train(build(kind, options, straight_params, fused), straight_params)

    params = initial_params(torch.float32)
    opt = train(build(kind, options, params, fused), params, stop=150)
    opt2, fresh = save_load(opt, params, kind, options, fused)
    train(opt2, fresh, start=150)
    for a, b in zip(flat(straight_params), flat(fresh), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["qhm", "qhadam", "aggmo", "yellowfin"])
def test_checkpoint_moves_between_paths(name):
    """Both paths keep the same state: save on the fused path, continue on the for-loop."""
    kind, options = CONFIGS[name]
    expected, _ = run_reference(kind, options)
    params = initial_params(torch.float64)
    opt = train(build(kind, options, params, True), params, stop=150)
    opt2, fresh = save_load(opt, params, kind, options, False)
    train(opt2, fresh, start=150)
    assert close_to_reference(flat(fresh), expected, 1e-10)


# --- MomentumScheduler on them -----------------------------------------------------------------

T = 200  # shorter than STEPS: the schedule reaches 0 and stays there


def scheduled(kind, options, fused, dtype=torch.float64, device="cpu"):
    params = initial_params(dtype, device)
    opt = build(kind, options, params, fused)
    sched = MomentumScheduler(opt, "demon", total_steps=T)
    train(opt, params, after_step=sched.step)
    return flat(params), opt


def demon(k: int, beta_init: float) -> float:
    return ref.demon_beta(min(k, T), T, beta_init)


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("device", DEVICES)
def test_scheduler_moves_qhm_momentum(fused, device):
    inits = [g["momentum"] for g in GROUPS["qhm"]]

    def move(groups, k):
        for group, beta in zip(groups, inits, strict=True):
            group.momentum = demon(k, beta)

    expected, _ = run_reference("qhm", {}, before_step=move)
    got, opt = scheduled("qhm", {}, fused, device=device)
    assert close_to_reference(got, expected, 1e-10)
    assert [g["momentum"] for g in opt.param_groups] == [0.0, 0.0]


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("device", DEVICES)
def test_scheduler_moves_qhadam_beta1_with_exact_bias_correction(fused, device):
    inits = [g["betas"][0] for g in GROUPS["qhadam"]]

    def move(groups, k):
        for group, beta in zip(groups, inits, strict=True):
            group.beta1 = demon(k, beta)

    expected, _ = run_reference("qhadam", {}, before_step=move)
    got, opt = scheduled("qhadam", {}, fused, device=device)
    assert close_to_reference(got, expected, 1e-10)
    assert opt.param_groups[1]["betas"] == (0.0, 0.99)


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("device", DEVICES)
def test_scheduler_applies_demon_to_every_aggmo_beta(fused, device):
    inits = [g["betas"] for g in GROUPS["aggmo"]]

    def move(groups, k):
        for group, betas in zip(groups, inits, strict=True):
            group.betas = tuple(demon(k, b) for b in betas)

    expected, _ = run_reference("aggmo", {}, before_step=move)
    got, opt = scheduled("aggmo", {}, fused, device=device)
    assert close_to_reference(got, expected, 1e-9)
    # mid-run: each applied beta is Demon's schedule of that beta
    params = initial_params(torch.float64, device)
    opt = build("aggmo", {}, params, fused)
    sched = MomentumScheduler(opt, "demon", total_steps=T)
    train(opt, params, stop=120, after_step=sched.step)
    for applied, betas in zip(opt.get_last_betas(), inits, strict=True):
        assert applied == pytest.approx([demon(120, b) for b in betas], rel=1e-12, abs=1e-15)
    assert opt.param_groups[0]["betas"] == (0.0, 0.9, 0.99)  # the user's values stay


def test_scheduler_refuses_yellowfin_with_its_keys():
    opt = YellowFin([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ConfigError, match=r"keys: .*lr"):
        MomentumScheduler(opt, "demon", total_steps=10)


# --- AggMo's buffers are kept by index ------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
def test_aggmo_changing_a_beta_keeps_its_buffer(fused):
    """The original code keyed buffers by beta value: a new value meant a zero buffer."""
    new_betas = [(0.0, 0.8, 0.99), (0.6, 0.95)]

    def change(groups, k):
        if k == 50:
            for group, betas in zip(groups, new_betas, strict=True):
                group.betas = betas

    expected, _ = run_reference("aggmo", {}, steps=100, before_step=change)
    params = initial_params(torch.float64)
    opt = build("aggmo", {}, params, fused)
    train(opt, params, stop=50)
    for group, betas in zip(opt.param_groups, new_betas, strict=True):
        group["betas"], group["momentum"] = betas, max(betas)
    train(opt, params, start=50, stop=100)
    assert close_to_reference(flat(params), expected, 1e-10)


def test_aggmo_number_of_betas_is_fixed_once_started():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = AggMo([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    opt.param_groups[0]["betas"] = (0.0, 0.9)
    with pytest.raises(ConfigError, match=r"^betas: got \(0.0, 0.9\); allowed: 3 values"):
        opt.step()


# --- YellowFin's tuner against the paper's formulas -------------------------------------------


EPS = 1e-12  # the tuner's eps in these tests (the authors' 1e-6 would blur the formulas)


def cubic_root(p: float) -> float:
    """The root in [0, 1] of (1 - x)^3 = p x, found independently (numpy's polynomial roots)."""
    roots = np.roots([-1.0, 3.0, -3.0 - p, 1.0])  # (1-x)^3 - p x
    real = [r.real for r in roots if abs(r.imag) < 1e-9 and -1e-12 <= r.real <= 1 + 1e-12]
    assert len(real) == 1
    return real[0]


def debiased_ema(values: list[float], beta: float) -> float:
    """sum_s (1 - beta) beta^(t-s) values[s] / (1 - beta^(t+1)), written as one weighted sum."""
    t = len(values) - 1
    weights = (1 - beta) * beta ** (t - np.arange(t + 1))
    return float(np.dot(weights, values) / (1 - beta ** (t + 1)))


def expected_tuning(gradients: list[np.ndarray], beta: float, width: int, eps: float = EPS):
    """(mu*, alpha*, branch) after each step from 1 on, from the paper's definitions.

    The tests run the tuner with eps = 1e-12 instead of the authors' 1e-6, which makes their
    guards (on h_min, h_max, D, C and in Vieta's formula) vanish to rounding; the guards kept
    here are the ones that stay visible (the window's log(h + eps), the clamp C >= eps).
    """
    h = [float(g @ g) for g in gradients]
    out = []
    for t in range(1, len(gradients)):
        window = h[max(0, t - width + 1) : t + 1]
        log_min = [math.log(min(h[max(0, s - width + 1) : s + 1]) + eps) for s in range(t + 1)]
        log_max = [math.log(max(h[max(0, s - width + 1) : s + 1]) + eps) for s in range(t + 1)]
        assert min(window) + eps == pytest.approx(math.exp(log_min[-1]))
        h_min = math.exp(debiased_ema(log_min, beta))
        h_max = math.exp(debiased_ema(log_max, beta))
        mean = sum((1 - beta) * beta ** (t - s) * gradients[s] for s in range(t + 1))
        mean = mean / (1 - beta ** (t + 1))
        variance = max(debiased_ema(h[: t + 1], beta) - float(mean @ mean), eps)
        norms = [math.sqrt(x) for x in h[: t + 1]]
        # the inner ratio takes the EMAs without debiasing (their common factor cancels; the
        # authors' eps is added to the undebiased one)
        ratios = [
            debiased_ema(norms[: s + 1], beta)
            / (debiased_ema(h[: s + 1], beta) + eps / (1 - beta ** (s + 1)))
            for s in range(t + 1)
        ]
        distance = debiased_ema(ratios, beta)
        p = (distance + eps) ** 2 * (h_min + eps) ** 2 / 2 / (variance + eps)
        root = cubic_root(p)
        ratio = math.sqrt((h_max + eps) / (h_min + eps))
        bound = ((ratio - 1) / (ratio + 1)) ** 2
        mu = max(root**2, bound)
        alpha = (1 - math.sqrt(mu)) ** 2 / (h_min + eps)
        out.append((mu, alpha, "root" if root**2 > bound else "bound"))
    return out


def tune_on(gradients, fused, device="cpu", **options):
    p = torch.nn.Parameter(torch.zeros(gradients[0].size, dtype=torch.float64, device=device))
    # the paper's formulas alone: without the authors' slow start and clipping
    opt = YellowFin(
        [p], smooth=False, eps=EPS, fused=fused, initial_lr=1e-3, **YF_LEGACY, **options
    )
    seen = []
    for g in gradients:
        p.grad = torch.from_numpy(g.copy()).to(device)
        opt.step()
        seen.append((opt.get_last_momentum()[0], opt.get_last_lr()[0]))
    return seen, opt


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
def test_yellowfin_noiseless_single_curvature_gives_gradient_descent(fused):
    """A constant gradient (no noise, one curvature h = ||g||^2): mu -> 0, alpha = 1/h_min."""
    g = np.array([1.5, -0.5, 1.0])
    h = float(g @ g)
    seen, opt = tune_on([g] * 40, fused, beta=0.9)
    assert seen[0] == (0.0, 1e-3)  # the initial values until the tuner has two gradients
    expected = expected_tuning([g] * 40, 0.9, 20)
    for (mu, lr), (mu_e, _, _) in zip(seen[1:], expected, strict=True):
        assert mu < 1e-18 and mu_e < 1e-18  # x ~ 1/p with p = h / (4 eps): no momentum
        # gradient descent with step 1 / h (Vieta cancels to ~1e-9 when the root is ~1e-12)
        assert lr == pytest.approx(1 / h, rel=1e-8)
    assert opt.tuner["h_min"] == pytest.approx(h, rel=1e-12)
    assert opt.tuner["h_max"] == pytest.approx(h, rel=1e-12)
    assert opt.tuner["grad_var"] == EPS  # no variance: clamped at eps


U = np.array([1.0, -2.0, 0.5, 0.25])
W = np.array([0.5, 0.5, -1.0, 2.0])
PRESCRIBED = {  # noiseless gradient sequences: (gradients, beta, window width)
    # a sawtooth of curvatures 1..100 |u|^2 along one direction: both branches of the max
    "sawtooth": ([(1.0 + t % 10) * U for t in range(60)], 0.5, 7),
    # two curvature levels and two directions: the cubic's root throughout
    "two-directions": (
        [(3.0 if t % 3 == 0 else 1.0) * (U if t % 2 else W) for t in range(60)],
        0.95,
        7,
    ),
}


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("name", list(PRESCRIBED))
@pytest.mark.parametrize("device", DEVICES)
def test_yellowfin_tuning_matches_the_formulas(name, fused, device):
    """Prescribed gradients: the tuned (mu, alpha) equal SingleStep's formulas computed here
    from the definitions (weighted sums, numpy's polynomial roots for the cubic)."""
    gradients, beta, width = PRESCRIBED[name]
    seen, _ = tune_on(gradients, fused, device, beta=beta, curv_win_width=width)
    expected = expected_tuning(gradients, beta=beta, width=width)
    for (mu, lr), (mu_e, lr_e, _) in zip(seen[1:], expected, strict=True):
        assert mu == pytest.approx(mu_e, rel=1e-9)
        assert lr == pytest.approx(lr_e, rel=1e-9)
    branches = {branch for _, _, branch in expected}
    assert branches == ({"root", "bound"} if name == "sawtooth" else {"root"})


def test_yellowfin_lr_is_a_factor_that_lr_schedulers_move():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = YellowFin([p], lr=0.5, initial_lr=0.2, initial_momentum=0.3)
    assert opt.get_last_lr() == [0.1] and opt.get_last_momentum() == [0.3]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    assert opt.get_last_lr() == [pytest.approx(0.05 * 0.2)]
    assert torch.allclose(p.detach(), torch.full((3,), -0.1))  # step 0: lr 0.5 * 0.2, mu 0.3


def test_yellowfin_state_dict_carries_the_tuner():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = YellowFin([p], beta=0.9, curv_win_width=3)
    for k in range(5):
        p.grad = torch.full((3,), float(k + 1))
        opt.step()
    saved = opt.state_dict()
    fresh = YellowFin([torch.nn.Parameter(torch.zeros(3))])
    fresh.load_state_dict(saved)
    assert fresh.tuner == opt.tuner
    assert fresh.tuner["curv_win_width"] == 3 and fresh.tuner["step"] == 5


# --- QHAdam's compiled one-pass update ------------------------------------------------------

QHADAM_NAMES = [name for name, (kind, _) in CONFIGS.items() if kind == "qhadam"]


@pytest.fixture
def compile_with(monkeypatch):
    """Compile QHAdam's one-pass update with the given dynamo backend, from a clean cache."""

    def use(backend) -> None:
        torch._dynamo.reset()
        compiled = torch.compile(qhadam_module._one_pass, fullgraph=True, backend=backend)
        monkeypatch.setattr(qhadam_module, "_compiled_one_pass", lambda: compiled)

    yield use
    torch._dynamo.reset()


@pytest.mark.parametrize("name", QHADAM_NAMES)
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_update_matches_float64_reference(name, compile_with, device):
    """Traced by dynamo and run through AOT autograd's graph (inductor's input), float64."""
    compile_with("aot_eager")
    kind, options = CONFIGS[name]
    expected, _ = run_reference(kind, options)
    params = initial_params(torch.float64, device)
    train(build(kind, {**options, "compiled": True}, params, None), params)
    assert close_to_reference(flat(params), expected, 1e-10)


@pytest.mark.skipif(
    shutil.which("g++") is None and os.environ.get("CI") != "true",
    reason="inductor needs a C++ compiler on the CPU",
)
def test_compiled_update_with_inductor_matches_float64_reference(compile_with):
    """The real thing, float32, on the general path (nu2 != 1, weight decay, groups whose
    parameters miss gradients on some steps, so several compilations)."""
    compile_with("inductor")
    options = {"nus": (0.7, 0.9), "weight_decay": 1e-2}
    expected, _ = run_reference("qhadam", options)
    params = initial_params(torch.float32)
    train(build("qhadam", {**options, "compiled": True}, params, None), params)
    assert close_to_reference(flat(params), expected, 2e-5)


@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="inductor needs triton on a GPU"
)
@pytest.mark.parametrize("options", [{}, {"nus": (0.7, 0.9), "weight_decay": 1e-2}])
@cuda_only
def test_compiled_update_with_inductor_on_cuda_matches_float64_reference(options, compile_with):
    """QHAdam(compiled=True) as a user gets it on a GPU: inductor's generated kernels, float32,
    the scalars on the device (no host sync per step)."""
    compile_with("inductor")
    expected, _ = run_reference("qhadam", options)
    params = initial_params(torch.float32, "cuda")
    train(build("qhadam", {**options, "compiled": True}, params, None), params)
    assert close_to_reference(flat(params), expected, tolerance(torch.float32, 2e-5, "cuda"))


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_update_does_not_recompile_as_schedules_move(compile_with, device):
    counter = CompileCounter()
    compile_with(counter)
    params = initial_params(torch.float32, device)
    opt = QHAdam(params, lr=1e-2, betas=(0.95, 0.999), nus=(0.7, 0.9), compiled=True)
    momentum = MomentumScheduler(opt, "demon", total_steps=40)
    lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    for k in range(40):
        for p in params:  # every parameter has a gradient: one list of tensors throughout
            p.grad = torch.full_like(p, math.sin(k))
        opt.step()
        momentum.step()
        lr.step()
    assert counter.frame_count == 1
    assert opt.state[params[0]]["step"] == 40


# --- bad input ---------------------------------------------------------------------------------

BAD = [  # (class, arguments, the field the message must start with, the value it must show)
    (QHM, {"lr": -0.1}, "lr", "-0.1"),
    (QHM, {"momentum": 1.0}, "momentum", "1.0"),
    (QHM, {"nu": 1.5}, "nu", "1.5"),
    (QHM, {"nu": -0.1}, "nu", "-0.1"),
    (QHM, {"weight_decay": -1}, "weight_decay", "-1"),
    (QHM, {"lr": float("nan")}, "lr", "nan"),
    (QHM, {"maximize": 1}, "maximize", "1"),
    (QHAdam, {"betas": (1.0, 0.999)}, "betas[0]", "1.0"),
    (QHAdam, {"betas": (0.9, -0.1)}, "betas[1]", "-0.1"),
    (QHAdam, {"betas": (0.9,)}, "betas", "(0.9,)"),
    (QHAdam, {"nus": (1.2, 1.0)}, "nus[0]", "1.2"),
    (QHAdam, {"nus": (0.7, "1")}, "nus[1]", "'1'"),
    (QHAdam, {"nus": 0.7}, "nus", "0.7"),
    (QHAdam, {"eps": -1e-8}, "eps", "-1e-08"),
    (QHAdam, {"weight_decay": -0.1}, "weight_decay", "-0.1"),
    (QHAdam, {"compiled": 1}, "compiled", "1"),
    (QHAdam, {"compiled": True, "fused": True}, "fused", "True"),
    (AggMo, {"betas": ()}, "betas", "()"),
    (AggMo, {"betas": (0.0, 0.9, 1.0)}, "betas[2]", "1.0"),
    (AggMo, {"betas": 0.9}, "betas", "0.9"),
    (AggMo, {"lr": -1.0}, "lr", "-1.0"),
    (YellowFin, {"beta": 1.0}, "beta", "1.0"),
    (YellowFin, {"curv_win_width": 0}, "curv_win_width", "0"),
    (YellowFin, {"curv_win_width": 2.5}, "curv_win_width", "2.5"),
    (YellowFin, {"initial_momentum": 1.0}, "initial_momentum", "1.0"),
    (YellowFin, {"initial_lr": -1.0}, "initial_lr", "-1.0"),
    (YellowFin, {"eps": 0.0}, "eps", "0.0"),
    (YellowFin, {"lr": -2.0}, "lr", "-2.0"),
    (YellowFin, {"zero_debias": "yes"}, "zero_debias", "'yes'"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "shown"),
    BAD,
    ids=[f"{c.__name__}-{f}-{i}" for i, (c, _, f, _) in enumerate(BAD)],
)
def test_bad_hyperparameters_name_the_argument_and_value(cls, kwargs, field, shown):
    with pytest.raises(ConfigError) as info:
        cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    message = str(info.value)
    assert message.startswith(f"{field}: got ")
    assert shown in message and "allowed" in message


@pytest.mark.parametrize("cls", [QHM, QHAdam, AggMo, YellowFin])
def test_bad_group_added_later_is_rejected(cls):
    opt = cls([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigError, match="lr: got -1"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": -1})


@pytest.mark.parametrize("cls", [QHM, QHAdam, AggMo, YellowFin])
def test_closure_is_evaluated_with_grad(cls):
    p = torch.nn.Parameter(torch.ones(2))
    opt = cls([p])

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(2.0)
    assert not torch.equal(p.detach(), torch.ones(2))
