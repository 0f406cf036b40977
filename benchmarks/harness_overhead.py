"""Harness overhead: one trial through the harness vs the same training as a bare loop.

The harness path is what a study does per trial: ``LocalExecutor(1)`` (one torch thread),
``execute`` (task and method from the registries, cached data, the trial loop with its
per-epoch records) and one ``ResultStore.write`` transaction (WAL, synchronous=FULL). The
bare loop is the same training written by hand: same model, seed, shuffling, optimizer and
schedule, validation after every epoch and a final test evaluation. Both produce identical
metrics (checked), so the difference is the harness alone.

Runs are interleaved (A B, B A, ...) and the medians compared; the goal is a ratio <= 1.10.

    python benchmarks/harness_overhead.py [--task mnist1d-mlp] [--epochs 20] [--repeats 9]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from demon_optim.study.executors import LocalExecutor
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.tasks import get_task

LR, MOMENTUM = 0.1, 0.9


def harness(spec: TrialSpec, store: ResultStore) -> tuple[float, float]:
    (result,) = LocalExecutor(1).map_unordered([spec])
    store.write(result)
    assert result.status == "done", result.error
    return result.val_metric, result.test_metric


def bare(spec: TrialSpec) -> tuple[float, float]:
    task = get_task(spec.task)
    data = task.load_data()
    x, y = data.train.inputs, data.train.targets
    n, batch = len(x), spec.batch_size
    steps = math.ceil(n / batch)
    torch.manual_seed(spec.seed)
    model = task.build_model()
    shuffle = torch.Generator().manual_seed(spec.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    scheduler = None
    if spec.method == "sgdm+lr-cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs * steps)
    val = 0.0
    for _ in range(spec.epochs):
        model.train()
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            loss = task.loss(model(x[index]), y[index])
            total += loss.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        val = task.evaluate(model, data.val)
    return val, task.evaluate(model, data.test)


def measure(task: str, method: str, epochs: int, repeats: int, store: ResultStore) -> float:
    config = (("lr", LR), ("momentum", MOMENTUM), ("weight_decay", 0.0))
    batch = get_task(task).batch_size
    times: dict[str, list[float]] = {"harness": [], "bare": []}
    for repeat in range(repeats + 1):  # repeat 0 warms up (data, imports, allocator)
        spec = TrialSpec(task, method, config, seed=repeat, epochs=epochs, batch_size=batch)
        order = ("harness", "bare") if repeat % 2 else ("bare", "harness")
        metrics = {}
        for name in order:
            start = time.perf_counter()
            metrics[name] = harness(spec, store) if name == "harness" else bare(spec)
            if repeat:
                times[name].append(time.perf_counter() - start)
        assert metrics["harness"] == metrics["bare"], f"not the same training: {metrics}"
    h, b = statistics.median(times["harness"]), statistics.median(times["bare"])
    print(
        f"{task:12} {method:15} {epochs:3} epochs: harness {h:.3f} s, bare loop {b:.3f} s "
        f"(medians of {repeats}) -> ratio {h / b:.3f}"
    )
    return h / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mnist1d-mlp")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; goal: ratio <= 1.10")
    with tempfile.TemporaryDirectory() as folder, ResultStore(Path(folder) / "b.sqlite") as store:
        for method in ("sgdm", "sgdm+lr-cosine"):
            measure(args.task, method, args.epochs, args.repeats, store)


if __name__ == "__main__":
    main()
