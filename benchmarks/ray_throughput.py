"""Ray executor vs local executor: a whole study's throughput at the same worker count.

Times ``run_study`` into a fresh store with ``LocalExecutor(N)`` and with ``RayExecutor(N)``
on a local Ray cluster of N CPUs (started once, before timing: cluster start-up is a fixed
cost, not per-trial overhead; it is printed separately), runs interleaved, and checks both
stored identical metrics. The goal (issue 7): on ``quick`` at 2 workers, Ray's throughput
within 15 % of the local executor's. Measure on an otherwise idle machine: the load average
is printed before each run.

    python benchmarks/ray_throughput.py [--study quick] [--workers 2] [--repeats 1] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore


def timed_run(specs, executor, name: str, folder: Path) -> tuple[float, dict]:
    path = folder / f"{name}-{time.monotonic_ns()}.sqlite"
    load = os.getloadavg()[0]
    with ResultStore(path) as store:
        start = time.perf_counter()
        report = run_study(specs, store, executor)
        elapsed = time.perf_counter() - start
        rows = store.rows()
    assert report.written == len(specs) and not report.failures, report.failures[:1]
    print(
        f"  {name:5}: {elapsed:6.1f} s for {len(specs)} trials "
        f"({len(specs) / elapsed:.2f} trials/s; load average before: {load:.2f})",
        flush=True,
    )
    return elapsed, {r["trial_id"]: (r["status"], r["val_metric"], r["test_metric"]) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="quick", help="preset name or study file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each")
    parser.add_argument("--limit", type=int, default=None, help="only the first N trials")
    args = parser.parse_args()

    import ray

    from demon_optim.study.executors.ray import RayExecutor

    specs = expand(load_study(args.study))[: args.limit]
    start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="WARNING")
    ray_executor = RayExecutor(workers=args.workers)
    print(f"ray {ray.__version__}: local cluster started in {time.perf_counter() - start:.1f} s")
    local_executor = LocalExecutor(args.workers)
    times: dict[str, list[float]] = {"local": [], "ray": []}
    reference = None
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for name, executor in (("local", local_executor), ("ray", ray_executor)):
                elapsed, metrics = timed_run(specs, executor, name, Path(folder))
                times[name].append(elapsed)
                reference = reference or metrics
                assert metrics == reference, f"{name}: metrics differ from the first run"
    ray.shutdown()
    local, remote = statistics.median(times["local"]), statistics.median(times["ray"])
    ratio = local / remote
    print(
        f"{args.study} ({len(specs)} trials), {args.workers} workers: local {local:.1f} s, "
        f"ray {remote:.1f} s; Ray's throughput is {ratio:.1%} of the local executor's "
        f"(goal: >= 85 %) {'OK' if ratio >= 0.85 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
