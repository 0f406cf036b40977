"""What the text tasks cost on one CPU thread, as a study worker runs them.

For each task: load (tokenise) its data, build the model, then time ``--steps`` training
steps (Adam, the task's batches: real sentences, dynamic padding) and one evaluation of
the validation split. Reports wall and process (CPU) seconds; process time is the figure
to trust on a shared machine. ``--bert-base L ...`` also times a randomly initialised
BERT-base (no weights needed) on batches of 32 x L token ids, the GLUE tasks' model.

    PYTHONPATH=src python benchmarks/text_costs.py --tasks rt-minilm rt-transformer
    PYTHONPATH=src python benchmarks/text_costs.py --tasks --bert-base 64 128 --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def time_task(name: str, steps: int, data_dir: str | None) -> dict[str, float]:
    from demon_optim.study.tasks import get_task

    task = get_task(name)
    data, load_wall, _ = _timed(lambda: task.load_data(data_dir))
    torch.manual_seed(0)
    model, build_wall, _ = _timed(task.build_model)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)
    generator = torch.Generator().manual_seed(0)
    batches = task.batches(data.train, task.batch_size, generator, augment_generator=generator)
    walls, cpus, widths = [], [], []
    model.train()
    for _, (inputs, targets) in zip(range(steps + 1), batches, strict=False):

        def step(inputs=inputs, targets=targets):
            loss = task.loss(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        _, wall, cpu = _timed(step)
        walls.append(wall)
        cpus.append(cpu)
        widths.append(inputs.shape[1])
    walls, cpus = walls[1:], cpus[1:]  # the first step warms up
    _, eval_wall, eval_cpu = _timed(lambda: task.evaluate_metrics(model, data.val))
    n_steps = task.steps_per_epoch(data.train, task.batch_size)
    step_cpu = statistics.median(cpus)
    return {
        "load_s": load_wall,
        "build_s": build_wall,
        "step_wall_s": statistics.median(walls),
        "step_cpu_s": step_cpu,
        "mean_width": statistics.mean(widths),
        "epoch_cpu_s": step_cpu * n_steps,
        "steps_per_epoch": n_steps,
        "eval_wall_s": eval_wall,
        "eval_cpu_s": eval_cpu,
        "val_size": len(data.val),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def time_bert_base(length: int, steps: int) -> dict[str, float]:
    import transformers

    from demon_optim.study.models.transformer import SequenceClassifier, from_config

    torch.manual_seed(0)
    config = transformers.BertConfig(num_labels=2)
    model = SequenceClassifier(from_config(config), 0, 102, True, False)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-5)
    ids = torch.randint(1000, 30000, (32, length))
    targets = torch.randint(0, 2, (32,))
    cpus = []
    for _ in range(steps + 1):

        def step():
            loss = torch.nn.functional.cross_entropy(model(ids), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        cpus.append(_timed(step)[2])
    return {"length": length, "step_cpu_s": statistics.median(cpus[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=["rt-minilm", "rt-transformer"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--bert-base", nargs="*", type=int, default=[])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.tasks:
        figures = time_task(name, args.steps, args.data_dir)
        print(name, " ".join(f"{k}={v:.3g}" for k, v in figures.items()), flush=True)
    for length in args.bert_base:
        figures = time_bert_base(length, args.steps)
        print("bert-base", " ".join(f"{k}={v:.3g}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
