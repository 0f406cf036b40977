"""The optimizers under DistributedDataParallel and FSDP2 (gloo, 2 CPU processes).

Each scenario runs in 2 spawned ranks that write their results to files; the test compares
them with one process training on the full batch. float64 throughout, so "the same
parameters" means agreement to rounding (the all-reduce sums in another order).
"""

from __future__ import annotations

import pathlib
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from demon_optim import DemonAdam, DemonSGD, MomentumScheduler

WORLD = 2
STEPS = 24  # past total_steps below
TOTAL_STEPS = 16

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 4),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 1),
    ).double()


def batches() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, 32, 8, generator=gen, dtype=torch.float64)
    return x, x.sum(-1, keepdim=True).sin()


def make_optimizer(name: str, params):
    """Returns (optimizer, momentum scheduler or None)."""
    if name == "demon-sgd":
        return DemonSGD(params, lr=0.05, momentum=0.9, nesterov=True, total_steps=TOTAL_STEPS), None
    if name == "demon-adam":
        return DemonAdam(params, lr=3e-3, total_steps=TOTAL_STEPS), None
    if name == "demon-adam-damped":
        return DemonAdam(params, lr=1e-2, total_steps=TOTAL_STEPS, damped=True), None
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return opt, MomentumScheduler(opt, "demon", total_steps=TOTAL_STEPS)


def train_steps(model, opt, sched, steps: range, shard: int | None) -> None:
    xs, ys = batches()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the past-total_steps warning is expected
        for k in steps:
            x, y = xs[k], ys[k]
            if shard is not None:  # each rank takes its half of the batch
                x, y = x.chunk(WORLD)[shard], y.chunk(WORLD)[shard]
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            if sched is not None:
                sched.step()


def single_process(name: str, steps: int = STEPS) -> list[torch.Tensor]:
    model = make_model()
    opt, sched = make_optimizer(name, model.parameters())
    train_steps(model, opt, sched, range(steps), shard=None)
    return [p.detach() for p in model.parameters()]


def _rank_main(rank: int, scenario: str, name: str, workdir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{workdir}/rendezvous-{scenario}", rank=rank, world_size=WORLD
    )
    try:
        if scenario == "ddp":
            _ddp(rank, name, pathlib.Path(workdir))
        else:
            _fsdp(rank, name, pathlib.Path(workdir), scenario)
    finally:
        dist.barrier()  # no rank tears gloo down while another still talks to it
        dist.destroy_process_group()


def _ddp(rank: int, name: str, workdir: pathlib.Path) -> None:
    model = torch.nn.parallel.DistributedDataParallel(make_model())
    opt, sched = make_optimizer(name, model.parameters())
    train_steps(model, opt, sched, range(STEPS), shard=rank)
    torch.save(
        {
            "params": [p.detach() for p in model.parameters()],
            "counters": [g.get("schedule_step") for g in opt.param_groups],
        },
        workdir / f"rank{rank}.pt",
    )


def _fsdp(rank: int, name: str, workdir: pathlib.Path, scenario: str) -> None:
    from torch.distributed.checkpoint import load, save
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    fully_shard(model)
    opt, sched = make_optimizer(name, model.parameters())
    half = STEPS // 2
    if scenario == "fsdp-first-half":
        train_steps(model, opt, sched, range(half), shard=rank)
        first = next(iter(model.parameters()))
        state = opt.state[first]
        sharded = {
            k: (v.to_local().shape, v.shape) for k, v in state.items() if hasattr(v, "to_local")
        }
        save(
            {"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)},
            checkpoint_id=str(workdir / "checkpoint"),
        )
        torch.save({"sharded": sharded}, workdir / f"shards{rank}.pt")
        return
    # resume: a fresh model and optimizer load the sharded checkpoint and continue
    state = {"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)}
    load(state, checkpoint_id=str(workdir / "checkpoint"))
    model.load_state_dict(state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    counters = [g["schedule_step"] for g in opt.param_groups]
    train_steps(model, opt, sched, range(half, STEPS), shard=rank)
    torch.save(
        {
            "params": [p.full_tensor().detach() for p in model.parameters()],
            "counters_at_resume": counters,
        },
        workdir / f"rank{rank}.pt",
    )


def spawn(scenario: str, name: str, workdir: pathlib.Path) -> list[dict]:
    mp.start_processes(
        _rank_main, args=(scenario, name, str(workdir)), nprocs=WORLD, start_method="spawn"
    )
    return [torch.load(workdir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


OPTIMIZERS = ["demon-sgd", "demon-adam", "demon-adam-damped", "sgd+momentum-scheduler"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ddp_equals_one_process_on_the_full_batch(name, tmp_path):
    ranks = spawn("ddp", name, tmp_path)
    expected = single_process(name)
    for result in ranks:
        for got, want in zip(result["params"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert ranks[0]["counters"] == ranks[1]["counters"]


@pytest.mark.skipif(not hasattr(torch.distributed, "fsdp"), reason="no FSDP in this torch")
@pytest.mark.parametrize("name", ["demon-sgd", "demon-adam"])
def test_fsdp2_shards_state_and_a_sharded_checkpoint_resumes_exactly(name, tmp_path):
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (FSDP2, torch >= 2.6)
    except ImportError:
        pytest.skip("this torch has no FSDP2 fully_shard")
    mp.start_processes(
        _rank_main,
        args=("fsdp-first-half", name, str(tmp_path)),
        nprocs=WORLD,
        start_method="spawn",
    )
    shards = torch.load(tmp_path / "shards0.pt", weights_only=False)["sharded"]
    assert shards, "optimizer state should hold DTensors"
    for local_shape, full_shape in shards.values():
        assert local_shape[0] * WORLD == full_shape[0]  # each rank keeps half of dim 0
    ranks = spawn("fsdp-resume", name, tmp_path)
    assert ranks[0]["counters_at_resume"] == ranks[1]["counters_at_resume"] == [STEPS // 2]
    expected = single_process(name)
    for result in ranks:
        for got, want in zip(result["params"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
