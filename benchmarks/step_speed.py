"""Optimizer step time: DemonSGD / DemonAdam and the reference optimizers (QHM, AggMo,
QHAdam, YellowFin) against every implementation of torch SGD / Adam.

All optimizers step the same kind of parameters (~20M float32 values in 50 tensors, by
default) in one process, interleaved round by round so that a noisy neighbour slows all of
them alike, their tensors allocated in turn so that none gets better placed memory; each
figure is the median over the rounds. Ratios are against torch's fastest
equivalent measured in the same run (SGD for QHM, AggMo and YellowFin, Adam for QHAdam);
AggMo's ratio is per buffer (its step time over K torch SGD steps). "GB/s" counts the bytes an
ideal one-pass update must move (SGD: read p, g, buf, write p, buf; Adam: read p, g, m, v,
write p, m, v; AggMo: p, g and K buffers; YellowFin: SGD's plus its gradient average).
The compiled QHAdam rows compile during the warm-up steps (tens of seconds on a CPU).

    python benchmarks/step_speed.py              # the README's figures
    python benchmarks/step_speed.py --rounds 50 --numel 5e6 --tensors 20
    python benchmarks/step_speed.py --families qhm qhadam
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from demon_optim import DemonAdam, DemonSGD
from demon_optim.optim import QHM, AggMo, QHAdam, YellowFin

Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


AGGMO_BETAS = (0.0, 0.9, 0.99)
# How many torch steps one step of a row is compared with (AggMo: one SGD step per buffer).
PER_BUFFER = {"AggMo": len(AGGMO_BETAS), "AggMo(fused=False)": len(AGGMO_BETAS)}


def candidates(total_steps: int) -> dict[str, dict[str, Factory]]:
    """Per family: name -> optimizer factory. The first entry of each is the default path."""
    sgd = {"lr": 0.01, "momentum": 0.9}
    adam = {"lr": 1e-3}
    qhm = {"lr": 0.1, "momentum": 0.999, "nu": 0.7}  # the QH paper's recommended beta, nu
    qhadam = {"lr": 1e-3, "betas": (0.995, 0.999), "nus": (0.7, 1.0)}
    torch_sgd = {
        "torch SGD for-loop": lambda p: torch.optim.SGD(p, **sgd, foreach=False),
        "torch SGD foreach": lambda p: torch.optim.SGD(p, **sgd, foreach=True),
        "torch SGD fused": lambda p: torch.optim.SGD(p, **sgd, fused=True),
    }
    torch_adam = {
        "torch Adam for-loop": lambda p: torch.optim.Adam(p, **adam, foreach=False),
        "torch Adam foreach": lambda p: torch.optim.Adam(p, **adam, foreach=True),
        "torch Adam fused": lambda p: torch.optim.Adam(p, **adam, fused=True),
    }
    return {
        "sgd": {
            "DemonSGD": lambda p: DemonSGD(p, **sgd, total_steps=total_steps),
            "DemonSGD(fused=False)": lambda p: DemonSGD(
                p, **sgd, total_steps=total_steps, fused=False
            ),
            "torch SGD for-loop": lambda p: torch.optim.SGD(p, **sgd, foreach=False),
            "torch SGD foreach": lambda p: torch.optim.SGD(p, **sgd, foreach=True),
            "torch SGD fused": lambda p: torch.optim.SGD(p, **sgd, fused=True),
        },
        "adam": {
            "DemonAdam": lambda p: DemonAdam(p, **adam, total_steps=total_steps),
            "DemonAdam(damped=True)": lambda p: DemonAdam(
                p, **adam, total_steps=total_steps, damped=True
            ),
            "DemonAdam(fused=False)": lambda p: DemonAdam(
                p, **adam, total_steps=total_steps, fused=False
            ),
            "torch Adam for-loop": lambda p: torch.optim.Adam(p, **adam, foreach=False),
            "torch Adam foreach": lambda p: torch.optim.Adam(p, **adam, foreach=True),
            "torch Adam fused": lambda p: torch.optim.Adam(p, **adam, fused=True),
        },
        "qhm": {
            "QHM": lambda p: QHM(p, **qhm),
            "QHM(fused=False)": lambda p: QHM(p, **qhm, fused=False),
            **torch_sgd,
        },
        "aggmo": {
            "AggMo": lambda p: AggMo(p, lr=0.01, betas=AGGMO_BETAS),
            "AggMo(fused=False)": lambda p: AggMo(p, lr=0.01, betas=AGGMO_BETAS, fused=False),
            **torch_sgd,
        },
        "qhadam": {
            "QHAdam": lambda p: QHAdam(p, **qhadam),
            "QHAdam(nus=(1, 1))": lambda p: QHAdam(p, lr=1e-3),
            "QHAdam(fused=False)": lambda p: QHAdam(p, **qhadam, fused=False),
            "QHAdam(nus=(0.7, 0.9))": lambda p: QHAdam(p, lr=1e-3, nus=(0.7, 0.9)),
            "QHAdam(compiled=True)": lambda p: QHAdam(p, **qhadam, compiled=True),
            "QHAdam(nus=(0.7, 0.9), compiled)": lambda p: QHAdam(
                p, lr=1e-3, nus=(0.7, 0.9), compiled=True
            ),
            **torch_adam,
        },
        "yellowfin": {
            "YellowFin": lambda p: YellowFin(p, initial_lr=1e-3),
            "YellowFin(fused=False)": lambda p: YellowFin(p, initial_lr=1e-3, fused=False),
            **torch_sgd,
        },
    }


# float32 tensors an ideal update touches per value
BYTES_PER_VALUE = {"sgd": 5 * 4, "adam": 7 * 4, "qhm": 5 * 4, "qhadam": 7 * 4, "yellowfin": 7 * 4}


def bytes_per_value(family: str, name: str) -> int:
    if name in PER_BUFFER:  # p, g read, p written, K buffers read and written
        return (3 + 2 * PER_BUFFER[name]) * 4
    if name.startswith("torch SGD"):
        return BYTES_PER_VALUE["sgd"]
    return BYTES_PER_VALUE[family]


def make_params(numel: int, tensors: int, count: int) -> list[list[torch.nn.Parameter]]:
    """``count`` sets of parameters (set ``i`` from seed ``i``), allocated tensor by tensor
    across the sets: built one set after another, the first-built set stepped 3-8% slower
    than the last on this project's machine (identical torch optimizers), which is the
    size of the differences measured here."""
    gens = [torch.Generator().manual_seed(i) for i in range(count)]
    size = numel // tensors
    sets: list[list[torch.nn.Parameter]] = [[] for _ in range(count)]
    for _ in range(tensors):
        for params, gen in zip(sets, gens, strict=True):
            p = torch.nn.Parameter(torch.randn(size, generator=gen))
            p.grad = torch.randn(size, generator=gen) * 1e-3
            params.append(p)
    return sets


def measure(
    rounds: int, numel: int, tensors: int, warmup: int, families: list[str]
) -> dict[str, dict[str, list[float]]]:
    total_steps = rounds + warmup + 1  # Demon's beta moves on every timed step
    times: dict[str, dict[str, list[float]]] = {}
    for family, factories in candidates(total_steps).items():
        if family not in families:
            continue
        sets = make_params(numel, tensors, len(factories))
        opts = {
            name: make(params) for (name, make), params in zip(factories.items(), sets, strict=True)
        }
        # warm-up round by round too: the first steps allocate the optimizers' state
        for round_ in range(warmup):
            for name, opt in opts.items():
                start = time.perf_counter()
                opt.step()
                if round_ == 0 and "compiled" in name:  # its first step compiles
                    print(f"{name}: first step (compiles) {time.perf_counter() - start:.1f} s")
        times[family] = {name: [] for name in opts}
        for _ in range(rounds):
            for name, opt in opts.items():
                start = time.perf_counter()
                opt.step()
                times[family][name].append(time.perf_counter() - start)
        del opts, sets
    return times


def report(times: dict[str, dict[str, list[float]]], numel: int) -> None:
    for family, by_name in times.items():
        medians = {name: statistics.median(ts) for name, ts in by_name.items()}
        torch_best = min((t, n) for n, t in medians.items() if n.startswith("torch"))
        print(
            f"\n{family.upper()}: {numel / 1e6:.1f}M float32 values, fastest torch: "
            f"{torch_best[1]} ({torch_best[0] * 1e3:.2f} ms)"
        )
        print(f"  {'implementation':<34}{'median ms':>10}{'GB/s':>8}{'vs fastest torch':>18}")
        for name, t in medians.items():
            gbs = bytes_per_value(family, name) * numel / t / 1e9
            per = PER_BUFFER.get(name, 1)
            note = f" per buffer ({per} buffers)" if per > 1 else ""
            ratio = t / per / torch_best[0]
            print(f"  {name:<34}{t * 1e3:>10.2f}{gbs:>8.1f}{ratio:>17.2f}x{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (>= 20)")
    parser.add_argument("--numel", type=float, default=20e6, help="values in all tensors")
    parser.add_argument("--tensors", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    families = list(candidates(1))
    parser.add_argument(
        "--families", nargs="+", choices=families, default=families, help="what to measure"
    )
    args = parser.parse_args()
    if args.rounds < 20:
        parser.error(f"--rounds: got {args.rounds}; allowed: >= 20 (medians of at least 20)")
    if args.warmup < 1:
        parser.error(f"--warmup: got {args.warmup}; allowed: >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.rounds} interleaved rounds, medians"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = measure(args.rounds, int(args.numel), args.tensors, args.warmup, args.families)
    report(times, int(args.numel))


if __name__ == "__main__":
    main()
