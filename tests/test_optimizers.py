"""DemonSGD and DemonAdam against the float64 reference, torch, and themselves."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest
import torch

from demon_optim import DemonAdam, DemonAdamW, DemonSGD
from tests import reference as ref
from tests.conftest import DEVICES, cuda_only

SHAPES = [(37,), (5, 4), (64,)]
STEPS = 300  # past both groups' total_steps (100 and 250)
# float32 against the float64 reference on a GPU: the kernels may contract into fused
# multiply-adds, so allow more than the CPU's 2e-5 (which the CPU meets with 6x to spare)
CUDA_FLOAT32_TOL = 5e-5

# One table drives the generic tests: (name, optimizer class, group-A options, reference group)
SGD_CONFIGS = {
    "sgd": {},
    "sgd-nesterov": {"nesterov": True},
    "sgd-dampening-wd": {"dampening": 0.3, "weight_decay": 1e-2},
    "sgd-maximize": {"maximize": True, "weight_decay": 1e-3},
    "sgd-linear": {"schedule": "linear"},
}
ADAM_CONFIGS = {
    "adam": {},
    "adam-damped": {"damped": True},
    "adam-wd": {"weight_decay": 1e-2},
    "adam-decoupled": {"weight_decay": 1e-1, "decoupled_weight_decay": True},
    "adam-damped-decoupled": {"damped": True, "weight_decay": 1e-1, "decoupled_weight_decay": True},
    "adam-maximize": {"maximize": True},
}


def initial_params(dtype: torch.dtype, device: str = "cpu") -> list[torch.nn.Parameter]:
    """The same values on every device (drawn on the CPU, then moved)."""
    gen = torch.Generator().manual_seed(0)
    return [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).to(device))
        for s in SHAPES
    ]


def tolerance(dtype: torch.dtype, tol: float, device: str) -> float:
    """The CPU's tolerance; float32 on a GPU gets CUDA_FLOAT32_TOL."""
    if device != "cpu" and dtype == torch.float32:
        return max(tol, CUDA_FLOAT32_TOL)
    return tol


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().flatten().numpy()


def build(kind: str, options: dict, params: list[torch.nn.Parameter], fused: bool | None):
    """Two groups with different beta_init, total_steps and lr."""
    if kind == "sgd":
        groups = [
            {"params": params[:2], "lr": 0.05, "momentum": 0.9, "total_steps": 100},
            {"params": params[2:], "lr": 0.02, "momentum": 0.95, "total_steps": 250},
        ]
        return DemonSGD(groups, total_steps=1, fused=fused, **options)
    groups = [
        {"params": params[:2], "lr": 0.01, "betas": (0.9, 0.999), "total_steps": 100},
        {"params": params[2:], "lr": 0.003, "betas": (0.95, 0.99), "total_steps": 250},
    ]
    return DemonAdam(groups, total_steps=1, fused=fused, **options)


def reference_groups(kind: str, options: dict):
    if kind == "sgd":
        kw = {k: v for k, v in options.items()}
        return [ref.SGDGroup(0.05, 0.9, 100, **kw), ref.SGDGroup(0.02, 0.95, 250, **kw)]
    kw = {("decoupled" if k == "decoupled_weight_decay" else k): v for k, v in options.items()}
    return [ref.AdamGroup(0.01, 0.9, 0.999, 100, **kw), ref.AdamGroup(0.003, 0.95, 0.99, 250, **kw)]


def set_grads(params, k: int) -> None:
    for i, p in enumerate(params):
        if ref.has_grad(k, i):
            g = ref.quadratic_grad(as_numpy(p), k, i)
            p.grad = torch.from_numpy(g).reshape(p.shape).to(p.dtype).to(p.device)
        else:
            p.grad = None


def run_reference(kind: str, options: dict, steps: int) -> list[np.ndarray]:
    params = {
        i: p.detach().double().flatten().numpy().copy()
        for i, p in enumerate(initial_params(torch.float64))
    }
    groups = reference_groups(kind, options)
    members = [[0, 1], [2]]
    step_fn = ref.sgd_step if kind == "sgd" else ref.adam_step
    for k in range(steps):
        grads = {
            i: ref.quadratic_grad(params[i], k, i) if ref.has_grad(k, i) else None for i in params
        }
        for group, idx in zip(groups, members, strict=True):
            sub = {i: params[i] for i in idx}
            step_fn(group, k, sub, {i: grads[i] for i in idx})
            params.update(sub)
    return [params[i] for i in range(len(SHAPES))]


def run_optimizer(kind, options, dtype, fused, steps=STEPS, device="cpu"):
    params = initial_params(dtype, device)
    opt = build(kind, options, params, fused)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(steps):
            set_grads(params, k)
            opt.step()
    return [as_numpy(p) for p in params], opt


ALL = [("sgd", n, o) for n, o in SGD_CONFIGS.items()] + [
    ("adam", n, o) for n, o in ADAM_CONFIGS.items()
]


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-11), (torch.float32, 2e-5)], ids=["f64", "f32"]
)
@pytest.mark.parametrize(("kind", "name", "options"), ALL, ids=[n for _, n, _ in ALL])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_float64_reference(kind, name, options, dtype, tol, fused, device):
    tol = tolerance(dtype, tol, device)
    expected = run_reference(kind, options, STEPS)
    got, _ = run_optimizer(kind, options, dtype, fused, device=device)
    for e, g in zip(expected, got, strict=True):
        assert ref.relative_error(g, e) < tol


def test_reference_decays_momentum():
    """The reference itself must move: Demon ends with plain SGD, not a frozen momentum."""
    a = run_reference("sgd", {}, STEPS)
    b = run_reference("sgd", {"schedule": "constant"}, STEPS)
    assert max(ref.relative_error(x, y) for x, y in zip(a, b, strict=True)) > 1e-3


# --- exact equivalences -------------------------------------------------------------------


def train(make, steps=250, dtype=torch.float32, device="cpu"):
    params = initial_params(dtype, device)
    opt = make(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(steps):
            set_grads(params, k)
            opt.step()
    return [p.detach().clone() for p in params], opt


def assert_bitwise(a, b):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


SGD_OPTIONS = [
    {},
    {"nesterov": True},
    {"dampening": 0.5, "weight_decay": 1e-2},
    {"maximize": True, "weight_decay": 1e-3},
]


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=["plain", "nesterov", "damp-wd", "max"])
@pytest.mark.parametrize(
    ("fused", "torch_impl"),
    [(False, {"foreach": False}), (True, {"fused": True})],
    ids=["loop", "fused"],
)
@pytest.mark.parametrize("device", DEVICES)
def test_constant_schedule_is_torch_sgd(options, fused, torch_impl, device):
    ours, _ = train(
        lambda p: DemonSGD(
            p, lr=0.05, momentum=0.9, total_steps=100, schedule="constant", fused=fused, **options
        ),
        device=device,
    )
    theirs, _ = train(
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, **torch_impl, **options),
        device=device,
    )
    assert_bitwise(ours, theirs)


@pytest.mark.parametrize("device", DEVICES)
def test_constant_damped_demon_adam_is_torch_adam(device):
    def ours(fused):
        return lambda p: DemonAdam(
            p,
            lr=3e-3,
            total_steps=50,
            damped=True,
            schedule="constant",
            weight_decay=1e-2,
            fused=fused,
        )

    theirs, _ = train(
        lambda p: torch.optim.Adam(p, lr=3e-3, weight_decay=1e-2, foreach=False), device=device
    )
    loop, _ = train(ours(False), device=device)
    assert_bitwise(loop, theirs)
    # the fused path folds the bias corrections into lr and eps: equal up to float rounding
    fused, _ = train(ours(True), device=device)
    for a, b in zip(fused, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_constant_decoupled_damped_is_torch_adamw(device):
    ours, _ = train(
        lambda p: DemonAdamW(
            p, lr=3e-3, total_steps=50, damped=True, schedule="constant", fused=False
        ),
        device=device,
    )
    theirs, _ = train(lambda p: torch.optim.AdamW(p, lr=3e-3, foreach=False), device=device)
    assert_bitwise(ours, theirs)


def test_demon_adamw_defaults():
    opt = DemonAdamW([torch.nn.Parameter(torch.zeros(2))], total_steps=10)
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-2 and group["decoupled_weight_decay"] is True


@pytest.mark.parametrize("device", DEVICES)
def test_fused_and_loop_paths_agree(device):
    for kind, options in (("sgd", {"nesterov": True}), ("adam", {}), ("adam", {"damped": True})):
        a, _ = run_optimizer(kind, options, torch.float64, fused=False, device=device)
        b, _ = run_optimizer(kind, options, torch.float64, fused=True, device=device)
        for x, y in zip(a, b, strict=True):
            assert ref.relative_error(x, y) < 1e-12


# --- save, load, continue -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name", "options"), ALL, ids=[n for _, n, _ in ALL])
@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
def test_save_load_continue_is_uninterrupted(kind, name, options, fused):
    straight, _ = run_optimizer(kind, options, torch.float32, fused, steps=STEPS)

    params = initial_params(torch.float32)
    opt = build(kind, options, params, fused)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(150):
            set_grads(params, k)
            opt.step()
        buffer = io.BytesIO()
        torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=False)
        fresh = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
        opt2 = build(kind, options, fresh, fused)
        opt2.load_state_dict(saved["opt"])
        for k in range(150, STEPS):
            set_grads(fresh, k)
            opt2.step()
    for a, b in zip(straight, [p.detach().double().flatten().numpy() for p in fresh], strict=True):
        np.testing.assert_array_equal(a, b)


SAVE_LOAD_ON_CUDA = ["sgd-nesterov", "adam", "adam-damped-decoupled"]


@cuda_only
@pytest.mark.parametrize("name", SAVE_LOAD_ON_CUDA)
def test_cuda_checkpoint_through_the_cpu_continues_uninterrupted(name):
    """Saved from CUDA, loaded on the CPU (map_location), then into an optimizer of CUDA
    parameters: torch moves the state to the parameters' device; bit for bit."""
    kind, options = next((k, o) for k, n, o in ALL if n == name)
    straight, _ = run_optimizer(kind, options, torch.float32, None, device="cuda")
    params = initial_params(torch.float32, "cuda")
    opt = build(kind, options, params, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(150):
            set_grads(params, k)
            opt.step()
        buffer = io.BytesIO()
        torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=False, map_location="cpu")
        fresh = [torch.nn.Parameter(t.clone().cuda()) for t in saved["params"]]
        opt2 = build(kind, options, fresh, None)
        opt2.load_state_dict(saved["opt"])
        for state in opt2.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    assert value.device.type == "cuda"
        for k in range(150, STEPS):
            set_grads(fresh, k)
            opt2.step()
    for a, b in zip(straight, [as_numpy(p) for p in fresh], strict=True):
        np.testing.assert_array_equal(a, b)


# --- the schedule counter -----------------------------------------------------------------


def test_counter_advances_once_per_step_whatever_the_groups():
    params = initial_params(torch.float32)
    opt = DemonSGD([{"params": [p]} for p in params], lr=0.1, total_steps=10)
    for _k in range(4):
        params[0].grad = torch.ones_like(params[0])  # the other groups have no gradient
        opt.step()
    assert [g["schedule_step"] for g in opt.param_groups] == [4, 4, 4]
    assert "schedule_step" in opt.state_dict()["param_groups"][0]


def test_get_last_momentum_reports_without_writing_back():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = DemonSGD([p], lr=0.1, momentum=0.9, total_steps=100)
    assert opt.get_last_momentum() == [0.9]
    for _ in range(51):
        p.grad = torch.ones(3)
        opt.step()
    assert opt.get_last_momentum() == [ref.demon_beta(50, 100, 0.9)]
    assert opt.param_groups[0]["momentum"] == 0.9


def test_group_momentum_is_read_every_step():
    """Another scheduler writing group['momentum'] modulates beta_init."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = DemonSGD([p], lr=0.1, momentum=0.9, total_steps=100)
    p.grad = torch.ones(3)
    opt.step()
    opt.param_groups[0]["momentum"] = 0.5
    opt.step()
    assert opt.get_last_momentum() == [ref.demon_beta(1, 100, 0.5)]


@pytest.mark.parametrize("cls", [DemonSGD, DemonAdam])
def test_warns_once_past_total_steps_and_never_for_exactly_t_steps(cls):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = cls([p], total_steps=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            p.grad = torch.ones(3)
            opt.step()
        assert not caught
        for _ in range(5):
            p.grad = torch.ones(3)
            opt.step()
    assert len(caught) == 1 and "total_steps=5" in str(caught[0].message)
    assert opt.get_last_momentum() == [0.0]


def test_delay_holds_beta_init_then_decays():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = DemonSGD([p], lr=0.1, momentum=0.9, total_steps=100, delay=0.75)
    seen = []
    for _ in range(100):
        p.grad = torch.ones(1)
        opt.step()
        seen.append(opt.get_last_momentum()[0])
    assert seen[:75] == [0.9] * 75
    assert seen[75:] == [ref.demon_beta(k, 100, 0.9, delay=0.75) for k in range(75, 100)]


def test_callable_schedule():
    def halve(k, total, beta_init):
        return beta_init / 2

    p = torch.nn.Parameter(torch.zeros(1))
    opt = DemonSGD([p], lr=0.1, momentum=0.8, total_steps=10, schedule=halve)
    p.grad = torch.ones(1)
    opt.step()
    assert opt.get_last_momentum() == [0.4]


# --- bad input ------------------------------------------------------------------------------

BAD = [  # (class, arguments, the field the message must start with, the value it must show)
    (DemonSGD, {"lr": -0.1}, "lr", "-0.1"),
    (DemonSGD, {"momentum": 1.0}, "momentum", "1.0"),
    (DemonSGD, {"momentum": -0.1}, "momentum", "-0.1"),
    (DemonSGD, {"total_steps": 0}, "total_steps", "0"),
    (DemonSGD, {"total_steps": 10.5}, "total_steps", "10.5"),
    (DemonSGD, {"total_steps": "100"}, "total_steps", "'100'"),
    (DemonSGD, {"weight_decay": -1}, "weight_decay", "-1"),
    (DemonSGD, {"dampening": -0.5}, "dampening", "-0.5"),
    (DemonSGD, {"nesterov": True, "dampening": 0.1}, "nesterov", "dampening=0.1"),
    (DemonSGD, {"schedule": "cosinus"}, "schedule", "'cosinus'"),
    (DemonSGD, {"delay": 1.0}, "delay", "1.0"),
    (DemonSGD, {"delay": 0.5, "schedule": "linear"}, "delay", "0.5"),
    (DemonAdam, {"betas": (1.0, 0.999)}, "betas[0]", "1.0"),
    (DemonAdam, {"betas": (0.9, 1.5)}, "betas[1]", "1.5"),
    (DemonAdam, {"betas": (0.9,)}, "betas", "(0.9,)"),
    (DemonAdam, {"eps": -1e-8}, "eps", "-1e-08"),
    (DemonAdam, {"lr": -1.0}, "lr", "-1.0"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "shown"),
    BAD,
    ids=[f"{c.__name__}-{f}-{i}" for i, (c, _, f, _) in enumerate(BAD)],
)
def test_bad_hyperparameters_name_the_argument_and_value(cls, kwargs, field, shown):
    with pytest.raises(ValueError) as info:
        cls([torch.nn.Parameter(torch.zeros(1))], **{"total_steps": 10, **kwargs})
    message = str(info.value)
    assert message.startswith(f"{field}: got ")
    assert shown in message and "allowed" in message


def test_bad_group_added_later_is_rejected():
    opt = DemonSGD([torch.nn.Parameter(torch.zeros(1))], total_steps=10)
    with pytest.raises(ValueError, match="momentum: got 2"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "momentum": 2})


def test_schedule_returning_out_of_range_beta_is_an_error():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = DemonSGD([p], total_steps=10, schedule=lambda k, t, b: 1.5)
    p.grad = torch.ones(1)
    with pytest.raises(ValueError, match="schedule"):
        opt.step()


def test_closure_is_evaluated_with_grad():
    p = torch.nn.Parameter(torch.ones(2))
    opt = DemonAdam([p], lr=0.1, total_steps=10)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(2.0)


def test_deepcopy_keeps_the_warning_state():
    opt = DemonSGD([torch.nn.Parameter(torch.zeros(1))], total_steps=1)
    clone = copy.deepcopy(opt)
    assert clone.param_groups[0]["schedule_step"] == 0
