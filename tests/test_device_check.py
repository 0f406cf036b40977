"""benchmarks/device_check.py, the script a GPU machine runs, checked on the CPU."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cpu_smoke_prints_ratios_and_exits_0(tmp_path):
    out = tmp_path / "check.json"
    done = run("--cpu-smoke", "--sizes", "1e4", "--repeats", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    for name in ("DemonSGD", "DemonAdam(damped=True)", "QHM", "QHAdam", "AggMo", "YellowFin"):
        assert f"\n  {name} " in done.stdout
    assert "x torch SGD fused" in done.stdout and "x torch Adam fused" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("device_check: no CUDA device")
    record = json.loads(out.read_text())
    row = record["steps"]["10000"]["DemonAdam"]
    assert row["baseline"] == "torch Adam fused" and len(row["times_ms"]) == 2
    assert row["ratio"] > 0 and record["pytest"] is None
    # (b), (c), (d) ran on the CPU at their small sizes: the smoke study, a ResNet-20 step and
    # a batch of two MNIST-1D MLP trials against the same trials alone
    assert record["study"]["trials"] == 2 and record["study"]["ratio"] > 0
    assert record["epoch"]["images"] == 128 and record["epoch"]["ratio"] > 0
    assert record["batched"]["epochs"] == 1 and record["batched"]["batched"]["2"]["speedup"] > 0
    assert "batched check: mnist1d-mlp sgdm" in done.stdout


def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    done = run()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("device_check: no CUDA device"), lines
