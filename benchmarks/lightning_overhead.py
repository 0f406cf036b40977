"""Lightning overhead: the per-step time of a fit with DemonAdam + DemonCallback vs torch's Adam.

Three fits of the same small MLP, the same data and the same Trainer settings, differing only
in the optimizer and the callback:

* ``adam``: ``torch.optim.Adam`` and no DemonCallback (the baseline);
* ``demon-adam``: ``DemonAdam(total_steps=T)`` and no callback (the optimizer's own cost);
* ``demon-adam+callback``: ``DemonAdam()`` with ``DemonCallback()``, which sets ``T`` and
  logs the momentum of every step.

The time per optimizer step is measured inside the fit, from the start of batch ``WARMUP`` to
the end of training (Trainer setup, the first batches and teardown excluded). Runs are
interleaved (the order rotates every repetition) and the medians compared; the goal is
``demon-adam+callback / adam`` within 5 %.

    python benchmarks/lightning_overhead.py [--steps 200] [--repeats 20] [--csv]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from demon_optim import DemonAdam
from demon_optim.integrations.lightning import DemonCallback

WARMUP = 20  # batches before the clock starts
BATCH = 64


class MLP(pl.LightningModule):
    def __init__(self, optimizer: str, total_steps: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                 nn.Linear(64, 10))  # fmt: skip
        self.optimizer, self.total_steps = optimizer, total_steps

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=1e-3)
        if self.optimizer == "demon-adam":
            return DemonAdam(self.parameters(), lr=1e-4, total_steps=self.total_steps)
        return DemonAdam(self.parameters(), lr=1e-4)  # T from DemonCallback


class Clock(pl.Callback):
    """Seconds per batch from the start of batch WARMUP to the end of training."""

    def __init__(self) -> None:
        self.start = self.per_step = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, i: int) -> None:
        if trainer.global_step == WARMUP:
            self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, module: Any) -> None:
        self.per_step = (time.perf_counter() - self.start) / (trainer.global_step - WARMUP)


def fit(name: str, loader: torch.utils.data.DataLoader, steps: int, csv: str | None) -> float:
    clock = Clock()
    callbacks: list[pl.Callback] = [clock]
    if name == "demon-adam+callback":
        callbacks.append(DemonCallback())
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        callbacks=callbacks,
        logger=pl.loggers.CSVLogger(csv) if csv else False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(MLP(name, steps), loader)
    assert trainer.global_step == steps
    return clock.per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per fit")
    parser.add_argument("--repeats", type=int, default=20, help="interleaved repetitions")
    parser.add_argument("--csv", action="store_true", help="log to a CSVLogger (else none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # Lightning's advice (workers, logging interval)
    for name in ("lightning.pytorch", "lightning.fabric"):
        __import__("logging").getLogger(name).setLevel("ERROR")

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.steps * BATCH, 32, generator=gen)
    y = torch.randint(0, 10, (args.steps * BATCH,), generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    names = ["adam", "demon-adam", "demon-adam+callback"]
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as folder:
        csv = folder if args.csv else None
        for name in names:  # warm-up fits, not counted
            fit(name, loader, WARMUP + 5, csv)
        for repeat in range(args.repeats):
            order = names[repeat % 3 :] + names[: repeat % 3]
            for name in order:
                times[name].append(fit(name, loader, args.steps, csv))

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"per optimizer step, median of {args.repeats} interleaved fits of {args.steps} steps")
    logger = "CSV, every 50 steps" if args.csv else "none"
    print(f"(MLP 32-64-64-10, batch {BATCH}, one CPU thread, logger: {logger})")
    for name in names:
        print(f"  {name:21s} {median[name] * 1e6:8.1f} us")
    base, own = median["adam"], median["demon-adam"]
    with_callback = median["demon-adam+callback"]
    print(f"demon-adam+callback / adam:       {with_callback / base:.3f}  (goal <= 1.05)")
    print(f"demon-adam / adam:                {own / base:.3f}  (the optimizer itself)")
    print(f"demon-adam+callback / demon-adam: {with_callback / own:.3f}  (the callback itself)")


if __name__ == "__main__":
    main()
