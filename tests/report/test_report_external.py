"""--from-csv: a published table as per-setting tables and Top-1/Top-3; malformed input."""

from __future__ import annotations

import pathlib

import pytest

from demon_optim.errors import ConfigError
from demon_optim.report import build_report_from_csv, external, topk

# Synthetic values (not a paper's), lower is better. Names as a user would type them:
# registered method names, the paper's labels, a reference optimizer (outside the ranking),
# and a tie for first in setting "a".
PUBLISHED = """setting,method,value,std
a,demon-sgdm,5.0,0.10
a,sgdm+lr-step,6.0,
a,LR cosine,5.0,
a,aggmo+lr-step,4.0,0.2
b,Demon,3.0,
b,lr-step,4.0,
b,adam,9.0,

c,Demon,80.0,
c,LR cosine,79.0,
c,LR step,81.0,
c,none,82.0,
"""

# Headline numbers of the Demon paper, arXiv 1910.04952 v4 (ResNet-20 on CIFAR-10, test
# error %, 75/150/300 epochs), as published: a slice of the paper's table with known Top-k.
HEADLINE = """setting,method,value
resnet20-cifar10 SGDM 75,Demon,8.56
resnet20-cifar10 SGDM 75,LR step,8.82
resnet20-cifar10 SGDM 150,Demon,8.21
resnet20-cifar10 SGDM 150,LR step,8.43
resnet20-cifar10 SGDM 300,Demon,7.59
resnet20-cifar10 SGDM 300,LR step,7.32
resnet20-cifar10 Adam 75,demon-adam,9.68
resnet20-cifar10 Adam 75,adam,13.63
resnet20-cifar10 Adam 150,demon-adam,8.90
resnet20-cifar10 Adam 150,adam,11.90
resnet20-cifar10 Adam 300,demon-adam,8.50
resnet20-cifar10 Adam 300,adam,11.94
"""


def write(tmp_path: pathlib.Path, text: str, name: str = "published.csv") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_published_table_top_k(tmp_path: pathlib.Path) -> None:
    index = build_report_from_csv(write(tmp_path, PUBLISHED), tmp_path / "out")
    assert index == tmp_path / "out" / "index.html" and index.is_file()
    assert (tmp_path / "out" / "topk.csv").read_text().splitlines() == [
        "method,top1,top3,settings",
        "demon,2,3,3",
        "lr-cosine,2,2,2",
        "lr-step,0,3,3",
        "none,0,1,2",
    ]
    assert sorted(p.name for p in (tmp_path / "out" / "tables").iterdir()) == [
        "a.csv",
        "b.csv",
        "c.csv",
    ]
    page = index.read_text()
    assert "aggmo+lr-step" in page and "<img" not in page
    assert "Over 3 setting(s)" in (tmp_path / "out" / "report.md").read_text()


def test_headline_numbers_of_the_paper(tmp_path: pathlib.Path) -> None:
    build_report_from_csv(write(tmp_path, HEADLINE), tmp_path / "out")
    assert (tmp_path / "out" / "topk.csv").read_text().splitlines() == [
        "method,top1,top3,settings",
        "demon,5,6,6",
        "lr-step,1,3,3",
        "none,0,3,3",
    ]


def test_ranks_and_direction(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, PUBLISHED)
    lower = {s.name: [(r.method, r.rank) for r in s.rows] for s in external.read_csv(path)}
    assert lower["a"] == [
        ("LR cosine", 1),
        ("demon-sgdm", 1),
        ("sgdm+lr-step", 3),
        ("aggmo+lr-step", None),  # reference: shown, not ranked
    ]
    settings = external.read_csv(path, higher_is_better=True)
    assert topk.to_csv(topk.top_k(settings)).splitlines()[1:] == [
        "none,2,2,2",
        "lr-step,1,3,3",
        "demon,0,3,3",
        "lr-cosine,0,1,2",
    ]
    ranked_all = external.read_csv(path, rank_all=True)
    assert (ranked_all[0].rows[0].method, ranked_all[0].rows[0].rank) == ("aggmo+lr-step", 1)
    row = next(r for r in ranked_all[0].rows if r.method == "demon-sgdm")
    assert (row.mean, row.std, row.schedule) == (5.0, 0.10, "demon")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "setting,method,value\na,demon,1\na,sgdm,2\nb,demon,abc\n",
            "line 4: value: got 'abc'; allowed: a number",
        ),
        ("setting,method,value\na,demon,nan\n", "line 2: value: got 'nan'; allowed: a number"),
        (
            "setting,method,value,std\na,demon,1,-0.5\n",
            "line 2: std: got '-0.5'; allowed: a number >= 0, or empty",
        ),
        ("setting,method,value\na,demon,1\na,demon\n", "line 3: got 2 fields; allowed: 3"),
        ("setting,method,value\n,demon,1\n", "line 2: setting: got ''; allowed: a non-empty"),
        (
            "setting,method,value\na,demon-sgdm,1\n\na,Demon,2\n",
            "line 4: method: got 'Demon' in setting 'a', which line 2 already has",
        ),
        ("setting,method\na,demon\n", "line 1: header: missing column(s) value"),
        ("method,score\n", "missing column(s) setting, value; unknown column(s) 'score'"),
        ("", "line 1: header: got nothing"),
        ("setting,method,value\n", "has a header but no rows"),
    ],
)
def test_malformed_csv_names_the_line(tmp_path: pathlib.Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        external.read_csv(write(tmp_path, text))
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        build_report_from_csv(tmp_path / "absent.csv", tmp_path / "out")
