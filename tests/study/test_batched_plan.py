"""Planning batches: what batches with what, deterministically, and why the rest runs alone."""

from __future__ import annotations

import dataclasses

import pytest

from demon_optim.study.batched import plan as planning
from demon_optim.study.batched.plan import TrialBatch, auto_size, plan_batches, unit_specs
from demon_optim.study.spec import TrialSpec, expand, load_study, parse_study


def study(**keys: object) -> list[TrialSpec]:
    base = {"tasks": ["mnist1d-mlp"], "methods": ["sgdm", "demon-sgdm"], "seeds": [0, 1]}
    return expand(parse_study({**base, **keys}))


def batches(plan: planning.Plan) -> list[TrialBatch]:
    return [u for u in plan.units if isinstance(u, TrialBatch)]


def test_off_and_one_run_every_trial_alone() -> None:
    specs = study()
    for setting in ("off", 1):
        plan = plan_batches(specs, setting)
        assert list(plan.units) == specs and plan.notes() == []


def test_a_study_batches_the_same_way_every_time_and_covers_each_trial_once() -> None:
    specs = expand(load_study("quick"))
    plan = plan_batches(specs, "auto")
    again = plan_batches(list(specs), "auto")
    assert [unit_specs(u) for u in plan.units] == [unit_specs(u) for u in again.units]
    covered = [s.trial_id for u in plan.units for s in unit_specs(u)]
    assert sorted(covered) == sorted(s.trial_id for s in specs)
    assert all(isinstance(u, TrialBatch) for u in plan.units)  # quick batches whole
    assert max(len(b) for b in batches(plan)) <= auto_size(15_210)
    assert plan.notes() == []
    assert plan.describe().startswith("batch_trials auto: 96 trials in ")


def test_batches_share_task_budget_and_batched_kind_and_are_cut_evenly() -> None:
    specs = study(
        tasks=["mnist1d-mlp", "mnist1d-cnn"],
        methods=["sgdm", "sgdm+lr-cosine", "demon-sgdm", "adam", "demon-adam"],
        epochs=[2, 3],
        seeds=[0, 1, 2],
    )
    from demon_optim.study.batched.schedules import batched_kind
    from demon_optim.study.methods import get_method

    plan = plan_batches(specs, 5)
    for batch in batches(plan):
        first = batch.specs[0]
        for spec in batch.specs:
            assert (spec.task, spec.epochs, spec.batch_size) == (
                first.task,
                first.epochs,
                first.batch_size,
            )
            assert batched_kind(get_method(spec.method)) == batched_kind(get_method(first.method))
        assert len(batch) <= 5
    groups: dict[tuple, list[int]] = {}
    for batch in batches(plan):
        key = (
            batch.specs[0].task,
            batch.specs[0].epochs,
            batched_kind(get_method(batch.specs[0].method)),
        )
        groups.setdefault(key, []).append(len(batch))
    assert all(max(sizes) - min(sizes) <= 1 for sizes in groups.values())


def test_the_batch_id_is_its_members_and_a_resumed_batch_keeps_the_rest() -> None:
    specs = study(seeds=[0, 1, 2, 3])
    (batch, *_rest) = batches(plan_batches(specs, 4))
    assert batch.batch_id == TrialBatch(tuple(reversed(batch.specs))).batch_id
    assert batch.execution() == {"mode": "batched", "batch": batch.batch_id, "size": 4}
    kept = batch.restricted({s.trial_id for s in batch.specs[1:]})
    assert kept is not None and kept.specs == batch.specs[1:] and kept.batch_id != batch.batch_id
    assert batch.restricted(set()) is None
    plan = plan_batches(specs, 4)
    units = plan.for_trials({s.trial_id for s in batch.specs[2:]})
    assert [unit_specs(u) for u in units] == [batch.specs[2:]]


def test_what_cannot_batch_runs_alone_and_is_said_once_per_reason() -> None:
    specs = study(
        tasks=["mnist1d-mlp", "ptb-lstm-small"],
        methods=["sgdm", "qhm+lr-step", "amsgrad"],
        epochs=1,
    )
    plan = plan_batches(specs, "auto")
    alone = [u for u in plan.units if isinstance(u, TrialSpec)]
    assert {(s.task, s.method) for s in alone} == {
        ("mnist1d-mlp", "qhm+lr-step"),
        ("mnist1d-mlp", "amsgrad"),
        ("ptb-lstm-small", "sgdm"),
        ("ptb-lstm-small", "qhm+lr-step"),
        ("ptb-lstm-small", "amsgrad"),
    }
    count = {m: sum(s.method == m for s in specs) for m in ("qhm+lr-step", "amsgrad")}
    ptb = sum(s.task == "ptb-lstm-small" and s.method == "sgdm" for s in specs)
    notes = plan.notes()
    assert len(notes) == 3, notes
    for method, n in count.items():
        assert any(
            m.startswith(f"{n} trials of method {method} run one at a time: ") for m in notes
        )
    assert (
        f"{ptb} trials of task ptb-lstm-small run one at a time: it trains through its own "
        "steps_per_epoch(), batches(), initial_state(), detach_state(), forward()"
    ) in notes
    pending = {s.trial_id for s in specs if s.method == "amsgrad"}
    assert [n.split(":")[0] for n in plan.notes(pending)] == [
        f"{count['amsgrad']} trials of method amsgrad run one at a time"
    ]


def test_fp16_channels_last_and_large_models_run_alone() -> None:
    specs = study()
    half = [dataclasses.replace(s, precision="fp16") for s in specs]
    plan = plan_batches(half, "auto")
    assert not batches(plan) and plan.notes() == [
        f"{len(specs)} trials of precision fp16 run one at a time: its gradient scaler skips "
        "steps trial by trial"
    ]
    big = study(tasks=["fmnist-cnn"])  # 3.3M parameters: auto leaves it, N batches it
    (note,) = plan_batches(big, "auto").notes()
    assert "3,274,634 parameters, too many for batch_trials = auto" in note
    assert auto_size(15_210) >= 2 and auto_size(3_274_634) == 1


def test_a_model_batch_models_refuses_runs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from demon_optim.study.batched import models

    def refuse(built: list) -> None:
        raise models.NotBatchable("not this one")

    monkeypatch.setattr(models, "batch_models", refuse)
    monkeypatch.setattr(planning, "_PROBED", {})
    specs = study()
    plan = plan_batches(specs, "auto")
    assert not batches(plan)
    assert plan.notes() == [
        f"{len(specs)} trials of task mnist1d-mlp run one at a time: its model cannot be "
        "batched (not this one)"
    ]
