"""Batched models: one training step's forward + backward for M models at once against the
same M models one after another (demon_optim.study.batched.models).

MNIST-1D shapes: inputs ``[B, 40]``, batch 100, 10 classes; the built-in models
(MLP 40-100-100-10 residual, 15,210 parameters; ConvNet1D with 25 channels, 5,210;
bidirectional GRU with hidden 6, 5,134). Each model gets its own batch; the loss is the
sum of the models' mean cross-entropies, so each model's gradient is its own. One torch
thread by default. Every variant runs once per round, rounds interleaved (a noisy
neighbour slows all alike); figures are medians over the rounds, per trial (time / M).

Variants: ``one by one`` (the M torch models in turn, the baseline); the batched forms:
MLP ``bmm``; CNN ``unfold`` (im2col + bmm), ``grouped`` (one grouped conv1d, models folded
into channels) and ``vmap`` (torch.func over the torch model); GRU ``bmm`` (hand-written
GRU, models x directions as the batch of each step's product).

MLP floor: what a batched MLP step cannot go below on this machine, measured in the same
run: the batched matrix products of its forward and backward passes alone
(``torch.bmm(..., out=)`` of the same shapes: 3 forward, 3 weight gradients, 2 input
gradients) plus one pass over parameters and optimizer state (SGD with momentum: read
parameter, gradient and buffer, write parameter and buffer: 20 bytes per float32 value) at
the memory bandwidth of a large tensor copy. The batched MLP's full step (forward,
backward, one fused torch SGD-momentum step over the stacked parameters, standing in for
the batched optimizer) is compared with it, and so is forward + backward with the
products alone.

    python benchmarks/batched_models.py                  # M in 16 64 128, all families
    python benchmarks/batched_models.py --models 64 --families cnn --rounds 30
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from demon_optim.study.batched.models import batch_models
from demon_optim.study.models import MLP, ConvNet1D, GRUClassifier

LENGTH, CLASSES = 40, 10
BUILDERS: dict[str, Callable[[], torch.nn.Module]] = {
    "mlp": lambda: MLP(LENGTH, (100, 100), CLASSES, residual=True),
    "cnn": lambda: ConvNet1D(LENGTH, 25, CLASSES),
    "gru": lambda: GRUClassifier(LENGTH, 6, CLASSES),
}
# batched variants per family: name -> batch_models keyword arguments
VARIANTS: dict[str, dict[str, dict[str, str]]] = {
    "mlp": {"bmm": {}},
    "cnn": {
        "unfold": {"conv": "unfold"},
        "grouped": {"conv": "grouped"},
        "vmap": {"form": "generic"},
    },
    "gru": {"bmm": {}},
}
BASELINE = "one by one"

Step = Callable[[], None]


def build(family: str, size: int) -> list[torch.nn.Module]:
    models = []
    for seed in range(size):
        torch.manual_seed(seed)
        models.append(BUILDERS[family]())
    return models


def steps_for(family: str, size: int, batch: int) -> tuple[dict[str, Step], dict[str, Step]]:
    """(forward + backward steps by variant, full steps with an SGD update by variant)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(size, batch, LENGTH, generator=generator)
    targets = torch.randint(0, CLASSES, (size, batch), generator=generator)
    flat_targets = targets.reshape(-1)
    models = build(family, size)
    fwd_bwd: dict[str, Step] = {}
    full: dict[str, Step] = {}

    def one_by_one() -> None:
        for m, model in enumerate(models):
            for p in model.parameters():
                p.grad = None
            F.cross_entropy(model(inputs[m]), targets[m]).backward()

    fwd_bwd[BASELINE] = one_by_one
    for name, options in VARIANTS[family].items():
        batched = batch_models(copy.deepcopy(models), **options)
        params = batched.stacked_parameters()

        def step(batched=batched, params=params) -> None:
            for p in params:
                p.grad = None
            outputs = batched(inputs)
            # sum over models of each model's mean loss
            loss = F.cross_entropy(outputs.reshape(size * batch, -1), flat_targets, reduction="sum")
            (loss / batch).backward()

        fwd_bwd[name] = step
        if family == "mlp":
            optimizer = sgd(params)

            def full_step(step=step, optimizer=optimizer) -> None:
                step()
                optimizer.step()

            full[name] = full_step
    if family == "mlp":
        optimizers = [sgd(list(model.parameters())) for model in models]

        def one_by_one_full() -> None:
            for m, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
                for p in model.parameters():
                    p.grad = None
                F.cross_entropy(model(inputs[m]), targets[m]).backward()
                optimizer.step()

        full[BASELINE] = one_by_one_full
    return fwd_bwd, full


def sgd(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """torch SGD with momentum, fused where this torch has it on the CPU."""
    try:
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)


def floor_steps(size: int, batch: int) -> dict[str, Step]:
    """The MLP's batched products alone (forward and backward), and a large copy."""
    generator = torch.Generator().manual_seed(1)
    widths = [LENGTH, 100, 100, CLASSES]
    tensors = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        x = torch.randn(size, batch, fan_in, generator=generator)
        w = torch.randn(size, fan_out, fan_in, generator=generator)
        y = torch.empty(size, batch, fan_out)
        dy = torch.randn(size, batch, fan_out, generator=generator)
        dw = torch.empty(size, fan_out, fan_in)
        dx = torch.empty(size, batch, fan_in) if index > 0 else None
        tensors.append((x, w, y, dy, dw, dx))

    def products() -> None:
        for x, w, y, _, _, _ in tensors:
            torch.bmm(x, w.transpose(1, 2), out=y)
        for x, w, _, dy, dw, dx in reversed(tensors):
            torch.bmm(dy.transpose(1, 2), x, out=dw)
            if dx is not None:
                torch.bmm(dy, w, out=dx)

    source = torch.randn(32 * 2**20, generator=generator)  # 128 MiB
    target = torch.empty_like(source)
    return {"products": products, "copy": lambda: target.copy_(source)}


def measure(steps: dict[str, Step], rounds: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_ in range(warmup + rounds):
        # rotate the order so that no variant always runs first (or after the same one)
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            steps[name]()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def report_family(family: str, size: int, times: dict[str, list[float]], label: str) -> None:
    per_trial = {name: statistics.median(ts) / size for name, ts in times.items()}
    base = per_trial[BASELINE]
    print(f"\n{family.upper()} M={size}: {label}, per trial (median of {len(times[BASELINE])})")
    print(f"  {'variant':<12}{'ms/trial':>10}{'vs one by one':>16}")
    for name, t in per_trial.items():
        print(f"  {name:<12}{t * 1e3:>10.3f}{base / t:>15.2f}x")


def report_floor(
    size: int, floor_times: dict[str, list[float]], fwd_bwd: float, full: float
) -> None:
    products = statistics.median(floor_times["products"])
    copy_s = statistics.median(floor_times["copy"])
    bandwidth = 2 * 32 * 2**20 * 4 / copy_s  # bytes read + written per second
    parameters = sum(p.numel() for p in BUILDERS["mlp"]().parameters())
    pass_s = size * parameters * 20 / bandwidth
    floor = products + pass_s
    print(
        f"  floor: products {products / size * 1e3:.3f} ms/trial + parameter pass "
        f"{pass_s / size * 1e3:.3f} ms/trial (copy bandwidth {bandwidth / 1e9:.1f} GB/s) = "
        f"{floor / size * 1e3:.3f} ms/trial"
    )
    print(
        f"  batched full step / floor: {full / floor:.2f}x; "
        f"forward + backward / products alone: {fwd_bwd / products:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[16, 64, 128], help="M")
    parser.add_argument("--families", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (>= 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (>= 1)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if args.rounds < 20:
        parser.error(f"--rounds: got {args.rounds}; allowed: >= 20 (medians of at least 20)")
    if args.warmup < 1:
        parser.error(f"--warmup: got {args.warmup}; allowed: >= 1")
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
        f"float32; ratios are speed-ups (one by one time / variant time), same run"
    )
    for family in args.families:
        for size in args.models:
            fwd_bwd, full = steps_for(family, size, args.batch)
            if family == "mlp":
                both = {**fwd_bwd, **{f"{k} +SGD": v for k, v in full.items()}}
                both.update({f"floor {k}": v for k, v in floor_steps(size, args.batch).items()})
                times = measure(both, args.rounds, args.warmup)
                report_family(family, size, {k: times[k] for k in fwd_bwd}, "forward + backward")
                report_family(
                    family, size, {k: times[f"{k} +SGD"] for k in full}, "full step with SGD"
                )
                floor_times = {k: times[f"floor {k}"] for k in ("products", "copy")}
                report_floor(
                    size,
                    floor_times,
                    statistics.median(times["bmm"]),
                    statistics.median(times["bmm +SGD"]),
                )
            else:
                report_family(
                    family, size, measure(fwd_bwd, args.rounds, args.warmup), "forward + backward"
                )


if __name__ == "__main__":
    main()
