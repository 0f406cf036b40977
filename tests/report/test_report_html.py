"""The written report: files, the self-contained page, and a real browser loading every figure."""

from __future__ import annotations

import csv
import html.parser
import pathlib
import re

import pytest

from demon_optim.report import build_report
from tests.conftest import requires
from tests.report.conftest import rendered_dom

pytestmark = requires("matplotlib", "(draws the report's figures)")


@pytest.fixture(scope="module")
def report(store_path: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("report") / "out"
    return build_report(store_path, out, tolerance="0.01")


def test_files(report: pathlib.Path) -> None:
    out = report.parent
    assert report.name == "index.html"
    assert sorted(p.name for p in (out / "tables").iterdir()) == [
        "mnist1d-mlp_adam_10ep.csv",
        "mnist1d-mlp_sgdm_10ep.csv",
        "mnist1d-mlp_sgdm_20ep.csv",
    ]
    with (out / "topk.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["method", "top1", "top3", "settings"]
    assert rows[0] == {"method": "demon", "top1": "2", "top3": "3", "settings": "3"}
    figures = sorted(p.name for p in (out / "figures").iterdir())
    stems = {name.rsplit(".", 1)[0] for name in figures}
    assert "heatmap_mnist1d-mlp_sgdm_10ep" in stems
    assert "profiles" in stems  # the performance profiles (mnist1d-mlp has a target)
    assert sorted(p.name for p in (out / "targets").iterdir()) == [
        "mnist1d-mlp_10ep.csv",
        "mnist1d-mlp_20ep.csv",
    ]
    with (out / "profiles.csv").open() as handle:
        areas = list(csv.DictReader(handle))
    # target 0.6: demon-sgdm reaches it first on both budgets (epoch 2 of 10, alone on 20)
    assert areas[0]["method"] == "demon-sgdm" and areas[0]["area_time"] == "1.0"
    assert {f"validation_{s}" for s in ("mnist1d-mlp_sgdm_10ep", "mnist1d-mlp_adam_10ep")} <= stems
    for stem in stems:  # every figure as PNG and SVG
        assert (out / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / "figures" / f"{stem}.svg").read_bytes()[:1000]
    markdown = (out / "report.md").read_text()
    assert "| 1 | demon-sgdm (best) | lr=0.1, momentum=0.9 | 0.8000 ± 0.0141 |" in markdown
    assert "demon-sgdm: 2 of 4 cells; sgdm: 1 of 4 cells" in markdown


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found)
        for key in ("src", "href"):
            value = found.get(key) or ""
            if tag != "a" and value and not value.startswith("data:"):
                self.references.append(value)


def test_page_is_self_contained(report: pathlib.Path) -> None:
    text = report.read_text()
    page = _Page()
    page.feed(text)
    assert len(page.images) == 8  # 1 heatmap + (validation + schedules) x 3 settings + profiles
    assert all((img["src"] or "").startswith("data:image/png;base64,") for img in page.images)
    assert page.references == []  # nothing to fetch: no external script, style or image
    assert "<script" not in text and "http://" not in text and "https://" not in text
    for what in ("store", "tasks", "grid: demon-sgdm", "seeds", "budgets", "versions"):
        assert f"<dt>{what}</dt>" in text
    assert "lr {0.01, 0.1} x momentum {0.9, 0.95}" in text
    assert "33 (29 done, 3 diverged, 1 failed)" in text
    for section in ("tables", "topk", "heatmaps", "curves", "targets", "profiles"):
        assert f'<h2 id="{section}">' in text
    assert '<h3 id="table-targets-mnist1d-mlp_10ep">' in text


def test_every_figure_loads_in_headless_chromium(
    report: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    dom = rendered_dom(report, tmp_path)
    marks = re.findall(r'<img[^>]*data-loaded="(yes|no)"', dom)
    assert marks == ["yes"] * 8, dom[:500]
    assert 'data-images="8/8"' in dom
    # the time-to-target tables and the profiles' figure and table are in the rendered page
    profiles = re.search(r'<figure id="figure-profiles">.*?</figure>', dom, re.S)
    assert profiles is not None and 'data-loaded="yes"' in profiles.group(0)
    assert re.search(r'<h3 id="table-profiles-area">', dom)
    assert re.search(r'<h3 id="table-targets-mnist1d-mlp_10ep">', dom)
