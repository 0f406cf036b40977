"""A sampled study killed with SIGKILL mid-run resumes with the same draws and trial ids.

`python -m demon_optim run` runs a TPE search (14 configurations in batches of 2, so the
draws after TPE's 10 independent start-up ones depend on results told before and after the
kill) with two workers in its own process group; the group is killed once some trials are
stored, the command is run again, and the store's draws, tells and trials must equal those
of an uninterrupted run in one process.
"""

from __future__ import annotations

import subprocess

from demon_optim.study.runner import run
from demon_optim.study.store import ResultStore
from tests.conftest import requires
from tests.study.study_processes import (
    group_gone,
    kill_group,
    snapshot,
    start_study,
    stored,
    study_command,
    wait_for_rows,
)

pytestmark = [
    requires("sklearn", "(ships the digits data)"),
    requires("optuna", "(the tuning extra: pip install 'demon-optim[tuning]')"),
]

STUDY = """
name = "killsearch"
tasks = ["digits-mlp"]
methods = ["sgdm"]
seeds = [0]
epochs = 12
search = "sample"
sampler = "tpe"
tuning_budgets = [4, 14]
search_batch = 2
search_seed = 5

[space.sgdm]
lr = {low = 0.003, high = 0.3, log = true}
momentum = {low = 0.8, high = 0.99}
"""
TOTAL = 14


def draws(store) -> list[tuple]:
    with ResultStore(store, readonly=True) as results:
        (search,) = results.searches()
    return [
        (d["draw"], d["batch"], d["params"], d["trial_ids"], d["state"], d["value"])
        for d in search["draws"]
    ]


def test_sigkill_mid_search_then_resume_gives_the_same_sequence(tmp_path) -> None:
    study = tmp_path / "killsearch.toml"
    study.write_text(STUDY)
    store = tmp_path / "killed.sqlite"
    command = study_command(study, store, "--no-progress")
    process = start_study(command)
    wait_for_rows(process, store, 9)
    kill_group(process)
    assert group_gone(process.pid), "workers outlived the kill"
    partial = stored(store)
    assert 9 <= partial < TOTAL, "the kill came too late to test anything"

    resumed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{partial} already in" in resumed.stderr, resumed.stderr

    reference = tmp_path / "reference.sqlite"
    result = run(study, store=reference, workers=1)
    assert result.exit_code == 0 and len(result.specs) == TOTAL
    assert draws(store) == draws(reference)
    assert [d[4] for d in draws(store)] == ["complete"] * TOTAL
    assert snapshot(store) == snapshot(reference)  # the same trials, trained the same
