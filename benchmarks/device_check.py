"""The device check: what a GPU machine runs to see the optimizers on CUDA.

(a) Step time. One ``step()`` of each optimizer (DemonSGD, DemonAdam in both forms, QHM,
    QHAdam by default and with ``compiled=True``, AggMo, YellowFin) and of torch's fused SGD
    and Adam, on CUDA float32 parameters (20M and 100M values in 50 tensors by default),
    interleaved round by round; each step is timed between two ``torch.cuda.synchronize()``
    and each figure is the median of the rounds. Ratios are against torch's fused SGD (QHM,
    AggMo, YellowFin, DemonSGD) or fused Adam (DemonAdam, QHAdam). Then the CUDA test subset,
    ``pytest -m cuda -q``, runs in a subprocess and its summary is printed.
(b) :func:`study_check`: the ``smoke`` study through the harness on the device and the CPU.
(c) :func:`epoch_check`: one cifar10-resnet20 epoch, the harness's trial loop against a bare
    torch loop.
(d) :func:`batched_check`: batched trials (``demon_optim.study.batched``), M MNIST-1D MLP
    trials trained as one batch against trials one at a time: the throughput ratio (the
    goal on a GPU: at least 20x at MNIST-1D sizes).

It needs only the torch it finds and the project on PYTHONPATH (no network, no install):

    PYTHONPATH=src python benchmarks/device_check.py --out device-check.json
    PYTHONPATH=src python benchmarks/device_check.py --sizes 20e6 --repeats 30 --no-pytest
    PYTHONPATH=src python benchmarks/device_check.py --cpu-smoke --sizes 1e4 --repeats 2

Without CUDA it says so in one line and exits 0; ``--cpu-smoke`` first runs (a) on the CPU
with whatever sizes are given (the compiled QHAdam row is left out there: inductor compiles
for tens of seconds on a CPU), which is how the test suite checks this script.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from demon_optim import DemonAdam, DemonSGD
from demon_optim.optim import QHM, AggMo, QHAdam, YellowFin

ROOT = Path(__file__).resolve().parent.parent
Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]

SGD_BASELINE = "torch SGD fused"
ADAM_BASELINE = "torch Adam fused"
AGGMO_BETAS = (0.0, 0.9, 0.99)
WARMUP = 3  # untimed steps first: state is created, compiled QHAdam compiles


def optimizers(total_steps: int, compiled: bool) -> dict[str, tuple[str, Factory]]:
    """name -> (baseline, factory); every baseline is one of the rows."""
    sgd = {"lr": 0.01, "momentum": 0.9}
    adam = {"lr": 1e-3}
    qhadam = {"lr": 1e-3, "betas": (0.995, 0.999), "nus": (0.7, 1.0)}
    rows: dict[str, tuple[str, Factory]] = {
        SGD_BASELINE: (SGD_BASELINE, lambda p: torch.optim.SGD(p, **sgd, fused=True)),
        "DemonSGD": (SGD_BASELINE, lambda p: DemonSGD(p, **sgd, total_steps=total_steps)),
        "QHM": (SGD_BASELINE, lambda p: QHM(p, lr=0.1, momentum=0.999, nu=0.7)),
        "AggMo": (SGD_BASELINE, lambda p: AggMo(p, lr=0.01, betas=AGGMO_BETAS)),
        "YellowFin": (SGD_BASELINE, lambda p: YellowFin(p, initial_lr=1e-3)),
        ADAM_BASELINE: (ADAM_BASELINE, lambda p: torch.optim.Adam(p, **adam, fused=True)),
        "DemonAdam": (ADAM_BASELINE, lambda p: DemonAdam(p, **adam, total_steps=total_steps)),
        "DemonAdam(damped=True)": (
            ADAM_BASELINE,
            lambda p: DemonAdam(p, **adam, total_steps=total_steps, damped=True),
        ),
        "QHAdam": (ADAM_BASELINE, lambda p: QHAdam(p, **qhadam)),
    }
    if compiled:
        rows["QHAdam(compiled=True)"] = (
            ADAM_BASELINE,
            lambda p: QHAdam(p, **qhadam, compiled=True),
        )
    return rows


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_params(
    numel: int, tensors: int, grads: list[torch.Tensor], device: torch.device, seed: int
) -> list[torch.nn.Parameter]:
    """``tensors`` parameters of ``numel // tensors`` values; the gradients are shared by
    every optimizer (none of them writes to its gradients), which keeps 100M affordable."""
    gen = torch.Generator(device=device).manual_seed(seed)
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.randn(numel // tensors, generator=gen, device=device))
        p.grad = g
        params.append(p)
    return params


def step_times(
    numel: int, tensors: int, repeats: int, device: torch.device, compiled: bool
) -> dict[str, dict[str, Any]]:
    """Median step time per optimizer and its ratio to its baseline, for one size."""
    gen = torch.Generator(device=device).manual_seed(12345)
    grads = [torch.randn(numel // tensors, generator=gen, device=device) * 1e-3]
    grads += [torch.randn_like(grads[0]) * 1e-3 for _ in range(tensors - 1)]
    rows = optimizers(WARMUP + repeats + 1, compiled)  # the Demon betas move every step
    opts = {}
    for i, (name, (_, make)) in enumerate(rows.items()):
        opts[name] = make(make_params(numel, tensors, grads, device, seed=i))
        start = time.perf_counter()
        for _ in range(WARMUP):
            opts[name].step()
        synchronize(device)
        if "compiled" in name:  # its first step compiles: say what that costs
            print(
                f"  {name}: {WARMUP} warm-up steps (compiling) {time.perf_counter() - start:.1f} s"
            )
    times: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(repeats):  # interleaved: a noisy neighbour slows every row alike
        for name, opt in opts.items():
            synchronize(device)
            start = time.perf_counter()
            opt.step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        name: {
            "baseline": baseline,
            "median_ms": medians[name] * 1e3,
            "ratio": medians[name] / medians[baseline],
            "times_ms": [t * 1e3 for t in times[name]],
        }
        for name, (baseline, _) in rows.items()
    }


def report(numel: int, tensors: int, results: dict[str, dict[str, Any]]) -> None:
    print(f"\n{numel / 1e6:g}M float32 values in {tensors} tensors (medians):")
    print(f"  {'optimizer':<26}{'median ms':>10}  ratio")
    for name, row in results.items():
        note = f" {row['baseline']}"
        if name == "AggMo":
            per = row["ratio"] / len(AGGMO_BETAS)
            note += f" ({per:.2f}x per buffer, {len(AGGMO_BETAS)} buffers)"
        print(f"  {name:<26}{row['median_ms']:>10.3f}  {row['ratio']:.2f}x{note}")


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["capability"] = list(torch.cuda.get_device_capability(device))
        env["gpus"] = torch.cuda.device_count()
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    return env


def run_cuda_tests(extra: list[str], timeout: float) -> dict[str, Any]:
    """``pytest -m cuda -q`` in a subprocess, from the repository root (a test module that
    fails to import, say for an optional package missing on the GPU machine, does not stop
    the others)."""
    if importlib.util.find_spec("pytest") is None:
        summary = f"not run: pytest is not installed for {sys.executable}"
        print(f"\npytest -m cuda: {summary}")
        return {"returncode": None, "summary": summary}
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    command += ["--continue-on-collection-errors", *extra]
    print(f"\n$ {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or ""
        out = out.decode() if isinstance(out, bytes) else out
        print(out[-4000:])
        print(f"pytest -m cuda: timed out after {timeout:.0f} s")
        return {"returncode": -1, "summary": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    summary = next(
        (
            line.strip("= ")
            for line in reversed(lines)
            if re.search(r"\d+ (passed|failed|error|skipped|deselected)", line)
        ),
        lines[-1] if lines else "(no output)",
    )
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    if done.returncode not in (0, 5):  # 5: nothing collected
        print("\n".join(lines[-60:]))
        print(done.stderr[-2000:])
    else:
        print("\n".join(failed))
    print(f"pytest -m cuda: {summary} ({time.perf_counter() - start:.0f} s)")
    return {"returncode": done.returncode, "summary": summary, "failed": failed}


# --- (b), (c), (d): the harness on the device --------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def study_check(device: torch.device, small: bool = False) -> dict[str, Any] | None:
    """(b) The ``smoke`` study (8 digits-mlp trials, 2 epochs) through the harness on the
    device and on the CPU, one in-process worker each: wall times, their ratio, and every
    trial done on both. ``small``: 2 trials (a check of this script)."""
    import dataclasses
    import tempfile

    from demon_optim.study.executors import LocalExecutor, run_study
    from demon_optim.study.spec import expand, load_study
    from demon_optim.study.store import ResultStore

    if importlib.util.find_spec("sklearn") is None:
        print("study check: left out (scikit-learn, which ships the digits data, is missing)")
        return None
    specs = expand(load_study("smoke"))[: 2 if small else None]
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for where in dict.fromkeys((str(device), "cpu")):
            on = [dataclasses.replace(spec, device=where) for spec in specs]
            with ResultStore(Path(folder) / f"{where.replace(':', '_')}.sqlite") as store:
                start = time.perf_counter()
                report = run_study(on, store, LocalExecutor(1))
                seconds[where] = time.perf_counter() - start
            if report.counts.get("done") != len(specs):
                errors = [r.error for r in report.failures][:2]
                print(f"study check: on {where}: {report.counts}; {errors}")
                return {"device": where, "counts": report.counts, "errors": errors}
    gpu, cpu = seconds[str(device)], seconds["cpu"]
    print(
        f"study check: smoke, {len(specs)} trials: {device} {gpu:.1f} s, cpu {cpu:.1f} s "
        f"-> {gpu / cpu:.2f}x the CPU's time"
    )
    return {"trials": len(specs), "device_s": gpu, "cpu_s": cpu, "ratio": gpu / cpu}


def epoch_check(device: torch.device, small: bool = False) -> dict[str, Any] | None:
    """(c) One epoch of cifar10-resnet20 (batch 128, crop + flip, SGD momentum 0.9) on
    synthetic CIFAR-shaped data, through the harness's trial loop and as a bare torch loop
    (the same batches, model and torch SGD; no per-step record) on the same device; medians
    of 3 interleaved epochs. ``small``: 128 images, one round (a check of this script)."""
    from demon_optim.study.spec import TrialSpec
    from demon_optim.study.tasks import Split, TaskData, get_task
    from demon_optim.study.trial import run_trial

    task = get_task("cifar10-resnet20")
    generator = torch.Generator().manual_seed(0)
    train, held_out = (128, 32) if small else (45_000, 5_000)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        return Split(images, torch.randint(0, 10, (n,), generator=generator))

    data = TaskData(split(train), split(held_out), split(2 * held_out))
    config = (("lr", 0.1), ("momentum", 0.9), ("weight_decay", 0.0))
    spec = TrialSpec("cifar10-resnet20", "sgdm", config, 0, 1, 128, device=str(device))

    def harness() -> float:
        _sync(device)
        start = time.perf_counter()
        result = run_trial(spec, data, task)
        _sync(device)
        if result.status != "done":
            raise RuntimeError(f"epoch check: the trial {result.status}: {result.error}")
        return time.perf_counter() - start

    def bare() -> float:
        _sync(device)
        start = time.perf_counter()
        on = data.to(device)
        torch.manual_seed(0)
        model = task.build_model().to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        shuffle, augment = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
        model.train()
        for inputs, targets in task.batches(on.train, 128, shuffle, augment_generator=augment):
            loss = task.loss(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        task.evaluate(model, on.val)
        task.evaluate(model, on.test)
        _sync(device)
        return time.perf_counter() - start

    rounds = 1 if small else 3
    times: dict[str, list[float]] = {"harness": [], "bare": []}
    for i in range(rounds):
        order = [("harness", harness), ("bare", bare)]
        for name, run in order if i % 2 == 0 else order[::-1]:
            times[name].append(run())
    h, b = statistics.median(times["harness"]), statistics.median(times["bare"])
    print(
        f"epoch check: cifar10-resnet20, one epoch of {train} synthetic images on {device}: "
        f"harness {h:.2f} s, bare torch loop {b:.2f} s (medians of {rounds}) -> {h / b:.3f}x"
    )
    return {"images": train, "harness_s": h, "bare_s": b, "ratio": h / b, "rounds": rounds}


def batched_check(device: torch.device, small: bool = False) -> dict[str, Any] | None:
    """(d) Batched trials: M mnist1d-mlp trials (sgdm, momentum 0.9, M learning rates from
    1e-3 to 0.3, seeds 0 .. M-1) trained as one batch (``run_batch``) against trials one at a
    time (``run_trial``, 8 of them: the median per trial), on the device, 3 epochs each, on
    synthetic MNIST-1D-shaped data (3,500 / 500 / 1,000 signals of 40 values, 10 classes:
    this measures throughput, not accuracy). Per M in 16, 64, 256: seconds per trial and the
    ratio to one at a time (goal on a GPU: >= 20x). Two rounds, interleaved, medians; a
    warm-up round first (CUDA context, cuBLAS handles). ``small``: M = 2, one epoch, 200
    signals, one round (a check of this script)."""
    from demon_optim.study.batched.plan import TrialBatch
    from demon_optim.study.batched.train import run_batch
    from demon_optim.study.spec import TrialSpec
    from demon_optim.study.tasks import Split, TaskData, get_task
    from demon_optim.study.trial import run_trial

    task = get_task("mnist1d-mlp")
    generator = torch.Generator().manual_seed(0)
    sizes, epochs, rounds, alone_count = ((2,), 1, 1, 2) if small else ((16, 64, 256), 3, 2, 8)

    def split(n: int) -> Split:
        inputs = torch.randn(n, 40, generator=generator)
        return Split(inputs, torch.randint(0, 10, (n,), generator=generator))

    data = TaskData(*(split(n) for n in ((200, 50, 50) if small else (3500, 500, 1000))))

    def specs(m: int) -> tuple[TrialSpec, ...]:
        rates = [1e-3 * 300 ** (i / max(1, m - 1)) for i in range(m)]
        return tuple(
            TrialSpec(
                task.name,
                "sgdm",
                (("lr", lr), ("momentum", 0.9), ("weight_decay", 0.0)),
                seed,
                epochs,
                task.batch_size,
                device=str(device),
            )
            for seed, lr in enumerate(rates)
        )

    def alone() -> float:
        """Median seconds of one trial trained alone."""
        seconds = []
        for spec in specs(alone_count):
            _sync(device)
            start = time.perf_counter()
            result = run_trial(spec, data, task)
            _sync(device)
            seconds.append(time.perf_counter() - start)
            if result.status not in ("done", "diverged"):
                raise RuntimeError(f"batched check: a trial alone {result.status}: {result.error}")
        return statistics.median(seconds)

    def batched(m: int) -> float:
        """Seconds per trial of M trials trained as one batch."""
        _sync(device)
        start = time.perf_counter()
        results = run_batch(TrialBatch(specs(m)), data, task)
        _sync(device)
        failed = [r for r in results if r.status not in ("done", "diverged")]
        if failed:
            raise RuntimeError(f"batched check: M={m}: {failed[0].status}: {failed[0].error}")
        return (time.perf_counter() - start) / m

    if not small:  # warm-up: the device's first kernels and handles, outside the figures
        run_trial(specs(1)[0], data, task)
        run_batch(TrialBatch(specs(2)), data, task)
    times: dict[str, list[float]] = {"alone": [], **{str(m): [] for m in sizes}}
    for i in range(rounds):
        order = [("alone", alone)] + [(str(m), functools.partial(batched, m)) for m in sizes]
        for name, measure in order if i % 2 == 0 else order[::-1]:
            times[name].append(measure())
    per_trial_alone = statistics.median(times["alone"])
    rows = {}
    print(
        f"batched check: mnist1d-mlp sgdm, {epochs} epoch{'s' if epochs != 1 else ''} of "
        f"{len(data.train.targets)} "
        f"synthetic signals on {device}: one at a time {per_trial_alone:.3f} s per trial"
    )
    for m in sizes:
        per_trial = statistics.median(times[str(m)])
        rows[str(m)] = {"per_trial_s": per_trial, "speedup": per_trial_alone / per_trial}
        print(
            f"  M = {m:>3}: {per_trial:.4f} s per trial -> {per_trial_alone / per_trial:.1f}x "
            "the throughput of one at a time"
            + (" (goal on a GPU: >= 20x)" if device.type == "cuda" else "")
        )
    return {"epochs": epochs, "alone_s": per_trial_alone, "batched": rows, "rounds": rounds}


# --- main -----------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: numbers >= 1, e.g. 20e6,100e6")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=[20_000_000, 100_000_000],
        help="values per optimizer, comma-separated (default 20e6,100e6)",
    )
    parser.add_argument("--tensors", type=int, default=50, help="tensors per optimizer")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds (>= 20 for figures)")
    parser.add_argument("--out", type=Path, help="write every figure to this JSON file")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="run (a) on the CPU, to check this script (tiny sizes)",
    )
    parser.add_argument("--no-pytest", action="store_true", help="skip pytest -m cuda")
    parser.add_argument("--pytest-args", default="", help="more pytest arguments, e.g. '-x'")
    parser.add_argument("--pytest-timeout", type=float, default=540.0, help="seconds")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.tensors < 1:
        parser.error("--repeats and --tensors: allowed: integers >= 1")
    cuda = torch.cuda.is_available()
    no_cuda = (
        f"device_check: no CUDA device (torch {torch.__version__}, "
        + (f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build")
        + "): nothing to measure on a GPU"
    )
    if not cuda and not args.cpu_smoke:
        print(no_cuda + "; --cpu-smoke checks this script on the CPU")
        return 0
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    record: dict[str, Any] = {"environment": environment(device), "steps": {}}
    print(" ".join(f"{k}={v}" for k, v in record["environment"].items()))
    if args.repeats < 20:
        print(f"--repeats {args.repeats}: fewer than 20 rounds, a smoke check, not figures")
    compiled = device.type == "cuda"
    if not compiled:
        print("QHAdam(compiled=True) left out on the CPU (inductor compiles for tens of seconds)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # past total_steps, torch's notes on fused kernels
        for numel in args.sizes:
            results = step_times(numel, args.tensors, args.repeats, device, compiled)
            report(numel, args.tensors, results)
            record["steps"][str(numel)] = results
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the next size's optimizers start from free memory
    record["pytest"] = None
    if device.type == "cuda" and not args.no_pytest:
        record["pytest"] = run_cuda_tests(args.pytest_args.split(), args.pytest_timeout)
    checks = (("study", study_check), ("epoch", epoch_check), ("batched", batched_check))
    for name, check in checks:
        result = check(device, small=args.cpu_smoke)
        record[name] = result
        if result is not None:
            print(f"\n{name} check: {json.dumps(result, default=str)}")
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    if not cuda:
        print(no_cuda)
    tests = record["pytest"]  # a GPU run fails when its tests did (not when pytest is absent)
    return 1 if tests is not None and tests["returncode"] not in (0, 5, None) else 0


if __name__ == "__main__":
    sys.exit(main())
