"""The Ray executor on a local Ray cluster (``ray.init(num_cpus=2)``, no network).

Same results as the local executor; a trial whose Ray worker dies is a failed row and the
study goes on; a driver killed with SIGKILL (``demon-optim run --executor ray``, its own
local cluster) resumes with nothing lost or duplicated.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from demon_optim.errors import ConfigError
from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.spec import expand, load_study
from demon_optim.study.store import ResultStore
from tests.conftest import requires
from tests.study.test_resume import group_gone, snapshot, stored, wait_for_rows

pytestmark = [
    requires("ray", "(pip install 'demon-optim[ray]')"),
    requires("sklearn", "(ships the digits data)"),
]

SMOKE = expand(load_study("smoke"))
# the trial whose Ray worker exits mid-task (not in the smoke study: other seed)
DOOMED = dataclasses.replace(SMOKE[0], seed=99)

STUDY = """
name = "killme-ray"
tasks = ["digits-mlp"]
methods = ["sgdm", "demon-sgdm", "adam", "demon-adam"]
seeds = [0, 1]
epochs = 15

[grid.sgdm]
lr = 0.1
momentum = 0.9

[grid.demon-sgdm]
lr = 0.1
momentum = 0.9

[grid.adam]
lr = 1e-3
momentum = 0.9

[grid.demon-adam]
lr = 1e-4
momentum = 0.9
"""
TOTAL = 8


@pytest.fixture(scope="module")
def cluster():
    import ray

    from demon_optim.study.executors.ray import CRASH_TRIAL_ENV

    os.environ[CRASH_TRIAL_ENV] = DOOMED.trial_id  # the cluster's workers inherit it
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        yield ray
    finally:
        ray.shutdown()
        del os.environ[CRASH_TRIAL_ENV]


def test_same_results_as_the_local_executor(cluster, tmp_path: pathlib.Path) -> None:
    from demon_optim.study.executors.ray import RayExecutor

    executor = RayExecutor()
    assert executor.workers == 2  # the cluster's CPUs / 1 CPU per trial
    with ResultStore(tmp_path / "ray.sqlite") as store:
        report = run_study(SMOKE, store, executor)
    assert report.written == len(SMOKE) and not report.failures
    with ResultStore(tmp_path / "local.sqlite") as store:
        run_study(SMOKE, store, LocalExecutor(1))
    assert snapshot(tmp_path / "ray.sqlite") == snapshot(tmp_path / "local.sqlite")


def test_a_dead_worker_fails_its_trial_and_the_study_goes_on(
    cluster, tmp_path: pathlib.Path
) -> None:
    from demon_optim.study.executors.ray import RayExecutor

    specs = [DOOMED, *SMOKE[:3]]
    with ResultStore(tmp_path / "s.sqlite") as store:
        report = run_study(specs, store, RayExecutor(workers=2))
        rows = {row["trial_id"]: row for row in store.rows()}
    assert report.written == 4 and report.counts == {"failed": 1, "done": 3}
    assert rows[DOOMED.trial_id]["status"] == "failed"
    assert rows[DOOMED.trial_id]["error"].startswith("WorkerDied: the Ray worker")
    assert all(rows[spec.trial_id]["status"] == "done" for spec in SMOKE[:3])


def test_batches_run_as_one_task_each_with_the_local_executors_results(
    cluster, tmp_path: pathlib.Path
) -> None:
    """Trials trained together: one Ray task per batch, the same numbers as locally; a
    worker that dies fails its batch's trials and the study goes on."""
    from demon_optim.study.executors.ray import RayExecutor

    with ResultStore(tmp_path / "ray.sqlite") as store:
        report = run_study([*SMOKE, DOOMED], store, RayExecutor(), batch_trials="auto")
        rows = {row["trial_id"]: row for row in store.rows()}
    assert report.batched == len(SMOKE) + 1 and report.batches >= 2
    doomed = rows[DOOMED.trial_id]["execution"]
    failed = {k for k, row in rows.items() if row["execution"]["batch"] == doomed["batch"]}
    assert len(failed) == doomed["size"] >= 2  # DOOMED and those of its batch
    for trial_id in failed:
        assert rows[trial_id]["status"] == "failed"
        assert rows[trial_id]["error"].startswith(
            f"WorkerDied: the Ray worker running this trial's batch of {doomed['size']}"
        )
    with ResultStore(tmp_path / "local.sqlite") as store:
        run_study(SMOKE, store, LocalExecutor(1), batch_trials="auto")
    local = snapshot(tmp_path / "local.sqlite")
    done = {k: v for k, v in snapshot(tmp_path / "ray.sqlite").items() if k not in failed}
    assert done and done == {k: local[k] for k in done}


def test_closing_the_iterator_cancels_the_rest(cluster) -> None:
    from demon_optim.study.executors.ray import RayExecutor

    results = RayExecutor(workers=1).map_unordered(SMOKE)
    first = next(results)
    assert first.status == "done"
    results.close()  # must return promptly, cancelling the queued and running tasks


def test_without_ray_it_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from demon_optim.study.executors import ray as ray_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"executor: got 'ray'.*pip install 'demon-optim\[ray\]'"):
        ray_executor.RayExecutor()


def command(study: pathlib.Path, store: pathlib.Path, *extra: str) -> list[str]:
    run = [sys.executable, "-m", "demon_optim", "run", str(study), "--executor", "ray"]
    return [*run, "--store", str(store), "--workers", "2", *extra]


def start(study: pathlib.Path, store: pathlib.Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command(study, store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: driver and its local cluster
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_a_killed_driver_resumes_with_nothing_lost_or_duplicated(
    tmp_path: pathlib.Path,
) -> None:
    study = tmp_path / "killme-ray.toml"
    study.write_text(STUDY)
    store = tmp_path / "killed.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    process = start(study, store, env)
    before = wait_for_rows(process, store, 2)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert group_gone(process.pid, timeout=30), "the local Ray cluster outlived its driver"
    partial = stored(store)
    assert before <= partial < TOTAL, "the kill came too late to test anything"

    resumed = subprocess.run(
        command(study, store, "--no-progress"),
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,  # starts a Ray cluster: minutes on a loaded 2-core machine
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{partial} already in" in resumed.stderr
    assert f"running {TOTAL - partial} on 2 worker(s)" in resumed.stderr

    reference = tmp_path / "reference.sqlite"
    parsed = load_study(study)
    with ResultStore(reference) as results:  # trained as the command trains them (batched)
        run_study(expand(parsed), results, LocalExecutor(1), batch_trials=parsed.batch_trials)
    assert snapshot(store) == snapshot(reference)


def test_ctrl_c_stops_cleanly(tmp_path: pathlib.Path) -> None:
    study = tmp_path / "killme-ray.toml"
    study.write_text(STUDY.replace("epochs = 15", "epochs = 40"))
    store = tmp_path / "interrupted.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    process = start(study, store, env)
    wait_for_rows(process, store, 1)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Interrupted:" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err
    assert group_gone(process.pid, timeout=30)
    assert 1 <= stored(store) < TOTAL
    assert all(status == "done" for status, *_ in snapshot(store).values())


def test_ray_workers_import_a_plugin_from_the_source_it_ships(
    cluster, tmp_path: pathlib.Path
) -> None:
    """A file plugin's text travels with its specs: the file is deleted before the trials
    run, as on a node that never had it, and the Ray workers still run the user's task."""
    from demon_optim.study.executors.ray import RayExecutor
    from demon_optim.study.methods import registry as method_registry
    from demon_optim.study.tasks import registry as task_registry
    from tests.study.test_plugins import PLUGIN, study, write

    tasks, methods = dict(task_registry._TASKS), dict(method_registry._METHODS)
    try:
        plugin = write(tmp_path / "my_plugin.py", PLUGIN)
        specs = expand(load_study(study(tmp_path)))
        plugin.unlink()
        with ResultStore(tmp_path / "ray.sqlite") as store:
            report = run_study(specs, store, RayExecutor(workers=2))
            rows = store.rows()
        assert report.written == len(specs) == 6 and not report.failures, report.failures
        assert {row["method"] for row in rows} >= {"user-adagrad", "user-rmsprop"}
        assert all(row["spec"]["plugins"][0]["sha256"] for row in rows)
    finally:
        task_registry._TASKS.clear()
        task_registry._TASKS.update(tasks)
        method_registry._METHODS.clear()
        method_registry._METHODS.update(methods)
