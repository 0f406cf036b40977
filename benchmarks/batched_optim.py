"""Batched optimizer step and per-model schedules: what M trials' updates cost as one.

1. The optimizer step. For M in (16, 64, 128) MNIST-1D MLPs (``MLP(40, (100, 100), 10)``,
   six tensors, 15,210 parameters each), one :class:`BatchedOptimizer` step over the stacked
   tensors against M unbatched optimizer steps one after another: torch's SGD and Adam
   with ``foreach=True`` (their fastest multi-tensor path), and DemonSGD / DemonAdam as
   they run by default (torch's fused kernels). Ratio = unbatched / batched (> 1: batched
   is faster).

2. The schedules. ``ModelSchedules.after_step() + current()`` per step for 64 trials of
   mixed methods of one kind (every SGDM method with per-step, per-epoch and no schedules;
   the Adam family alike; 64 Demon SGDM trials), against a batched training step of 64 MLPs
   (bmm forward, backward, this optimizer's step, batch 100): the overhead in percent, and
   the unbatched trials' own schedule hooks (64 of them after each step) for comparison.

One torch thread; medians of >= 20 interleaved repetitions. The machine may be shared with
other work: the ratios, measured in one run, are what to read.

    python benchmarks/batched_optim.py [--repeats 21]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch

from demon_optim import DemonAdam, DemonSGD
from demon_optim.study.batched.optim import BatchedHyperparameters, BatchedOptimizer
from demon_optim.study.batched.schedules import ModelSchedules, batched_kind
from demon_optim.study.methods import Budget, list_methods

SHAPES = [(100, 40), (100,), (100, 100), (100,), (10, 100), (10,)]
SIZES = (16, 64, 128)
BUDGET = Budget(epochs=100, steps_per_epoch=100)  # T = 10,000: no schedule ends in the run


def unbatched(kind: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=True)
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3, foreach=True)
    if kind == "demon-sgd":
        return DemonSGD(params, lr=0.1, momentum=0.9, total_steps=BUDGET.total_steps)
    return DemonAdam(params, lr=1e-4, total_steps=BUDGET.total_steps)


def hyperparameters(kind: str, size: int) -> BatchedHyperparameters:
    adam = kind in ("adam", "demon-adam")
    return BatchedHyperparameters.from_values(
        lr=[1e-3 * (1 + m % 4) for m in range(size)],
        momentum=[0.9] * size,
        weight_decay=[0.0] * size,
        beta2=[0.999] * size if adam else None,
        eps=[1e-8] * size if adam else None,
    )


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each, calls interleaved (A B, B A, ...), one warm-up."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for repeat in range(repeats + 1):
        for name in names if repeat % 2 else reversed(names):
            start = time.perf_counter()
            fns[name]()
            if repeat:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def optimizer_case(kind: str, size: int, repeats: int, gen: torch.Generator) -> dict[str, float]:
    """Median seconds of one batched step and of M unbatched steps."""
    stacked = [torch.randn(size, *s, generator=gen).requires_grad_() for s in SHAPES]
    for p in stacked:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    batched = BatchedOptimizer(stacked, kind)
    hp = hyperparameters(kind, size)
    active = torch.ones(size, dtype=torch.bool)
    optimizers = []
    for m in range(size):
        params = [p.detach()[m].clone().requires_grad_() for p in stacked]
        for p, q in zip(params, stacked, strict=True):
            p.grad = q.grad[m].clone()
        optimizers.append(unbatched(kind, params))

    def one_batched() -> None:
        batched.step(hp, active)

    def one_by_one() -> None:
        for opt in optimizers:
            opt.step()

    return interleaved({"batched": one_batched, "unbatched": one_by_one}, repeats)


def optimizer_steps(repeats: int) -> None:
    print("1. optimizer step, MNIST-1D MLP stacks (ms per step of all M models)")
    print(f"{'kind':<11} {'M':>4} {'batched':>9} {'M unbatched':>12} {'ratio':>7}")
    gen = torch.Generator().manual_seed(0)
    for kind in ("sgd", "adam", "demon-sgd", "demon-adam"):
        for size in SIZES:
            t = optimizer_case(kind, size, repeats, gen)
            print(
                f"{kind:<11} {size:>4} {1e3 * t['batched']:>9.3f} "
                f"{1e3 * t['unbatched']:>12.3f} {t['unbatched'] / t['batched']:>6.1f}x"
            )


def mixed_members(kind: str, size: int) -> list[tuple]:
    """``size`` trials cycling through the methods of ``kind`` and their lr grids."""
    methods = [m for m in list_methods() if batched_kind(m) == kind]
    members = []
    for i in range(size):
        method = methods[i % len(methods)]
        grid = method.grid()
        config = grid[(i // len(methods)) % len(grid)]
        members.append((method, method.check_config(config), BUDGET))
    return members


class BatchedMLP:
    """64 MLPs as batched matmuls: enough of a training step to size the overhead against."""

    def __init__(self, size: int, kind: str, gen: torch.Generator) -> None:
        widths = [40, 100, 100, 10]
        self.layers = []
        for fan_in, fan_out in itertools.pairwise(widths):
            w = (torch.randn(size, fan_out, fan_in, generator=gen) / fan_in**0.5).requires_grad_()
            b = torch.zeros(size, 1, fan_out).requires_grad_()
            self.layers.append((w, b))
        self.params = [t for layer in self.layers for t in layer]
        self.optimizer = BatchedOptimizer(self.params, kind)
        self.inputs = torch.randn(size, 100, 40, generator=gen)
        self.targets = torch.randint(0, 10, (size, 100), generator=gen)
        self.active = torch.ones(size, dtype=torch.bool)

    def step(self, hp: BatchedHyperparameters) -> None:
        h = self.inputs
        for i, (w, b) in enumerate(self.layers):
            h = torch.baddbmm(b, h, w.transpose(1, 2))
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        loss = (
            torch.nn.functional.cross_entropy(
                h.reshape(-1, 10), self.targets.reshape(-1), reduction="sum"
            )
            / h.shape[1]
        )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step(hp, self.active)


def schedule_case(
    kind: str, size: int, steps: int, repeats: int, gen: torch.Generator
) -> tuple[int, dict[str, float]]:
    """Shadows needed, and median ms per step of the schedules, of a batched MLP training
    step and of the unbatched trials' own hooks."""
    members = mixed_members(kind, size)
    schedules = ModelSchedules(members, device="cpu", dtype=torch.float32)
    model = BatchedMLP(size, kind, gen)
    twins = []
    for method, config, budget in members:
        param = torch.nn.Parameter(torch.zeros(1))
        training = method.build([param], config, budget)
        training.optimizer.step()  # before its schedulers, as in a trial
        twins.append(training)

    def schedule_steps() -> None:
        for _ in range(steps):
            schedules.after_step()
            schedules.current()

    def training_steps() -> None:
        for _ in range(steps):
            model.step(schedules.current())

    def unbatched_hooks() -> None:
        for _ in range(steps):
            for training in twins:
                for hook in training.after_step:
                    hook()

    t = interleaved(
        {"schedules": schedule_steps, "train": training_steps, "hooks": unbatched_hooks},
        repeats,
    )
    return schedules.shadows, {name: 1e3 * value / steps for name, value in t.items()}


def schedule_overhead(repeats: int, size: int = 64, steps: int = 40) -> None:
    print(f"\n2. schedules of {size} mixed trials (ms per step)")
    print(
        f"{'kind':<11} {'shadows':>7} {'schedules':>10} {'MLP step':>9} {'overhead':>9} "
        f"{'unbatched hooks':>16}"
    )
    gen = torch.Generator().manual_seed(1)
    for kind in ("sgd", "adam", "demon-sgd"):
        shadows, per = schedule_case(kind, size, steps, repeats, gen)
        print(
            f"{kind:<11} {shadows:>7} {per['schedules']:>10.3f} {per['train']:>9.2f} "
            f"{100 * per['schedules'] / per['train']:>8.1f}% {per['hooks']:>16.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="interleaved repetitions (>= 20)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats} interleaved repetitions")
    optimizer_steps(args.repeats)
    schedule_overhead(args.repeats)


if __name__ == "__main__":
    main()
