"""Parallel speed-up: a whole study with N workers vs 1 worker, each into a fresh store.

Times ``run_study`` (executor start-up, every trial, every store write), as ``demon-optim
run`` does after parsing; 1 worker runs in-process, N workers are spawned processes. Also
checks that both runs stored identical metrics (trials do not depend on the worker count).
The goal on 2 cores: ``quick`` at least 1.6x faster with 2 workers than with 1.

On Linux it also reports how much CPU other processes took during each run (from
``/proc/stat`` minus this process tree's own CPU time): a busy neighbour makes the speed-up
meaningless, so measure on an otherwise idle machine.

    python benchmarks/parallel_speedup.py [--study quick] [--workers 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from cpu_meter import OtherCores

from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore


def timed_run(study: str, workers: int, folder: Path) -> tuple[float, dict, float]:
    specs = expand(load_study(study))
    path = folder / f"{study}-{workers}-{time.monotonic_ns()}.sqlite"
    with ResultStore(path) as store:
        with OtherCores() as others:
            report = run_study(specs, store, LocalExecutor(workers), progress=True)
        rows = store.rows()
    assert report.written == len(specs) and not report.failures, report.failures[:1]
    metrics = {r["trial_id"]: (r["status"], r["val_metric"], r["test_metric"]) for r in rows}
    line = f"  {workers} worker(s): {others.elapsed:.1f} s for {len(specs)} trials"
    if others.cores is not None:
        line += f"; other processes used {others.cores:.2f} cores meanwhile"
    print(line, flush=True)
    return others.elapsed, metrics, others.cores or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="quick", help="preset name or study file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each")
    parser.add_argument(
        "--max-others",
        type=float,
        default=None,
        help="discard and redo a run while other processes used more cores than this",
    )
    parser.add_argument("--retries", type=int, default=10, help="redo limit per run")
    args = parser.parse_args()
    print(f"study {args.study}, {os.cpu_count()} CPU cores; goal: speed-up >= 1.6 with 2 workers")
    times: dict[int, list[float]] = {1: [], args.workers: []}
    reference = None
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            order = (1, args.workers) if repeat % 2 == 0 else (args.workers, 1)
            for workers in order:
                for _ in range(args.retries + 1):
                    elapsed, metrics, others = timed_run(args.study, workers, Path(folder))
                    if args.max_others is None or others <= args.max_others:
                        break
                    print(f"  (discarded: a busy neighbour used {others:.2f} cores)")
                times[workers].append(elapsed)
                assert reference is None or metrics == reference, "results depend on workers"
                reference = metrics
    one, many = statistics.median(times[1]), statistics.median(times[args.workers])
    print(
        f"1 worker {one:.1f} s, {args.workers} workers {many:.1f} s "
        f"(medians of {args.repeats}) -> speed-up {one / many:.2f}x"
    )


if __name__ == "__main__":
    main()
