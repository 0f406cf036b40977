"""Batched trials: a whole study with ``--batch-trials auto`` vs ``off``, end to end.

Each run is the real command, ``python -m demon_optim run STUDY --store FRESH
--batch-trials X --no-progress`` with the default workers (one per core), timed from start
to exit (process start, every trial, the store, the table and the report), the two settings
interleaved; the ratio is off's median over auto's. After each pair it compares the two
studies as a reader would: per task and method, the selected configuration and its test
mean, and the largest difference of a selected test mean in units of its standard
error; and over every configuration (a heatmap's cells) the mean absolute difference of its
test means over the seeds (batched numerics differ from unbatched in the last bits, so
trials differ within seed noise, not bit for bit); ``--seed-noise`` also runs the study
unbatched with other seeds, to show how far apart two runs differing only by seed noise
are by the same measures.

Studies: any preset or study file, and three built in here, one per MNIST-1D model family
(``family-mlp``, ``family-cnn``, ``family-gru``: quick's 12 methods and grids on that
model, 2 seeds, 20 epochs; 96 trials each). The goals on 2 cores: ``quick`` and
``robustness`` at least 2x. On Linux it also reports how many cores other processes took
during each run (``/proc/stat`` minus the command's own CPU time): a busy neighbour changes
the ratio, so measure on an otherwise idle machine (``--max-others`` redoes disturbed runs).

    python benchmarks/batched_trials.py [--study quick] [--study family-cnn] [--repeats 3]
        [--keep runs/batched-bench]   # keep the stores, to report on them
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_meter import OtherCores

from demon_optim.study.presets import QUICK, preset_names, preset_text
from demon_optim.study.results import summarize
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore

FAMILIES = {"family-mlp": "mnist1d-mlp", "family-cnn": "mnist1d-cnn", "family-gru": "mnist1d-gru"}


def family_study(name: str, folder: Path) -> str:
    """quick's methods and grids on one MNIST-1D model, 20 epochs: a study file."""
    task = FAMILIES[name]
    text = QUICK.replace('tasks = ["mnist1d-mlp"]', f'tasks = ["{task}"]')
    text = text.replace("epochs = 60", "epochs = 20")
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + text)
    return str(path)


def timed_run(study: str, setting: str, folder: Path) -> tuple[float, float, Path]:
    """(seconds, cores other processes took meanwhile, the store) of one run."""
    store = folder / f"{Path(study).stem}-{setting}-{time.monotonic_ns()}" / "s.sqlite"
    command = [sys.executable, "-m", "demon_optim", "run", study, "--store", str(store)]
    command += ["--batch-trials", setting, "--no-progress"]
    with OtherCores() as meter:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    plan = [line for line in done.stderr.splitlines() if line.startswith("batch_trials")]
    others = meter.cores or 0.0
    print(
        f"  --batch-trials {setting}: {meter.elapsed:.1f} s; other processes used "
        f"{others:.2f} cores" + (f"; {plan[0]}" if plan else ""),
        flush=True,
    )
    return meter.elapsed, others, store


def selected(study: str, store: Path) -> dict[tuple[str, int, str], tuple[str, float, float, int]]:
    """(task, epochs, method) -> (selected configuration, test mean, test std, seeds)."""
    specs = expand(load_study(study))
    with ResultStore(store, readonly=True) as results:
        rows = results.rows()
    table = {}
    for task in summarize(specs, rows):
        for row in task.rows:
            mean = math.nan if row.test_mean is None else row.test_mean
            std = math.nan if row.test_std is None else row.test_std
            table[(task.task, task.epochs, row.method)] = (row.shown, mean, std, row.seeds)
    return table


def configuration_means(store: Path) -> dict[tuple[str, int, str, str], float]:
    """(task, epochs, method, configuration) -> the test metric's mean over its seeds, for
    every configuration all of whose seeds finished (not diverged): the heatmaps' cells."""
    with ResultStore(store, readonly=True) as results:
        rows = results.rows()
    seeds: dict[tuple[str, int, str, str], list[float]] = {}
    for row in rows:
        key = (
            row["task"],
            row["epochs"],
            row["method"],
            repr(sorted(row["hyperparameters"].items())),
        )
        seeds.setdefault(key, []).append(
            row["test_metric"] if row["status"] == "done" else math.nan
        )
    return {k: statistics.mean(v) for k, v in seeds.items() if not any(map(math.isnan, v))}


def compare(study: str, off: Path, other: Path, other_study: str | None = None) -> str:
    """How two runs' selections differ: per method the selected configuration, and its
    test means' difference in units of its standard error, ``z = |a - b| / sqrt(s_a^2 /
    n_a + s_b^2 / n_b)`` (s the seeds' sample std, n the seeds): within seed noise at
    ``z <= 2``."""
    one, two = selected(study, off), selected(other_study or study, other)
    same = sum(one[k][0] == two[k][0] for k in one)
    worst, where, within = 0.0, "", 0
    for key, (config, mean, std, n) in one.items():
        config_b, mean_b, std_b, n_b = two[key]
        error = math.sqrt(std**2 / max(n, 1) + std_b**2 / max(n_b, 1))
        z = abs(mean - mean_b) / error if error > 0 else math.inf * (mean != mean_b)
        within += z <= 2
        if z > worst:
            worst, where = z, f"{key[2]}: {mean:.4f} vs {mean_b:.4f}"
        if config != config_b:
            print(f"    {key[0]} {key[2]}: {config} vs {config_b}")
    cells_a, cells_b = configuration_means(off), configuration_means(other)
    shared = cells_a.keys() & cells_b.keys()
    differences = [cells_a[k] - cells_b[k] for k in shared]
    line = (
        f"same selected configuration for {same} of {len(one)} methods; selected test means "
        f"within 2 standard errors for {within} of {len(one)}, largest z = {worst:.2f} ({where}); "
        f"every configuration's test mean ({len(shared)} in both): mean |difference| "
        f"{statistics.fmean(map(abs, differences)):.4f} (median "
        f"{statistics.median(map(abs, differences)):.4f}), mean difference "
        f"{statistics.fmean(differences):+.4f}"
    )
    print(f"    {line}", flush=True)
    return line


def with_seeds(study: str, folder: Path) -> str:
    """The study with other seeds (as many, after its own), as a study file: the seed noise
    to compare batched against unbatched with."""
    parsed = load_study(study)
    text = preset_text(study) if study in preset_names() else Path(study).read_text()
    seeds = [max(parsed.seeds) + 1 + i for i in range(len(parsed.seeds))]
    text = re.sub(r"^seeds = .*$", f"seeds = {seeds}", text, count=1, flags=re.MULTILINE)
    text = re.sub(r"^name = .*\n", "", text, flags=re.MULTILINE)
    path = folder / f"{parsed.name}-other-seeds.toml"
    path.write_text(text)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--study",
        action="append",
        default=[],
        help=f"preset, study file or one of {', '.join(FAMILIES)} (repeatable; default quick)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each")
    parser.add_argument(
        "--max-others",
        type=float,
        default=None,
        help="discard and redo a run while other processes used more cores than this",
    )
    parser.add_argument("--retries", type=int, default=10, help="redo limit per run")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep every run's store under this folder (default: a temporary one, removed)",
    )
    parser.add_argument(
        "--seed-noise",
        action="store_true",
        help="also run the study unbatched with other seeds: how far two runs that differ "
        "only by seed noise are apart, by the same measures",
    )
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} CPU cores, default workers; goals: quick and robustness >= 2x "
        "faster with --batch-trials auto than off"
    )
    summary = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        if args.keep is not None:
            folder = args.keep
            folder.mkdir(parents=True, exist_ok=True)
        for name in args.study or ["quick"]:
            study = family_study(name, folder) if name in FAMILIES else name
            print(f"study {name}:", flush=True)
            times: dict[str, list[float]] = {"off": [], "auto": []}
            for repeat in range(args.repeats):
                stores = {}
                for setting in ("off", "auto") if repeat % 2 == 0 else ("auto", "off"):
                    for _ in range(args.retries + 1):
                        elapsed, others, store = timed_run(study, setting, folder)
                        if args.max_others is None or others <= args.max_others:
                            break
                        print(f"  (discarded: a busy neighbour used {others:.2f} cores)")
                    times[setting].append(elapsed)
                    stores[setting] = store
                agreement = compare(study, stores["off"], stores["auto"])
            off, auto = statistics.median(times["off"]), statistics.median(times["auto"])
            line = (
                f"{name}: off {off:.1f} s, auto {auto:.1f} s (medians of {args.repeats}) -> "
                f"{off / auto:.2f}x; auto vs off: {agreement}"
            )
            if args.seed_noise:
                other = with_seeds(study, folder)
                print(f"  seed noise: --batch-trials off with other seeds {other}", flush=True)
                _, _, store = timed_run(other, "off", folder)
                line += (
                    f"; off vs off with other seeds: {compare(study, stores['off'], store, other)}"
                )
            print(line, flush=True)
            summary.append(line)
    print("\n".join(summary))


if __name__ == "__main__":
    main()
