"""Names as an adversary would write them: free text from a CSV, as settings and methods.

Every name must land as written (escaped) in every format, map to its own file and HTML id
(injective, bounded, case-insensitively distinct, never outside the report folder), and
never be run as HTML, Markdown, a spreadsheet formula or matplotlib mathtext.
"""

from __future__ import annotations

import csv
import dataclasses
import html.parser
import pathlib
import re

import pytest

from demon_optim.errors import ConfigError
from demon_optim.report import build_report_from_csv, escape, external, naming
from tests.conftest import requires

HOSTILE = [
    "<script>alert(1)</script>",
    "\"quoted\" & 'single'",
    "a|b|c",
    "line\nbreak",
    "`code` *bold* _em_ [link](http://x) ![img](y) $x^2$",
    "=cmd|' /C calc'!A0",
    "@SUM(A1)",
    "+1+1",
    "-2+3",
    "Ünïcødé ✓ 数学",
    "x" * 300,
    ".",
    "..",
    "/",
    "../escape",
    "tables",  # the id of a section, if ids were the names
    "con",  # a Windows device name
    "A",
    "a",  # differs from "A" only in case
    "a b",
    "a_b",
    "a_b-2",
]


def write_csv(path: pathlib.Path, rows: list[tuple[str, str, str]]) -> pathlib.Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "method", "value"])
        writer.writerows(rows)
    return path


class _Ids(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.ids += [v or "" for k, v in attrs if k == "id"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    tmp = tmp_path_factory.mktemp("names")
    rows = [(name, method, str(k)) for k, name in enumerate(HOSTILE) for method in ("demon",)]
    methods = [name for name in HOSTILE if name != "a"]  # "a" is "A": one method, refused
    rows += [("methods", name, str(-k - 0.5)) for k, name in enumerate(methods)]
    build_report_from_csv(write_csv(tmp / "hostile.csv", rows), tmp / "out", rank_all=True)
    return tmp / "out"


def test_every_setting_gets_its_own_bounded_file_inside_the_folder(
    hostile_report: pathlib.Path,
) -> None:
    tables = sorted((hostile_report / "tables").iterdir())
    assert len(tables) == len(HOSTILE) + 1  # none lost to a collision
    assert len({p.name.casefold() for p in tables}) == len(tables)  # case-insensitive FS
    assert all(len(p.name) <= naming.STEM_CHARS + naming.HASH_CHARS + 5 for p in tables)
    assert all(not p.name.startswith((".", "-")) for p in tables)
    outside = sorted(p.name for p in hostile_report.parent.iterdir())
    assert outside == ["hostile.csv", "out"]  # '..', '/', '../escape' wrote nothing outside
    by_setting = {}
    for path in tables:
        with path.open(encoding="utf-8", newline="") as handle:
            first = next(iter(csv.DictReader(handle)))
        by_setting[first["setting"].removeprefix("'")] = path.name
    assert set(by_setting) == set(HOSTILE) | {"methods"}
    assert by_setting["a_b"] == "a_b.csv" and by_setting["a_b-2"] == "a_b-2.csv"
    assert by_setting["a b"].startswith("a_b-") and by_setting["A"] != by_setting["a"]


def test_html_escapes_every_name_and_ids_are_unique(hostile_report: pathlib.Path) -> None:
    page = (hostile_report / "index.html").read_text(encoding="utf-8")
    parser = _Ids()
    parser.feed(page)
    assert "script" not in parser.tags and "<script" not in page
    assert len(parser.ids) == len(set(parser.ids))  # no duplicate id, not even "tables"
    assert all(re.fullmatch(r"[A-Za-z0-9._+-]+", i) for i in parser.ids)
    text = "".join(parser.text)
    for name in HOSTILE:
        assert name in text  # shown as written (the browser decodes the entities)


def _cells(markdown_row: str) -> list[str]:
    """A Markdown table row's cells, split on unescaped pipes as a renderer does."""
    return re.split(r"(?<!\\)\|", markdown_row.strip())[1:-1]


def test_markdown_escapes_html_and_table_metacharacters(hostile_report: pathlib.Path) -> None:
    text = (hostile_report / "report.md").read_text(encoding="utf-8")
    assert "<script" not in text and "<" not in text.replace("&lt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a\\|b\\|c" in text and "\\`code\\` \\*bold\\* \\_em\\_ \\[link\\]" in text
    assert "\\$x^2\\$" in text and "line break" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    methods = len(HOSTILE) - 1  # the "methods" setting's rows; Top-k: those and demon
    assert len(rows) == 2 * len(HOSTILE) + (1 + methods) + (1 + methods + 1)
    # every row keeps its columns: rank | method | value, and Top-k's six
    assert all(len(_cells(row)) in (3, 6) for row in rows), rows


def test_csv_cells_cannot_run_as_formulas(hostile_report: pathlib.Path) -> None:
    with (hostile_report / "topk.csv").open(encoding="utf-8", newline="") as handle:
        methods = [row["method"] for row in csv.DictReader(handle)]
    for name in ("=cmd|' /C calc'!A0", "@SUM(A1)", "+1+1", "-2+3"):
        assert f"'{name}" in methods
    for path in (hostile_report / "tables").iterdir():
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                for value in row.values():
                    assert not value.startswith(("=", "+", "@", "\t", "\r")), (path, value)
                    assert not value.startswith("-") or float(value) < 0  # plain numbers only
    methods_table = next(
        p for p in (hostile_report / "tables").iterdir() if p.name.startswith("methods")
    )
    assert ",-0.5," in methods_table.read_text()  # a negative value stays a number


def test_csv_cell_rule() -> None:
    assert escape.csv_cell("=1+1") == "'=1+1" and escape.csv_cell("\tx") == "'\tx"
    assert escape.csv_cell("\r=x") == "'\r=x" and escape.csv_cell("-1e-3") == "-1e-3"
    assert escape.csv_cell("-x") == "'-x" and escape.csv_cell("a=b") == "a=b"
    assert escape.csv_cell(-2.5) == -2.5


def test_file_stems_are_injective_bounded_and_stable() -> None:
    names = [*HOSTILE, naming.file_stem("a b"), "A" * 65, "A" * 64, "a" * 64]
    stems = naming.file_stems(names)
    assert len({s.casefold() for s in stems}) == len(names)
    assert all(len(s) <= naming.STEM_CHARS + naming.HASH_CHARS + 1 for s in stems)
    assert naming.file_stems(["mnist1d-mlp_sgdm_10ep"]) == ["mnist1d-mlp_sgdm_10ep"]
    assert naming.file_stem("a b") == naming.file_stems(["a b", "zzz"])[0]  # stable
    assert naming.file_stems(["x", "x"]) == ["x", "x"]  # equal names, one file


def test_method_names_map_one_documented_way(tmp_path: pathlib.Path) -> None:
    rows = [
        ("s1", "OneCycle", "1"),
        ("s1", "Cosine", "2"),
        ("s1", "Demon-Adam", "3"),
        ("s2", "onecycle", "2"),
        ("s2", "cosine", "1"),
        ("s2", "DEMON", "3"),
        ("s3", "SGDM+LR-Cosine", "1"),
        ("s3", "LR  cosine", "2"),
    ]
    with pytest.raises(ConfigError, match="already has \\(as 'lr-cosine'\\)"):
        external.read_csv(write_csv(tmp_path / "dup.csv", rows))
    settings = external.read_csv(write_csv(tmp_path / "ok.csv", rows[:6]))
    schedules = {(s.name, r.method): r.schedule for s in settings for r in s.rows}
    assert schedules == {
        ("s1", "OneCycle"): "onecycle",
        ("s1", "Cosine"): "Cosine",  # not a known name: kept as written ...
        ("s1", "Demon-Adam"): "demon",  # registered names compare in any case too
        ("s2", "onecycle"): "onecycle",
        ("s2", "cosine"): "Cosine",  # ... and the same method whatever its case
        ("s2", "DEMON"): "demon",
    }
    with pytest.raises(ConfigError, match="already has \\(as 'Cosine'\\)"):
        external.read_csv(write_csv(tmp_path / "case.csv", [rows[1], ("s1", "COSINE", "3")]))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "setting,method\na,demon\n",
        "setting,method,value\na,demon,abc\n",
        "setting,method,value\n",
        "setting,method,value\na,demon,1\na,demon\n",
        "setting,method,value\na,demon," + "9" * 200_000 + "\n",  # over csv's field limit
    ],
)
def test_every_error_about_the_file_names_it(tmp_path: pathlib.Path, text: str) -> None:
    path = tmp_path / "named-input.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        external.read_csv(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message


def test_an_undecodable_file_is_named(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("setting,method,value\nMüller,demon,1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        external.read_csv(path)


def test_markdown_escape_keeps_ordinary_text() -> None:
    assert escape.markdown("mnist1d-mlp · SGDM · 10 epochs") == "mnist1d-mlp · SGDM · 10 epochs"
    assert escape.markdown("a\r\nb\tc") == "a b c"
    assert escape.markdown("&lt;") == "&amp;lt;"


# --- store reports: figure labels and one-seed tables ------------------------------------------


@requires("matplotlib", "(draws the report's figures)")
def test_figure_labels_are_never_mathtext(store_path: pathlib.Path) -> None:
    """A name with ``$`` is drawn as written; unescaped, ``$\\frac{$`` fails to parse."""
    from demon_optim.report import curves, heatmaps, html, tables
    from demon_optim.report.load import load_store

    data = load_store(store_path)
    setting = tables.store_settings(data)[0]
    hostile = dataclasses.replace(setting, name="cost $\\frac{$ and <script>")
    lines = curves.setting_curves(data, setting)
    (heatmap,) = heatmaps.heatmaps(data, [setting])
    heatmap = dataclasses.replace(heatmap, setting=hostile)
    for fig in (
        curves.draw_validation(hostile, lines),
        curves.draw_schedules(hostile, lines),
        heatmaps.draw(heatmap),
    ):
        drawn = html.render(fig, "x", "curves", hostile.name, "caption")
        assert drawn.png.startswith(b"\x89PNG") and b"<script" not in drawn.svg


def _one_seed_store(tmp_path: pathlib.Path) -> pathlib.Path:
    from demon_optim.study.store import ResultStore
    from tests.report.conftest import _result, _spec

    path = tmp_path / "one-seed.sqlite"
    with ResultStore(path) as store:
        store.write(_result(_spec("demon-sgdm", 0, 5, lr=0.1, momentum=0.9), "done", 0.8, 0.7))
        store.write(_result(_spec("sgdm", 0, 5, lr=0.1, momentum=0.9), "done", 0.7, 0.6))
    return path


def test_one_seed_shows_no_spread(tmp_path: pathlib.Path) -> None:
    from demon_optim.report import html, tables, topk
    from demon_optim.report.load import load_store

    (setting,) = tables.store_settings(load_store(_one_seed_store(tmp_path)))
    assert [(r.seeds, r.std) for r in setting.rows] == [(1, None), (1, None)]
    markdown = tables.to_markdown(setting)
    assert "±" not in markdown and "| 0.7000 |" in markdown
    rows = list(csv.DictReader(tables.to_csv(setting).splitlines()))
    assert [r["test_std"] for r in rows] == ["", ""] and rows[0]["test_mean"] == "0.7"
    content = html.Content("t", [], [setting], topk.top_k([setting]), sections=("tables",))
    assert "±" not in html.to_html(content) and "±" not in html.to_markdown(content)
