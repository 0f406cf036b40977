"""ModelSchedules + BatchedOptimizer against M trials run unbatched, each with the real
method.build (its torch optimizer and schedule hooks), on random quadratics with the same
gradients: every batched built-in method, past the schedules' end, plateau per model, mixed
batches; and which methods have no batched form."""

from __future__ import annotations

import warnings

import pytest
import torch

from demon_optim import ConfigError
from demon_optim.study.batched.optim import BatchedOptimizer
from demon_optim.study.batched.schedules import ModelSchedules, batched_kind, batched_reason
from demon_optim.study.methods import (
    Budget,
    applied_reader,
    builtin,
    get_method,
    list_methods,
    register_method,
)

SHAPES = [(3, 4), (5,)]
BUDGET = Budget(epochs=10, steps_per_epoch=12, higher_is_better=False)  # T = 120
EXTRA = 200  # steps past T (every schedule but OneCycle, which refuses them, as unbatched)
BATCHED = [m.name for m in list_methods() if batched_kind(m) is not None]
# the warnings an unbatched trial run past T gets too (MomentumScheduler, the Demon optimizers)
PAST_END = r".*(is past total_steps|is at or past total_steps)"


def configs(name: str) -> list[dict]:
    """Four configurations of the method: grid values, weight decay, Demon's delay, and
    for SGD momentum 0 (torch's shortcut) where the method has a plain momentum."""
    method = get_method(name)
    grid = method.grid()
    chosen = [dict(grid[(3 * i) % len(grid)]) for i in range(4)]
    chosen[1]["weight_decay"] = 1e-3
    if "delay" in method.hyperparameters:
        chosen[2]["delay"] = 0.5
    if batched_kind(method) == "sgd" and "momentum" in method.hyperparameters:
        chosen[3]["momentum"] = 0.0
    return [method.check_config(c) for c in chosen]


class Quadratic:
    def __init__(self, size: int, dtype: torch.dtype, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.size, self.dtype = size, dtype
        self.init = self.draw()
        self.h = [x.abs() * 0.5 + 0.1 for x in self.draw()]
        self.c = self.draw()

    def draw(self, scale: float = 1.0) -> list[torch.Tensor]:
        return [
            (scale * torch.randn(self.size, *s, generator=self.gen, dtype=torch.float64)).to(
                self.dtype
            )
            for s in SHAPES
        ]

    def grads(self, params, noise, m=None):
        pick = (lambda x: x) if m is None else (lambda x: x[m])
        return [
            pick(h) * (p.detach() - pick(c)) + pick(n)
            for p, h, c, n in zip(params, self.h, self.c, noise, strict=True)
        ]


def compare(members, dtype, val_metrics, steps, tol):
    """Run the batch and its unbatched twins side by side; assert parameters and the applied
    (lr, momentum) agree at every step. Returns the ModelSchedules."""
    size = len(members)
    problem = Quadratic(size, dtype)
    stacked = [x.clone().requires_grad_() for x in problem.init]
    schedules = ModelSchedules(members, device="cpu", dtype=dtype)
    kinds = {batched_kind(method) for method, _, _ in members}
    (kind,) = kinds
    batched = BatchedOptimizer(stacked, kind)
    twins = []
    for m, (method, config, budget) in enumerate(members):
        params = [x[m].clone().requires_grad_() for x in problem.init]
        training = method.build(params, config, budget)
        twins.append((params, training, applied_reader(training.optimizer)))
    active = torch.ones(size, dtype=torch.bool)
    spe = members[0][2].steps_per_epoch
    quiet = min(budget.total_steps for _, _, budget in members)  # no warning before any T
    for k in range(steps):
        with warnings.catch_warnings():
            if k < quiet:
                warnings.simplefilter("error")  # e.g. torch's "lr_scheduler.step() before"
            else:
                warnings.filterwarnings("ignore", PAST_END, UserWarning)
            noise = problem.draw(0.1)
            for p, g in zip(stacked, problem.grads(stacked, noise), strict=True):
                p.grad = g
            batched.step(schedules.current(), active)
            schedules.after_step()
            applied = schedules.applied()
            for m, (params, training, reader) in enumerate(twins):
                for p, g in zip(params, problem.grads(params, noise, m), strict=True):
                    p.grad = g
                training.optimizer.step()
                assert applied[m] == reader(), (k, m)  # what the trial would record
                for hook in training.after_step:
                    hook()
            if (k + 1) % spe == 0:
                epoch = (k + 1) // spe
                metrics = [val_metrics[m][epoch] for m in range(size)]
                schedules.after_epoch(metrics)
                for m, (_, training, _) in enumerate(twins):
                    for hook in training.after_epoch:
                        hook(metrics[m])
    for m, (params, _, _) in enumerate(twins):
        for p, q in zip(params, stacked, strict=True):
            torch.testing.assert_close(q.detach()[m], p.detach(), **tol)
    return schedules


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return (
        {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    )


def steps_for(names) -> int:
    onecycle = any(
        builtin.composition(get_method(n).build_fn).lr_schedule == "onecycle" for n in names
    )
    return BUDGET.total_steps if onecycle else BUDGET.total_steps + EXTRA


def metrics(size: int, seed: int = 3) -> list[list[float]]:
    """Per model: a different validation sequence (improving, flat, noisy, ...)."""
    gen = torch.Generator().manual_seed(seed)
    epochs = (BUDGET.total_steps + EXTRA) // BUDGET.steps_per_epoch + 1
    out = []
    for m in range(size):
        if m % 3 == 0:
            out.append([1.0 / (e + 1) for e in range(epochs)])  # always improving
        elif m % 3 == 1:
            out.append([0.5] * epochs)  # flat: decays after each patience
        else:
            out.append(torch.rand(epochs, generator=gen).tolist())
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", BATCHED)
def test_every_batched_method_moves_as_its_trial(name: str, dtype: torch.dtype):
    method = get_method(name)
    members = [(method, config, BUDGET) for config in configs(name)]
    compare(members, dtype, metrics(len(members)), steps_for([name]), tolerance(dtype))


def test_the_batched_methods_are_the_sgdm_and_adam_families():
    kinds = {name: batched_kind(get_method(name)) for name in BATCHED}
    assert len(BATCHED) == 26
    assert kinds["sgdm+onecycle"] == kinds["sgdm+lr-plateau"] == "sgd"
    assert kinds["adam+mom-cosine"] == "adam"
    assert kinds["demon-sgdm"] == "demon-sgd" and kinds["demon-adam"] == "demon-adam"


def test_plateau_moves_per_model_and_identical_schedules_share_a_shadow():
    plateau, cosine = get_method("sgdm+lr-plateau"), get_method("sgdm+lr-cosine")
    config = plateau.check_config({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0})
    members = [(plateau, config, BUDGET)] * 3 + [(cosine, config, BUDGET)] * 3
    schedules = compare(
        members, torch.float64, metrics(6), BUDGET.total_steps + EXTRA, tolerance(torch.float64)
    )
    assert schedules.shadows == 4  # one per plateau model, one for the three cosine ones
    lrs = [lr for lr, _ in schedules.applied()]
    assert lrs[0] == 0.1 and lrs[1] < 1e-3 and len(set(lrs[:3])) == 3


@pytest.mark.parametrize(
    "names",
    [
        [
            "sgdm",
            "sgdm+lr-step",
            "sgdm+lr-warmup-linear",
            "sgdm+lr-plateau",
            "sgdm+mom-linear",
            "sgdm+lr-exponential",
            "sgdm+mom-onecycle",
        ],
        ["sgdm+onecycle", "sgdm+lr-cosine", "sgdm+mom-cosine", "sgdm"],
        ["adam", "adam+lr-plateau", "adam+lr-linear", "adam+mom-exponential", "adam+lr-step"],
        ["adam+onecycle", "adam+mom-onecycle", "adam+lr-warmup-linear"],
        ["demon-sgdm"],
        ["demon-adam"],
    ],
    ids=["sgdm", "sgdm-onecycle", "adam", "adam-onecycle", "demon-sgdm", "demon-adam"],
)
def test_a_mixed_batch_moves_as_its_trials(names: list[str]):
    members = [(get_method(n), config, BUDGET) for n in names for config in configs(n)[:2]]
    if len(names) == 1:  # Demon: several betas and delays, and a second budget
        members = [(get_method(names[0]), c, BUDGET) for c in configs(names[0])]
        other = Budget(epochs=5, steps_per_epoch=12)
        members += [(get_method(names[0]), c, other) for c in configs(names[0])[:2]]
    size = len(members)
    compare(members, torch.float64, metrics(size), steps_for(names), tolerance(torch.float64))


def test_constant_schedules_cost_nothing_per_step():
    method = get_method("sgdm+lr-step")
    members = [(method, c, BUDGET) for c in configs("sgdm+lr-step")]
    schedules = ModelSchedules(members, device="cpu", dtype=torch.float32)
    first = schedules.current()
    schedules.after_step()
    assert schedules.current() is first  # no per-step work: the same tensors
    schedules.after_epoch([0.0] * len(members))
    assert schedules.current() is not first
    assert first.lr.dtype == torch.float32


def test_methods_without_a_batched_form(restore_registries):
    for name in ("amsgrad", "adamw", "qhm+lr-step", "aggmo+lr-step", "qhadam", "yellowfin"):
        method = get_method(name)
        assert batched_kind(method) is None
        assert "reference method" in batched_reason(method) and name.split("+")[
            0
        ] in batched_reason(method)
    for name in ("muon", "lion+lr-cosine", "schedulefree-adamw"):
        assert batched_kind(get_method(name)) is None
        assert "reference method" in batched_reason(get_method(name))
    for name in BATCHED:
        assert batched_reason(get_method(name)) is None

    def build(params, *, budget, lr):
        return torch.optim.SGD(params, lr=lr)

    # a user's builder stays unbatched, even one that claims a built-in composition
    build.composition = builtin.Composition("sgd", "constant", "constant")
    mine = register_method("my-sgd", build=build, grid={"lr": [0.1]})
    assert batched_kind(mine) is None
    assert "not a built-in method" in batched_reason(mine)
    with pytest.raises(ConfigError, match=r"members\[1\]"):
        ModelSchedules(
            [(get_method("sgdm"), configs("sgdm")[0], BUDGET), (mine, {"lr": 0.1}, BUDGET)],
            device="cpu",
            dtype=torch.float64,
        )


def test_bad_batches_are_refused():
    sgdm, adam = get_method("sgdm"), get_method("adam")
    with pytest.raises(ConfigError, match="one batched kind"):
        ModelSchedules(
            [(sgdm, configs("sgdm")[0], BUDGET), (adam, configs("adam")[0], BUDGET)],
            device="cpu",
            dtype=torch.float64,
        )
    with pytest.raises(ConfigError, match="members"):
        ModelSchedules([], device="cpu", dtype=torch.float64)
    with pytest.raises(ConfigError, match="dtype"):
        ModelSchedules([(sgdm, configs("sgdm")[0], BUDGET)], device="cpu", dtype=torch.float16)
    schedules = ModelSchedules(
        [(sgdm, configs("sgdm")[0], BUDGET)] * 2, device="cpu", dtype=torch.float64
    )
    with pytest.raises(ConfigError, match="val_metrics"):
        schedules.after_epoch([0.5])
