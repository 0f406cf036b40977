"""Hugging Face Trainer: the per-step cost of Demon Adam + DemonCallback against AdamW alone.

Three configurations train the same small MLP (random regression data, one torch thread)
under ``Trainer.train`` with the Trainer's linear LR schedule, logging every 10 steps:

* ``adamw``: ``torch.optim.AdamW``, no callback (the baseline);
* ``demon-adam``: ``DemonAdam`` + ``DemonCallback()`` (the optimizer schedules itself; the
  callback sets ``T`` and logs the momentum);
* ``adamw+schedule``: ``torch.optim.AdamW`` + ``DemonCallback(schedule="demon")`` (a
  ``MomentumScheduler`` stepped, and its state stored in the optimizer, every step).

A step's time is the interval between consecutive ``on_step_end`` calls of a timing
callback placed last, in the training thread's CPU time (``time.thread_time``: the time
other processes of a shared machine hold the core is not counted; the whole step runs in
that thread, with one torch thread and no data-loader workers) and in wall time. A run's
figure is the median interval after the first ``--warmup`` steps; the runs are interleaved
(the order rotates each repetition) and the medians over ``--repeats`` runs compared. The
goal: each ratio to the baseline within 1.05. On a machine that other processes load,
two runs of the same configuration differ by several per cent; the time spent inside
the callback's own hooks (measured directly, per step) is printed as well.

    python benchmarks/hf_trainer_overhead.py [--steps 80] [--warmup 10] [--repeats 21]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import transformers
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from demon_optim import DemonAdam
from demon_optim.integrations.transformers import DemonCallback

WIDTH, FEATURES, BATCH, LR = 256, 64, 32, 1e-3


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, WIDTH),
            torch.nn.GELU(),
            torch.nn.Linear(WIDTH, WIDTH),
            torch.nn.GELU(),
            torch.nn.Linear(WIDTH, 1),
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.net(x).squeeze(-1), labels)}


class Regression(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, FEATURES, generator=generator)
        self.y = self.x[:, :8].sum(dim=1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class StepTimer(TrainerCallback):
    """When each optimizer step ends (on_step_end): thread CPU time and wall time."""

    def __init__(self) -> None:
        self.ends: list[tuple[float, float]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append((time.thread_time(), time.perf_counter()))


def median_interval(ends: list[float]) -> float:
    return statistics.median(b - a for a, b in itertools.pairwise(ends))


class TimedDemonCallback(DemonCallback):
    """DemonCallback, with the thread CPU time spent in its per-step hooks added up."""

    spent: ClassVar[list[float]] = []

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        start = time.thread_time()
        super().on_step_end(*args, **kwargs)
        self.spent.append(time.thread_time() - start)

    def on_log(self, *args: Any, **kwargs: Any) -> None:
        start = time.thread_time()
        super().on_log(*args, **kwargs)
        self.spent.append(time.thread_time() - start)


def adamw(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, list[TrainerCallback]]:
    return torch.optim.AdamW(model.parameters(), lr=LR), []


def demon_adam(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, list[TrainerCallback]]:
    return DemonAdam(model.parameters(), lr=LR), [TimedDemonCallback()]


def adamw_schedule(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, list[TrainerCallback]]:
    return torch.optim.AdamW(model.parameters(), lr=LR), [TimedDemonCallback(schedule="demon")]


CONFIGS: dict[str, Callable[[torch.nn.Module], tuple[Any, list[TrainerCallback]]]] = {
    "adamw": adamw,
    "demon-adam": demon_adam,
    "adamw+schedule": adamw_schedule,
}


def step_time(
    make: Callable[..., Any], steps: int, warmup: int, data: Regression
) -> tuple[float, float]:
    """The median CPU and wall time of an optimizer step of one Trainer run, after
    ``warmup`` steps."""
    torch.manual_seed(0)
    model = MLP()
    optimizer, callbacks = make(model)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(
            output_dir=folder,
            max_steps=steps,
            per_device_train_batch_size=BATCH,
            logging_steps=10,
            save_strategy="no",
            use_cpu=True,
            report_to="none",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            optimizers=(optimizer, None),
            callbacks=[*callbacks, timer],
        )
        trainer.remove_callback(PrinterCallback)  # printing logs is not what is measured
        trainer.train()
    assert len(timer.ends) == steps
    cpu, wall = zip(*timer.ends[warmup:], strict=True)
    return median_interval(list(cpu)), median_interval(list(wall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    data = Regression(args.steps * BATCH)
    names = list(CONFIGS)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, 1 thread; "
        f"MLP {FEATURES}-{WIDTH}-{WIDTH}-1, batch {BATCH}, {args.steps} steps a run "
        f"(the first {args.warmup} not timed); goal: ratio <= 1.05"
    )
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    hooks: dict[str, float] = dict.fromkeys(names, 0.0)
    for repeat in range(args.repeats + 1):  # repeat 0 warms up (imports, allocator)
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            TimedDemonCallback.spent.clear()
            seconds = step_time(CONFIGS[name], args.steps, args.warmup, data)
            if repeat:
                times[name].append(seconds)
                hooks[name] += sum(TimedDemonCallback.spent) / (args.steps * args.repeats)
    medians = {
        name: [statistics.median(column) for column in zip(*runs, strict=True)]
        for name, runs in times.items()
    }
    (base_cpu, base_wall) = medians["adamw"]
    print(f"per optimizer step, medians of {args.repeats} runs:")
    for name, (cpu, wall) in medians.items():
        print(
            f"  {name:15} cpu {cpu * 1e6:7.1f} us -> ratio {cpu / base_cpu:.3f}   "
            f"wall {wall * 1e6:7.1f} us -> ratio {wall / base_wall:.3f}   "
            f"in DemonCallback {hooks[name] * 1e6:5.1f} us ({hooks[name] / base_cpu:.1%})"
        )


if __name__ == "__main__":
    main()
