"""Per-setting tables and Top-1/Top-3 on the synthetic store (known answers: conftest.py)."""

from __future__ import annotations

import hashlib
import math
import pathlib
import sqlite3

import pytest

from demon_optim.errors import ConfigError
from demon_optim.report import tables, topk
from demon_optim.report.load import load_store
from demon_optim.study.results import summarize
from demon_optim.study.store import NotAStoreError, ResultStore


def settings(store_path: pathlib.Path, rank_all: bool = False) -> dict[str, tables.Setting]:
    return {s.slug: s for s in tables.store_settings(load_store(store_path), rank_all)}


def ranks(setting: tables.Setting) -> list[tuple[str, int | None]]:
    return [(row.method, row.rank) for row in setting.rows]


def test_settings_are_task_family_budget(store_path: pathlib.Path) -> None:
    found = settings(store_path)
    assert list(found) == [
        "mnist1d-mlp_sgdm_10ep",
        "mnist1d-mlp_sgdm_20ep",
        "mnist1d-mlp_adam_10ep",
    ]
    assert found["mnist1d-mlp_adam_10ep"].name == "mnist1d-mlp · Adam · 10 epochs"
    assert all(s.metric == "accuracy" and s.higher_is_better for s in found.values())


def test_ranks_with_ties_and_counts(store_path: pathlib.Path) -> None:
    a = settings(store_path)["mnist1d-mlp_sgdm_10ep"]
    assert ranks(a) == [
        ("demon-sgdm", 1),
        ("sgdm+lr-cosine", 1),
        ("sgdm+lr-step", 3),
        ("sgdm", 4),
    ]
    rows = {row.method: row for row in a.rows}
    assert [row.method for row in a.rows if row.best] == ["demon-sgdm", "sgdm+lr-cosine"]
    demon = rows["demon-sgdm"]
    assert demon.config == {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "delay": 0.0}
    assert demon.selected == "lr=0.1, momentum=0.9"
    assert demon.mean == pytest.approx(0.80) and demon.std == pytest.approx(math.sqrt(2e-4))
    assert (demon.seeds, demon.configs, demon.trials, demon.ci95) == (2, 4, 8, None)
    sgdm = rows["sgdm"]  # diverged and failed trials are counted, never dropped
    assert (sgdm.diverged, sgdm.failed, sgdm.trials, sgdm.configs) == (1, 1, 8, 4)
    assert sgdm.config["momentum"] == 0.95 and sgdm.mean == pytest.approx(0.75)
    assert rows["sgdm+lr-cosine"].schedule == "lr-cosine"


def test_ranks_agree_with_the_run_table(store_path: pathlib.Path) -> None:
    """Same selection and same competition ranks as `demon-optim run` prints."""
    data = load_store(store_path)
    a = [t for t in data.trials if t.epochs == 10 and t.family == "sgdm"]
    (table,) = summarize([t.spec() for t in a], [t.row() for t in a])
    ours = settings(store_path)["mnist1d-mlp_sgdm_10ep"]
    assert sorted((r.method, r.rank) for r in table.rows) == sorted(ranks(ours))
    assert {r.method: r.test_mean for r in table.rows} == {r.method: r.mean for r in ours.rows}


def test_reference_outside_ranking_unless_rank_all(store_path: pathlib.Path) -> None:
    b = settings(store_path)["mnist1d-mlp_adam_10ep"]
    assert ranks(b) == [
        ("adam+lr-cosine", 1),
        ("demon-adam", 2),
        ("adam", 3),
        ("adamw", None),
        ("adam+lr-step", None),
    ]
    rows = {row.method: row for row in b.rows}
    assert rows["adamw"].reference and not rows["adamw"].ranked
    assert tables.rank_text(rows["adamw"]) == "ref"
    lost = rows["adam+lr-step"]  # every seed diverged: shown, unranked, counted
    assert (lost.mean, lost.diverged, lost.ranked) == (None, 2, True)
    assert tables.result_text(lost) == "no configuration finished on every seed"
    b_all = settings(store_path, rank_all=True)["mnist1d-mlp_adam_10ep"]
    assert ranks(b_all)[:4] == [
        ("adamw", 1),
        ("adam+lr-cosine", 2),
        ("demon-adam", 3),
        ("adam", 4),
    ]


def test_single_method_setting_with_interval(store_path: pathlib.Path) -> None:
    c = settings(store_path)["mnist1d-mlp_sgdm_20ep"]
    (row,) = c.rows
    assert (row.method, row.rank, row.best, row.seeds) == ("demon-sgdm", 1, True, 3)
    assert row.mean == pytest.approx(0.71) and row.std == pytest.approx(0.01)
    assert row.ci95 == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    text = tables.to_markdown(c)
    assert "95 % CI" in text and "± 0.0248" in text


def test_top_k_counts(store_path: pathlib.Path) -> None:
    table = topk.top_k(list(settings(store_path).values()))
    assert table.settings == 3
    assert topk.to_csv(table).splitlines() == [
        "method,top1,top3,settings",
        "demon,2,3,3",
        "lr-cosine,2,2,2",
        "lr-step,0,1,2",
        "none,0,1,2",
    ]
    assert table.percent(2) == pytest.approx(66.6666667)
    _, cells = topk.header_and_cells(table)
    assert cells[0] == ["Demon (demon)", "2", "66.67 %", "3", "100.00 %", "3"]


def test_top_k_rank_all(store_path: pathlib.Path) -> None:
    table = topk.top_k(list(settings(store_path, rank_all=True).values()))
    assert topk.to_csv(table).splitlines()[1:] == [
        "demon,2,3,3",
        "lr-cosine,1,2,2",
        "adamw,1,1,1",
        "lr-step,0,1,2",
        "none,0,0,2",
    ]


def test_competition_ranks() -> None:
    assert tables.competition_ranks([3.0, 1.0, 1.0, 2.0, None], False) == [4, 1, 1, 3, None]
    assert tables.competition_ranks([0.5, 0.5, 0.5], True) == [1, 1, 1]
    # equal at the printed precision (4 decimals) share a rank
    assert tables.competition_ranks([0.81234, 0.81231], True) == [1, 1]


def test_csv_table(store_path: pathlib.Path) -> None:
    text = tables.to_csv(settings(store_path)["mnist1d-mlp_sgdm_10ep"])
    lines = text.splitlines()
    assert lines[0] == ",".join(tables.CSV_COLUMNS)
    assert lines[1].startswith("mnist1d-mlp · SGDM · 10 epochs,1,1,demon-sgdm,demon,0,")
    assert lines[4].endswith(",1,1")  # sgdm: 1 diverged, 1 failed


def test_load_is_read_only_and_refuses_foreign_files(
    store_path: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    before = hashlib.sha256(store_path.read_bytes()).hexdigest()
    data = load_store(store_path)
    assert len(data.trials) == 33 and data.meta["application"]
    assert hashlib.sha256(store_path.read_bytes()).hexdigest() == before
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE x (a)")
    with pytest.raises(NotAStoreError, match="without demon-optim's tables"):
        load_store(other)
    empty = tmp_path / "empty.sqlite"
    ResultStore(empty).close()
    with pytest.raises(ConfigError, match="holds no trials"):
        load_store(empty)
    with pytest.raises(ConfigError, match="an existing results store"):
        load_store(tmp_path / "absent.sqlite")


def test_a_schedule_two_methods_declare_counts_once_per_setting() -> None:
    """A user's method declaring a built-in schedule (schedule="lr-cosine") beside
    sgdm+lr-cosine: the schedule counts once in that setting, at the better rank."""

    def row(method: str, schedule: str, rank: int) -> tables.Row:
        return tables.Row(method, schedule, False, True, "", None, 0.9 - rank / 100, None,
                          None, 1, rank=rank)  # fmt: skip

    setting = tables.Setting(
        "t · SGDM · 1 epochs", "t", "accuracy", True,
        (row("sgdm+lr-cosine", "lr-cosine", 2), row("rms-cos", "lr-cosine", 1),
         row("sgdm", "none", 3)),
    )  # fmt: skip
    table = topk.top_k([setting])
    assert topk.to_csv(table).splitlines()[1:] == ["lr-cosine,1,1,1", "none,0,1,1"]
    assert max(table.percent(r.top3) for r in table.rows) == 100.0
