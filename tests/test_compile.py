"""The optimizers under torch.compile: a moving beta must not recompile the step."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend

from demon_optim import DemonAdam, DemonSGD, MomentumScheduler
from tests.conftest import DEVICES, cuda_only

MAKERS = {
    "demon-sgd": lambda ps: DemonSGD(ps, lr=0.05, nesterov=True, total_steps=15),
    "demon-adam": lambda ps: DemonAdam(ps, lr=0.01, total_steps=15),
    "demon-adam-damped": lambda ps: DemonAdam(ps, lr=0.01, total_steps=15, damped=True),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled_against_eager(name: str, device: str, counter: CompileCounter) -> list[int]:
    """20 steps of a compiled ``optimizer.step()`` beside an eager one; the frame counts."""
    gen = torch.Generator().manual_seed(0)
    compiled_params = [
        torch.nn.Parameter(torch.randn(8, generator=gen).to(device)) for _ in range(2)
    ]
    eager_params = [torch.nn.Parameter(p.detach().clone()) for p in compiled_params]
    compiled_opt, eager_opt = MAKERS[name](compiled_params), MAKERS[name](eager_params)

    @torch.compile(backend=counter)
    def compiled_step():
        compiled_opt.step()

    frames = []
    for _ in range(20):  # past total_steps: beta moves every step, then sits at 0
        for p, q in zip(compiled_params, eager_params, strict=True):
            g = torch.randn(8, generator=gen).to(device)
            p.grad, q.grad = g.clone(), g.clone()
        compiled_step()
        eager_opt.step()
        frames.append(counter.frame_count)
    assert compiled_opt.get_last_momentum() == eager_opt.get_last_momentum()
    for p, q in zip(compiled_params, eager_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    return frames


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_step_does_not_recompile_as_beta_moves(name, device):
    """On CUDA the step's scalars are graph inputs on the GPU (a CPU scalar would be copied
    over with a host sync each step)."""
    frames = compiled_against_eager(name, device, CompileCounter())
    assert frames[-1] <= 2, frames  # first step (creates state) and steady state
    assert frames[3] == frames[-1], frames


@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="inductor needs triton on a GPU"
)
@pytest.mark.parametrize("name", list(MAKERS))
@cuda_only
def test_compiled_step_with_inductor_on_cuda(name):
    """What a user gets from torch.compile(optimizer.step) on a GPU: inductor's kernels."""
    frames = compiled_against_eager(name, "cuda", CompileCounterWithBackend("inductor"))
    assert frames[-1] <= 2 and frames[3] == frames[-1], frames


@pytest.mark.parametrize("name", list(MAKERS))
def test_trains_a_compiled_model(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    compiled = torch.compile(model, backend="aot_eager")
    opt = MAKERS[name](list(model.parameters()))
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(compiled(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_momentum_scheduler_with_tensor_beta_under_compile():
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam(
        [p], lr=torch.tensor(0.01), betas=(torch.tensor(0.9), torch.tensor(0.999))
    )
    sched = MomentumScheduler(opt, "demon", total_steps=10)
    counter = CompileCounter()

    @torch.compile(backend=counter)
    def compiled_step():
        opt.step()

    for _ in range(8):
        p.grad = torch.ones(4)
        compiled_step()
        sched.step()
    assert counter.frame_count <= 2
