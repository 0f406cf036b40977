"""Where trials train: device names and refusals, what a trial records, precision and
channels_last in the trial id, GPU pinning of the local executor's workers.

The CUDA cases run only where a CUDA device is (``-m cuda``); here they are skipped with
the reason.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys

import pytest
import torch

from demon_optim.errors import ConfigError
from demon_optim.study import devices
from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.runner import make_executor
from demon_optim.study.spec import expand, load_study, parse_study
from demon_optim.study.store import ResultStore
from tests.conftest import requires

needs_sklearn = requires("sklearn", "(ships the digits data)")
NO_CUDA = not torch.cuda.is_available()
cuda = [
    pytest.mark.cuda,
    pytest.mark.skipif(NO_CUDA, reason=f"no CUDA device here (torch {torch.__version__})"),
]

SMOKE = expand(load_study("smoke"))


def study(**changes: object):
    base = {"tasks": ["digits-mlp"], "methods": ["sgdm"], "seeds": [0], "epochs": 1}
    return parse_study({**base, **changes})


@pytest.mark.parametrize(
    ("raw", "name"),
    [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"), ("cuda:3", "cuda:3"), ("mps", "mps")],
)
def test_device_names(raw: str, name: str) -> None:
    assert devices.check_device("device", raw) == name


@pytest.mark.parametrize("raw", ["tpu", "cuda:", "cuda:-1", "gpu", 0, None, "cuda:x"])
def test_other_device_names_are_refused_naming_the_choices(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"^device: got .*; allowed: auto, cpu, cuda, cuda:N"):
        devices.check_device("device", raw)


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_on_a_cpu_only_machine_is_refused_naming_what_is_there(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        devices.require(name)
    assert str(caught.value).startswith(f"device: got {name!r}, which is not here; available: cpu")


@pytest.mark.parametrize("name", ["cuda:{n}", "cuda:{n7}"])
def test_a_gpu_index_beyond_the_machine_is_refused(name: str) -> None:
    count = torch.cuda.device_count() if not NO_CUDA else 0
    device = name.format(n=count, n7=count + 7)
    with pytest.raises(ConfigError, match="which is not here; available: cpu"):
        devices.require(device)


def test_mps_where_absent_is_refused() -> None:
    if devices._mps_available():
        pytest.skip("MPS is here")
    with pytest.raises(ConfigError, match="device: got 'mps', which is not here"):
        devices.require("mps")


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is here")
def test_run_device_cuda_exits_2_in_one_line_before_training(tmp_path: pathlib.Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "demon_optim", "run", "smoke", "--device", "cuda",
         "--store", str(tmp_path / "s.sqlite")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("demon-optim: error: --device: got 'cuda', which is not here")
    assert not (tmp_path / "s.sqlite").exists()


def test_auto_resolves_to_what_is_here_and_a_pinned_worker_sees_cuda_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert devices.resolve("auto") == torch.device("cpu" if NO_CUDA else "cuda")
    assert devices.resolve("cuda:3") == torch.device("cuda:3")
    monkeypatch.setenv(devices.PINNED_ENV, "3")
    assert devices.resolve("cuda:3") == torch.device("cuda:0")
    assert devices.resolve("cuda") == torch.device("cuda:0")
    assert devices.resolve("cpu") == torch.device("cpu")


def test_device_is_recorded_not_hashed_precision_and_channels_last_only_when_set() -> None:
    plain = expand(study())[0]
    assert plain.device == "auto" and "device" not in plain.identity()
    on_cpu = expand(study(device="cpu"))[0]
    assert on_cpu.trial_id == plain.trial_id and on_cpu.to_json()["device"] == "cpu"
    assert "precision" not in plain.identity() and "channels_last" not in plain.identity()
    fp32 = expand(study(precision="fp32"))[0]
    assert fp32.trial_id == plain.trial_id
    bf16 = expand(study(precision="bf16"))[0]
    assert bf16.identity()["precision"] == "bf16" and bf16.trial_id != plain.trial_id
    assert bf16.label().endswith(", bf16")
    # quick's trials keep the ids they had before devices existed
    assert expand(load_study("quick"))[0].trial_id.startswith("77d48f77acf0")
    with pytest.raises(ConfigError, match=r"^precision: got 'fp8'; allowed: fp32, bf16, fp16"):
        study(precision="fp8")


def test_channels_last_is_for_image_tasks_only() -> None:
    with pytest.raises(ConfigError, match=r"^channels_last: got True; allowed: only with an image"):
        study(channels_last=True)
    with pytest.raises(ConfigError, match=r"^channels_last: got 'yes'; allowed: True or False"):
        study(channels_last="yes")
    mixed = parse_study(
        {"tasks": ["digits-mlp", "fmnist-cnn"], "methods": ["sgdm"], "seeds": [0],
         "epochs": 1, "channels_last": True}
    )  # fmt: skip
    by_task = {spec.task: spec for spec in expand(mixed)}
    assert by_task["fmnist-cnn"].identity()["channels_last"] is True
    assert "channels_last" not in by_task["digits-mlp"].identity()


@needs_sklearn
def test_a_trial_records_its_device_and_mixed_precision_trains_on_the_cpu(
    tmp_path: pathlib.Path,
) -> None:
    specs = [
        dataclasses.replace(spec, precision=precision)
        for spec in SMOKE[:1]
        for precision in ("fp32", "bf16", "fp16")
    ]
    with ResultStore(tmp_path / "s.sqlite") as store:
        report = run_study(specs, store, LocalExecutor(1))
        rows = {row["trial_id"]: row for row in store.rows()}
    assert report.counts == {"done": 3}
    assert {row["versions"]["device"] for row in rows.values()} == {
        "cpu" if NO_CUDA else "cuda:0 " + torch.cuda.get_device_name(0)
    }
    metrics = [rows[spec.trial_id]["history"][-1]["train_loss"] for spec in specs]
    assert len(set(metrics)) == 3  # autocast changes the numbers: three different trials


def test_local_workers_spread_over_gpus_and_are_pinned(tmp_path: pathlib.Path) -> None:
    executor = LocalExecutor(gpus=(0, 1), workers_per_gpu=2)
    assert executor.workers == 4
    assert [executor.gpu_of(slot) for slot in range(4)] == [0, 0, 1, 1]
    assert LocalExecutor(3, gpus=(5,)).gpu_of(2) == 5
    with pytest.raises(ConfigError, match="workers_per_gpu: got 0"):
        LocalExecutor(gpus=(0,), workers_per_gpu=0)
    with pytest.raises(ConfigError, match="--gpus-per-trial: only with --executor ray"):
        make_executor("local", None, None, gpus_per_trial=1)
    if NO_CUDA:
        assert make_executor("local", None, None, device="auto").gpus == ()


@needs_sklearn
def test_a_pinned_worker_sees_only_its_gpu(tmp_path: pathlib.Path) -> None:
    """Spawned workers pinned to "GPU 3": each records the host GPU it had (on a machine
    without CUDA it trains on the CPU; CUDA_VISIBLE_DEVICES is set all the same)."""
    specs = [dataclasses.replace(spec, device="cpu") for spec in SMOKE[:2]]
    with ResultStore(tmp_path / "s.sqlite") as store:
        run_study(specs, store, LocalExecutor(2, gpus=(3,), in_process=False))
        rows = store.rows()
    assert [row["versions"].get("host_gpu") for row in rows] == ["3", "3"]


@needs_sklearn
@pytest.mark.cuda
@pytest.mark.skipif(NO_CUDA, reason=f"no CUDA device here (torch {torch.__version__})")
def test_a_smoke_trial_on_cuda_is_deterministic(tmp_path: pathlib.Path) -> None:
    specs = [dataclasses.replace(spec, device="cuda") for spec in SMOKE[:2]]
    histories = []
    for run in range(2):
        with ResultStore(tmp_path / f"{run}.sqlite") as store:
            run_study(specs, store, LocalExecutor(1))
            histories.append(
                [[{k: v for k, v in h.items() if not k.endswith("_s")} for h in r["history"]]
                 for r in store.rows()]
            )  # fmt: skip
            assert all(r["versions"]["device"].startswith("cuda:0 ") for r in store.rows())
    assert histories[0] == histories[1]
