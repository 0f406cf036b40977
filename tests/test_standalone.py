"""The project stands alone: what a user needs is in its own docs, and their links resolve.

A user of the package has the repository, not the notes it was built from: no source file,
doc or test may send them to a document outside it (the spec, design or data notes that the
project's docs now carry), and every relative link between the docs must land on a file and
a heading that exist.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCANNED = ("src", "docs", "tests", "benchmarks", "examples", "README.md", "CHANGELOG.md")
SUFFIXES = {".py", ".md", ".toml", ".txt", ".rst", ".cfg"}

# the documents outside the repository that files used to cite (a data folder such as
# /shared/demon-data on a cluster is a path, not a citation, and stays allowed)
OUTSIDE = re.compile(
    r"shared/(spec|design)|spec/demon\.md|paper-experiments\.md|design\.md|data-sources\.md"
    r"|anchors\.md|\bspec section\b",
    re.IGNORECASE,
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _files() -> list[pathlib.Path]:
    out = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out += [p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    return sorted(p for p in out if p != pathlib.Path(__file__).resolve())


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces as -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(md: pathlib.Path) -> set[str]:
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_no_file_cites_documents_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _files()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "cite the project's own docs instead:\n" + "\n".join(hits)


def test_the_outside_pattern_catches_a_citation() -> None:
    assert OUTSIDE.search("The shapes are pinned in ``shared/spec/demon.md`` section 5")
    assert OUTSIDE.search("the report reads only the store (shared/design.md)")
    assert not OUTSIDE.search("--data-dir /shared/demon-data --store runs/x.sqlite")


@pytest.mark.parametrize(
    "md",
    [p for p in _files() if p.suffix == ".md"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_relative_links_in_the_docs_resolve(md: pathlib.Path) -> None:
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (md.parent / file_part).resolve() if file_part else md
        if not dest.exists():
            broken.append(f"{target}: no file {file_part}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{md.relative_to(ROOT)}: " + "; ".join(broken)
