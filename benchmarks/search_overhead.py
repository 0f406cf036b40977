"""Search overhead: a study that samples its configurations vs the same configurations as a
fixed list of trials (a grid), same executor, same store, same training.

A: ``Coordinator`` + ``run_with_searches`` (the driver asks Optuna for every batch, records
the draws, runs their trials, tells the results and records the tells); B: ``run_study`` of
exactly the trials A drew, given up front. Both write every result to a fresh store. The
difference is the sampling alone: Optuna's ask/tell, the ``searches``/``search_draws``
writes and the reads that decide when a batch is told. The script also times those calls
inside A directly (the coordinator's share of A's wall time).

Runs are interleaved (A B, B A, ...), medians compared; the goal is a ratio under 1.02.
Short trials make the ratio an upper bound for longer ones: the sampling costs the same
per configuration, whatever a trial costs.

    python benchmarks/search_overhead.py [--study budgets-quick] [--epochs 3] [--seeds 1]
        [--repeats 20] [--workers 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.search.coordinator import Coordinator, plan, run_with_searches
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore


def sampled(study, store_path: Path, workers: int) -> tuple[float, float, list]:
    """(wall time, seconds in the coordinator's own calls, the trials drawn)."""
    start = time.perf_counter()
    with ResultStore(store_path) as store:
        coordinator = Coordinator(plan(study), store)
        own = time.perf_counter() - start
        advance = coordinator.advance

        def timed():  # the coordinator's share: tell, ask, record
            nonlocal own
            began = time.perf_counter()
            try:
                return advance()
            finally:
                own += time.perf_counter() - began

        coordinator.advance = timed  # type: ignore[method-assign]
        report = run_with_searches(expand(study), coordinator, store, LocalExecutor(workers))
        specs = coordinator.specs()
    assert report.counts.get("failed", 0) == 0, report.failures[:1]
    return time.perf_counter() - start, own, specs


def fixed(specs: list, store_path: Path, workers: int) -> float:
    start = time.perf_counter()
    with ResultStore(store_path) as store:
        report = run_study(specs, store, LocalExecutor(workers))
    assert report.written == len(specs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="budgets-quick")
    parser.add_argument("--epochs", type=int, default=3, help="per trial (the preset: 30)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1 (the preset: 2)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    study = load_study(args.study)
    study = dataclasses.replace(study, epochs=(args.epochs,), seeds=tuple(range(args.seeds)))
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        # warm-up: data cached, the same draws every time (the sequence is seeded)
        _, _, specs = sampled(study, Path(folder) / "warm.sqlite", args.workers)
        print(
            f"{args.study}: {len(plan(study))} searches, {len(specs)} trials of {args.epochs} "
            f"epochs, {args.workers} worker(s), {args.repeats} interleaved repetitions"
        )
        a_times, b_times, own_times, pairs, gaps = [], [], [], [], []
        for r in range(args.repeats):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            result = {}
            for kind in order:
                path = Path(folder) / f"{kind}{r}.sqlite"
                if kind == "A":
                    wall, own, drawn = sampled(study, path, args.workers)
                    assert [s.trial_id for s in drawn] == [s.trial_id for s in specs]
                    result["A"] = wall
                    own_times.append(own)
                else:
                    result["B"] = fixed(specs, path, args.workers)
            a_times.append(result["A"])
            b_times.append(result["B"])
            pairs.append(result["A"] / result["B"])
            gaps.append(result["A"] - result["B"])
    a, b, own = statistics.median(a_times), statistics.median(b_times), statistics.median(own_times)
    print(f"sampled (A): median {a:.3f} s   fixed list (B): median {b:.3f} s")
    print(f"ratio A/B of the medians: {a / b:.4f}; median of the paired ratios: "
          f"{statistics.median(pairs):.4f} (goal < 1.02)")  # fmt: skip
    print(f"median paired difference A - B: {statistics.median(gaps) * 1000:.0f} ms "
          f"(quartiles {statistics.quantiles(gaps, n=4)[0] * 1000:.0f} to "
          f"{statistics.quantiles(gaps, n=4)[2] * 1000:.0f} ms)")  # fmt: skip
    print(
        f"coordinator's own calls (ask, tell, record, checks): median {own * 1000:.1f} ms, "
        f"{100 * own / a:.2f} % of A; per trial {1000 * own / len(specs):.2f} ms"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
