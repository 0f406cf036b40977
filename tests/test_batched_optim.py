"""BatchedOptimizer: M models' SGD / Adam / DemonSGD / DemonAdam steps as one update, against
M unbatched optimizers fed the same gradients and the same per-step hyperparameters."""

from __future__ import annotations

import pytest
import torch

from demon_optim import ConfigError, DemonAdam, DemonSGD
from demon_optim.study.batched import optim as batched_optim
from demon_optim.study.batched.optim import KINDS, BatchedHyperparameters, BatchedOptimizer
from tests.conftest import DEVICES

M = 5
SHAPES = [(3, 4), (5,), ()]  # per model: a matrix, a vector, a scalar ([M] stacked)
STEPS = 150


def tolerances(dtype: torch.dtype, device: str) -> dict[str, float]:
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    # torch's CUDA kernels may contract into fused multiply-adds where the CPU's do not
    return {"rtol": 1e-5 if device == "cpu" else 5e-5, "atol": 1e-6}


class Problem:
    """A random quadratic per model (curvature h, centre c) with gradient noise: the gradient
    of a stacked parameter and of one model's slice are the same function of the values."""

    def __init__(self, dtype: torch.dtype, device: str, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.dtype, self.device = dtype, device
        self.init = self.draw()
        self.h = [x.abs() * 0.5 + 0.1 for x in self.draw()]
        self.c = self.draw()

    def draw(self, scale: float = 1.0) -> list[torch.Tensor]:
        return [
            (scale * torch.randn(M, *s, generator=self.gen, dtype=torch.float64))
            .to(self.dtype)
            .to(self.device)
            for s in SHAPES
        ]

    def grads(self, params: list[torch.Tensor], noise: list[torch.Tensor], m: int | None):
        pick = (lambda x: x) if m is None else (lambda x: x[m])
        return [
            pick(h) * (p.detach() - pick(c)) + pick(n)
            for p, h, c, n in zip(params, self.h, self.c, noise, strict=True)
        ]


def hyperparameter_sequences(kind: str, gen: torch.Generator) -> dict[str, list[list[float]]]:
    """Per step and model: lr, momentum, weight decay (what schedules would hand over)."""

    def draw(low: float, high: float) -> list[list[float]]:
        return (
            low + (high - low) * torch.rand(STEPS, M, generator=gen, dtype=torch.float64)
        ).tolist()

    adam = kind in ("adam", "demon-adam")
    lr = draw(1e-3, 3e-2) if adam else draw(0.01, 0.2)
    momentum = draw(0.0, 0.95)
    for k in range(STEPS):
        if kind == "sgd":
            momentum[k][0] = 0.0  # model 0: torch's momentum-0 shortcut throughout
            if k % 7 == 3:
                momentum[k][1] = 0.0  # model 1: the buffer is skipped, then used again
        if kind.startswith("demon") and k % 11 == 5:
            momentum[k][2] = 0.0
    decay = [[0.0, 1e-2, 0.0, 3e-3, 1e-3]] * STEPS
    return {"lr": lr, "momentum": momentum, "weight_decay": decay}


def hp_at(kind: str, seq: dict[str, list[list[float]]], k: int, device: str, dtype: torch.dtype):
    adam = kind in ("adam", "demon-adam")
    return BatchedHyperparameters.from_values(
        lr=seq["lr"][k],
        momentum=seq["momentum"][k],
        weight_decay=seq["weight_decay"][k],
        beta2=[0.999] * M if adam else None,
        eps=[1e-8] * M if adam else None,
        device=device,
        dtype=dtype,
    )


def reference_optimizer(kind: str, params: list[torch.Tensor], m: int, seq: dict):
    """Model m's unbatched optimizer; its hyperparameters are set before each step."""
    wd = seq["weight_decay"][0][m]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1.0, momentum=0.5, weight_decay=wd, foreach=False)
    if kind == "adam":
        return torch.optim.Adam(params, lr=1.0, weight_decay=wd, foreach=False)
    # the Demon optimizers take the momentum of each step through a schedule callable
    betas = [seq["momentum"][k][m] for k in range(STEPS)]

    def schedule(k: int, total: int, beta_init: float) -> float:
        return betas[k]

    if kind == "demon-sgd":
        return DemonSGD(
            params, lr=1.0, momentum=0.5, weight_decay=wd, total_steps=STEPS + 1, schedule=schedule
        )
    return DemonAdam(params, lr=1.0, weight_decay=wd, total_steps=STEPS + 1, schedule=schedule)


def set_hyperparameters(kind: str, optimizer: torch.optim.Optimizer, seq: dict, k: int, m: int):
    for group in optimizer.param_groups:
        group["lr"] = seq["lr"][k][m]
        if kind == "sgd":
            group["momentum"] = seq["momentum"][k][m]
        elif kind == "adam":
            group["betas"] = (seq["momentum"][k][m], 0.999)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_model_steps_as_its_unbatched_optimizer(kind: str, dtype: torch.dtype, device: str):
    check_against_unbatched(kind, dtype, device)


@pytest.mark.parametrize("kind", KINDS)
def test_the_update_in_pieces_of_models_is_the_same(kind: str, monkeypatch):
    """Big stacks go through the Adam update a few models at a time (cache-sized pieces);
    here every kind is forced into pieces of one or two models."""
    in_pieces(monkeypatch)
    check_against_unbatched(kind, torch.float64, "cpu", pieces=True)


def in_pieces(monkeypatch) -> None:
    """Every kind's update a model or two at a time (pieces of at most 7 values)."""
    monkeypatch.setattr(batched_optim, "CHUNK_NUMEL", 7)
    monkeypatch.setattr(batched_optim, "_CHUNKED_KINDS", KINDS)


def check_against_unbatched(kind: str, dtype: torch.dtype, device: str, pieces: bool = False):
    problem = Problem(dtype, device)
    seq = hyperparameter_sequences(kind, torch.Generator().manual_seed(1))
    stacked = [x.clone().requires_grad_() for x in problem.init]
    batched = BatchedOptimizer(stacked, kind)
    assert (len(batched._pieces[0]) == M) == pieces
    models = [[x[m].clone().requires_grad_() for x in problem.init] for m in range(M)]
    optimizers = [reference_optimizer(kind, models[m], m, seq) for m in range(M)]
    active = torch.ones(M, dtype=torch.bool)
    for k in range(STEPS):
        noise = problem.draw(0.1)
        for p, g in zip(stacked, problem.grads(stacked, noise, None), strict=True):
            p.grad = g
        batched.step(hp_at(kind, seq, k, device, dtype), active)
        for m, (params, opt) in enumerate(zip(models, optimizers, strict=True)):
            for p, g in zip(params, problem.grads(params, noise, m), strict=True):
                p.grad = g
            set_hyperparameters(kind, opt, seq, k, m)
            opt.step()
    tol = tolerances(dtype, device)
    for m, params in enumerate(models):
        for p, q in zip(params, stacked, strict=True):
            torch.testing.assert_close(q.detach()[m], p.detach(), **tol)
    # the state too, as the unbatched optimizer names it
    for m, opt in enumerate(optimizers):
        for state, p in zip(batched.member_state(m), models[m], strict=True):
            theirs = opt.state[p]
            if kind == "sgd" and m == 0:
                assert theirs.get("momentum_buffer") is None  # never made; ours stayed 0
                assert not state["momentum_buffer"].any()
            elif kind in ("sgd", "demon-sgd"):
                torch.testing.assert_close(
                    state["momentum_buffer"], theirs["momentum_buffer"], **tol
                )
            else:
                assert state["step"] == int(theirs["step"]) == STEPS
                moment = theirs["exp_avg"]
                if kind == "demon-adam":  # DemonAdam keeps s * m for its fused kernel
                    moment = moment / theirs["exp_avg_scale"]
                torch.testing.assert_close(state["exp_avg"], moment, **tol)
                torch.testing.assert_close(state["exp_avg_sq"], theirs["exp_avg_sq"], **tol)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of the raw bits (NaN equals itself; -0 differs from +0)."""
    return (
        tensor.detach().clone().view(torch.int64 if tensor.dtype == torch.float64 else torch.int32)
    )


@pytest.mark.parametrize("pieces", [False, True], ids=["whole", "pieces"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_inactive_model_is_untouched_and_touches_nothing(
    kind: str, dtype: torch.dtype, pieces: bool, monkeypatch
):
    """Model 2 diverges: NaN and inf in its parameters, state and gradients. While it is
    inactive its bits never change, and the others step exactly as in a clean run."""
    if pieces:
        in_pieces(monkeypatch)
    problem = Problem(dtype, "cpu")
    seq = hyperparameter_sequences(kind, torch.Generator().manual_seed(1))
    runs = []
    for poisoned in (False, True):
        stacked = [x.clone().requires_grad_() for x in problem.init]
        opt = BatchedOptimizer(stacked, kind)
        gen = torch.Generator().manual_seed(5)
        runs.append((stacked, opt))
        for k in range(40):
            noise = [
                0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)
                for x in problem.init
            ]
            grads = problem.grads(stacked, noise, None)
            active = torch.ones(M, dtype=torch.bool)
            if poisoned and k >= 20:
                active[2] = False
                with torch.no_grad():
                    if k == 20:
                        stacked[0][2, 0, 0] = float("inf")
                        stacked[1][2, 1] = float("nan")
                        state = (
                            opt.momentum_buffers if kind in ("sgd", "demon-sgd") else opt.exp_avgs
                        )
                        state[0][2, 1, 1] = float("inf")
                        frozen = [bits(p[2]) for p in stacked]
                        frozen_state = [
                            [bits(t) for t in s.values() if isinstance(t, torch.Tensor)]
                            for s in opt.member_state(2)
                        ]
                for g in grads:
                    g[2] = float("nan")
            for p, g in zip(stacked, grads, strict=True):
                p.grad = g
            opt.step(hp_at(kind, seq, k, "cpu", dtype), active)
    (clean, _), (poisoned_params, poisoned_opt) = runs
    for p, q in zip(clean, poisoned_params, strict=True):
        others = [0, 1, 3, 4]
        assert torch.equal(bits(p[others]), bits(q[others]))
    assert all(torch.equal(a, bits(p[2])) for a, p in zip(frozen, poisoned_params, strict=True))
    now = [
        [bits(t) for t in s.values() if isinstance(t, torch.Tensor)]
        for s in poisoned_opt.member_state(2)
    ]
    assert all(
        torch.equal(a, b)
        for x, y in zip(frozen_state, now, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    if kind in ("adam", "demon-adam"):
        assert [s["step"] for s in poisoned_opt.member_state(2)] == [20] * len(SHAPES)
        assert [s["step"] for s in poisoned_opt.member_state(1)] == [40] * len(SHAPES)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_a_parameter_without_gradient_is_skipped_as_torch_skips_it(kind: str):
    """Adam's update count is per parameter: a parameter that missed steps has its own bias
    corrections, as in torch."""
    problem = Problem(torch.float64, "cpu")
    seq = hyperparameter_sequences(kind, torch.Generator().manual_seed(1))
    stacked = [x.clone().requires_grad_() for x in problem.init]
    batched = BatchedOptimizer(stacked, kind)
    models = [[x[m].clone().requires_grad_() for x in problem.init] for m in range(M)]
    optimizers = [reference_optimizer(kind, models[m], m, seq) for m in range(M)]
    active = torch.ones(M, dtype=torch.bool)
    for k in range(60):
        noise = problem.draw(0.1)
        skip = k % 3 == 1  # the second parameter gets no gradient on these steps
        for i, (p, g) in enumerate(zip(stacked, problem.grads(stacked, noise, None), strict=True)):
            p.grad = None if skip and i == 1 else g
        batched.step(hp_at(kind, seq, k, "cpu", torch.float64), active)
        for m, (params, opt) in enumerate(zip(models, optimizers, strict=True)):
            for i, (p, g) in enumerate(zip(params, problem.grads(params, noise, m), strict=True)):
                p.grad = None if skip and i == 1 else g
            set_hyperparameters(kind, opt, seq, k, m)
            opt.step()
    for m, params in enumerate(models):
        for p, q in zip(params, stacked, strict=True):
            torch.testing.assert_close(q.detach()[m], p.detach(), rtol=1e-10, atol=1e-12)
    if kind == "adam":
        assert [s["step"] for s in batched.member_state(0)] == [60, 40, 60]


def test_zero_grad_and_checks():
    p = torch.zeros(3, 2, requires_grad=True)
    opt = BatchedOptimizer([p], "sgd")
    p.grad = torch.ones(3, 2)
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and not p.grad.any()
    opt.zero_grad()
    assert p.grad is None
    with pytest.raises(ConfigError, match="kind"):
        BatchedOptimizer([p], "adamw")
    with pytest.raises(ConfigError, match="params dtype"):
        BatchedOptimizer([torch.zeros(3, 2, dtype=torch.float16)], "sgd")
    with pytest.raises(ConfigError, match=r"params\[1\]"):
        BatchedOptimizer([p, torch.zeros(4, 2)], "sgd")
    hp = BatchedHyperparameters.from_values(lr=[0.1] * 3, momentum=[0.9] * 3, weight_decay=[0] * 3)
    p.grad = torch.ones(3, 2)
    with pytest.raises(ConfigError, match="active"):
        opt.step(hp, torch.ones(4, dtype=torch.bool))
    with pytest.raises(ConfigError, match="active"):
        opt.step(hp, torch.ones(3))
    small = BatchedHyperparameters.from_values(
        lr=[0.1] * 2, momentum=[0.9] * 2, weight_decay=[0] * 2
    )
    with pytest.raises(ConfigError, match="hp"):
        opt.step(small, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="beta2 and eps"):
        BatchedOptimizer([p], "adam").step(hp, torch.ones(3, dtype=torch.bool))
    # nothing active: nothing changes
    before = p.detach().clone()
    opt.step(hp, torch.zeros(3, dtype=torch.bool))
    assert torch.equal(before, p.detach())


def test_hyperparameters_from_tensors_or_floats():
    made = BatchedHyperparameters.from_values(
        lr=[0.1, 0.2], momentum=[0.9, 0.0], weight_decay=[0.0, 1e-3], dtype=torch.float32
    )
    assert made.lr.dtype == torch.float32 and made.size == 2
    assert made.host["lr"] == (0.1, 0.2)  # exact, not float32-rounded
    given = BatchedHyperparameters(
        lr=torch.tensor([0.1, 0.2], dtype=torch.float64),
        momentum=torch.tensor([0.9, 0.0], dtype=torch.float64),
        weight_decay=torch.zeros(2, dtype=torch.float64),
    )
    assert given.host["momentum"] == (0.9, 0.0)
    with pytest.raises(ConfigError, match="momentum"):
        BatchedHyperparameters(lr=torch.ones(2), momentum=torch.ones(3), weight_decay=torch.ones(2))
    with pytest.raises(ConfigError, match="beta2"):
        BatchedHyperparameters.from_values(
            lr=[1.0], momentum=[0.0], weight_decay=[0.0], beta2=[0.9]
        )


def test_momentum_zero_never_reads_the_buffer_as_in_torch():
    """torch's SGD with momentum 0 steps with the gradient alone: a buffer holding inf (kept
    from before) does not turn the step into NaN, as inf * 0 would."""
    p = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    opt = BatchedOptimizer([p], "sgd")
    opt.momentum_buffers[0][0] = float("inf")
    p.grad = torch.ones(2, 3, dtype=torch.float64)
    hp = BatchedHyperparameters.from_values(lr=[0.5, 0.5], momentum=[0.0, 0.9], weight_decay=[0, 0])
    opt.step(hp, torch.ones(2, dtype=torch.bool))
    assert torch.equal(p.detach()[0], torch.full((3,), -0.5, dtype=torch.float64))
    assert torch.isinf(opt.momentum_buffers[0][0]).all()  # left as it was, as torch leaves it
