"""Write a report: ``index.html`` (self-contained), ``report.md``, CSV tables and figures.

Layout of the output directory::

    index.html          one page: figures embedded as base64 PNG data URIs, inline CSS, no
                        script and no network access needed to view it
    report.md           the same header, tables and band counts as Markdown (figures linked)
    topk.csv            method,top1,top3,settings (counts)
    tables/<slug>.csv   one per setting (columns: demon_optim.report.tables.CSV_COLUMNS)
    targets/<slug>.csv  time to target per task x budget (demon_optim.report.targets)
    profiles.csv        the area under each method's performance profiles
    budgets/<slug>.csv  best of k, expected maximum, spread over orderings per search
    success.csv         the share of each search's configurations within the band
    figures/<slug>.png and .svg
    .demon-optim-report.json   the files this report wrote (demon_optim.report.output)

Slugs come from :func:`demon_optim.report.naming.file_stems` (injective, bounded). HTML ids
are ``setting-<slug>`` and ``figure-<slug>``, so no name can repeat a section's id. Every
name is escaped for the format it lands in (:mod:`demon_optim.report.escape`). The folder
rules (what may be overwritten, atomic writes, errors) are :mod:`demon_optim.report.output`'s.
"""

from __future__ import annotations

import base64
import html
import io
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from demon_optim.report import escape, output
from demon_optim.report import tables as tables_module
from demon_optim.report import topk as topk_module
from demon_optim.report.glue import GlueTable
from demon_optim.report.tables import Setting
from demon_optim.report.topk import TopK

if TYPE_CHECKING:  # the imported view (numpy, curves) is loaded only by a store's report
    from demon_optim.report.imported import ImportedTable

PNG_DPI = 110


@dataclass(frozen=True)
class Figure:
    """A rendered figure."""

    slug: str  # file stem under figures/
    section: str  # "heatmaps", "curves", "samples", "profiles", "budgets"
    title: str
    caption: str
    png: bytes
    svg: bytes


@dataclass(frozen=True)
class Table:
    """A table a view adds to its section, after the section's figures: its cells already
    texts, its CSV already written (``csv_path`` relative to the report; "" for none)."""

    slug: str  # HTML id table-<slug>
    title: str
    header: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    numeric: tuple[str, ...] = ()  # headers of the right-aligned columns
    classes: tuple[str, ...] = ()  # per row: "best", "reference", "unranked" or ""
    note: str = ""  # a paragraph under the table
    csv_path: str = ""
    csv: str = ""


@dataclass(frozen=True)
class Content:
    """Everything on the page, already computed."""

    title: str
    header: Sequence[tuple[str, str]]  # (what, value) lines of "what was run"
    settings: Sequence[Setting]
    topk: TopK
    figures: Sequence[Figure] = ()
    notes: dict[str, str] = field(default_factory=dict)  # section -> paragraph
    sections: tuple[str, ...] = ("tables", "topk", "heatmaps", "curves")
    glue: Sequence[GlueTable] = ()  # the GLUE view of glue-* settings (section "glue")
    blocks: Mapping[str, Sequence[Table]] = field(default_factory=dict)  # section -> tables
    imported: Sequence[ImportedTable] = ()  # published results, apart (section "imported")


def render(fig: object, slug: str, section: str, title: str, caption: str) -> Figure:
    """PNG and SVG bytes of a matplotlib Figure (Agg canvas; no pyplot, no display)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attaches itself: savefig renders with Agg, never a GUI backend
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=PNG_DPI, metadata={"Software": None})  # type: ignore[attr-defined]
    with matplotlib.rc_context({"svg.hashsalt": slug}):
        fig.savefig(svg, format="svg", metadata={"Date": None})  # type: ignore[attr-defined]
    return Figure(slug, section, title, caption, png.getvalue(), svg.getvalue())


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em;
margin-top: 2em; } h3 { font-size: 1.05em; margin-bottom: .3em; }
table { border-collapse: collapse; margin: .4em 0 1.2em; font-size: .88em; }
th, td { border: 1px solid #d8d8d8; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #e6f4e6; font-weight: 600; } tr.reference td { color: #666;
font-style: italic; } tr.unranked td { color: #999; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto;
border: 1px solid #eee; } figcaption { font-size: .88em; color: #444; }
p.note { color: #444; font-size: .92em; } nav a { margin-right: 1em; }
"""

_SECTION_TITLES = {
    "tables": "Per-setting tables",
    "topk": "Top-1 / Top-3 across settings",
    "heatmaps": "Robustness heatmaps (learning rate x momentum)",
    "curves": "Curves: validation metric and the schedules applied",
    "samples": "Samples of the final models",
    "glue": "GLUE: task scores and their average",
    "targets": "Time to target: steps and training time to the validation target",
    "profiles": "Performance profiles: time to target across settings",
    "budgets": "Tuning budgets: the best of k sampled configurations",
    "success": "Success rate: sampled configurations within the band of the best",
    "imported": "Published results (imported)",
}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(
    header: Sequence[str],
    cells: Sequence[Sequence[str]],
    classes: Sequence[str] = (),
    numeric_headers: Sequence[str] = (),
) -> str:
    numeric = [
        i
        for i, h in enumerate(header)
        if h in {"rank", "seeds", "configs", "diverged", "failed", "settings", "95 % CI"}
        or h in numeric_headers
        or "mean" in h
        or h.startswith(("val ", "Top-"))
    ]
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for k, line in enumerate(cells):
        cls = classes[k] if k < len(classes) and classes[k] else ""
        attr = f' class="{cls}"' if cls else ""
        tds = "".join(
            f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
            for i, c in enumerate(line)
        )
        out.append(f"<tr{attr}>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _row_class(row: tables_module.Row) -> str:
    if row.best:
        return "best"
    if row.reference and not row.ranked:
        return "reference"
    return "unranked" if row.rank is None else ""


def _section_html(content: Content, section: str) -> str:
    parts = [f'<h2 id="{section}">{_e(_SECTION_TITLES[section])}</h2>']
    if content.notes.get(section):
        parts.append(f'<p class="note">{_e(content.notes[section])}</p>')
    if section == "tables":
        for setting in content.settings:
            header, cells = tables_module.header_and_cells(setting)
            parts.append(
                f'<h3 id="setting-{_e(setting.slug)}">{_e(setting.name)} '
                f"<small>({_e(setting.metric)}, {_e(setting.direction)})</small></h3>"
            )
            classes = [_row_class(r) for r in setting.rows]
            parts.append(_html_table(header, cells, classes, setting.metric_columns))
            if setting.shared:
                parts.append(f'<p class="note">{_e(tables_module.shared_text(setting))}</p>')
            if setting.published:
                published = f"Published on this data: {setting.published}"
                parts.append(f'<p class="note">{_e(published)}</p>')
    elif section == "glue":
        for table in content.glue:
            parts.append(f"<h3>{_e(table.name)}</h3>")
            parts.append(_html_table(table.header(), table.cells(), (), table.header()[1:]))
    elif section == "imported":
        for table in content.imported:
            parts.append(
                f'<h3 id="imported-{_e(table.slug)}">{_e(table.name)} '
                f"<small>({_e(table.metric)}, {_e(table.direction)})</small></h3>"
            )
            classes = ["reference"] * len(table.rows)
            parts.append(_html_table(table.header(), table.cells(), classes, table.header()[2:]))
        parts += _figures_html(content, section)
    elif section == "topk":
        header, cells = topk_module.header_and_cells(content.topk)
        parts.append(
            f"<p>Over <strong>{content.topk.settings}</strong> setting(s); percentages are "
            "of those settings; <em>settings</em>: how many of them a method took part in.</p>"
        )
        parts.append(_html_table(header, cells))
    else:
        parts += _figures_html(content, section)
        for table in content.blocks.get(section, ()):
            parts.append(f'<h3 id="table-{_e(table.slug)}">{_e(table.title)}</h3>')
            parts.append(_html_table(table.header, table.cells, table.classes, table.numeric))
            if table.note:
                parts.append(f'<p class="note">{_e(table.note)}</p>')
    return "\n".join(parts)


def _figures_html(content: Content, section: str) -> list[str]:
    parts = []
    for fig in (f for f in content.figures if f.section == section):
        data = base64.b64encode(fig.png).decode("ascii")
        parts.append(
            f'<figure id="figure-{_e(fig.slug)}"><img alt="{_e(fig.title)}" '
            f'src="data:image/png;base64,{data}">'
            f"<figcaption><strong>{_e(fig.title)}.</strong> {_e(fig.caption)} "
            f'(<a href="figures/{_e(fig.slug)}.svg">SVG</a>)</figcaption></figure>'
        )
    return parts


def to_html(content: Content) -> str:
    """The whole page as one string."""
    nav = " ".join(f'<a href="#{s}">{_e(_SECTION_TITLES[s])}</a>' for s in content.sections)
    header = "\n".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in content.header)
    body = "\n".join(_section_html(content, s) for s in content.sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(content.title)}</title>\n<style>{_CSS}</style></head>\n"
        f"<body>\n<h1>{_e(content.title)}</h1>\n"
        f'<dl class="header">\n{header}\n</dl>\n<nav>{nav}</nav>\n{body}\n</body></html>\n'
    )


def to_markdown(content: Content) -> str:
    """The report as Markdown; every text escaped (:func:`~demon_optim.report.escape.markdown`)."""
    md = escape.markdown
    lines = [f"# {md(content.title)}", ""]
    lines += [f"- **{md(k)}**: {md(v)}" for k, v in content.header]
    for section in content.sections:
        lines += ["", f"## {_SECTION_TITLES[section]}", ""]
        if content.notes.get(section):
            lines += [md(content.notes[section]), ""]
        if section == "tables":
            lines += [tables_module.to_markdown(s) for s in content.settings]
        elif section == "topk":
            lines.append(topk_module.to_markdown(content.topk))
        elif section == "glue":
            lines += [table.to_markdown() for table in content.glue]
        if section == "imported":
            lines += [table.to_markdown() for table in content.imported]
        if section not in ("tables", "topk", "glue"):
            for fig in (f for f in content.figures if f.section == section):
                lines += [
                    f"![{md(fig.title)}](figures/{fig.slug}.png)",
                    "",
                    f"{md(fig.title)}. {md(fig.caption)} ([SVG](figures/{fig.slug}.svg))",
                    "",
                ]
            lines += [_table_markdown(t) for t in content.blocks.get(section, ())]
    return "\n".join(lines).rstrip() + "\n"


def _table_markdown(table: Table) -> str:
    md = escape.markdown
    align = ["---:" if h in table.numeric else "---" for h in table.header]
    lines = [
        f"### {md(table.title)}",
        "",
        "| " + " | ".join(md(h) for h in table.header) + " |",
        "|" + "|".join(align) + "|",
    ]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in table.cells]
    if table.note:
        lines += ["", md(table.note)]
    return "\n".join(lines) + "\n"


def files(content: Content) -> dict[str, bytes]:
    """Every file of the report, relative path -> bytes (``index.html`` last)."""
    out: dict[str, bytes] = {}

    def add(rel: str, data: bytes) -> None:
        if rel in out:  # file_stems is injective: this would be a bug, never a lost table
            raise RuntimeError(f"report: two files named {rel!r}")
        out[rel] = data

    for setting in content.settings:
        add(f"tables/{setting.slug}.csv", tables_module.to_csv(setting).encode("utf-8"))
    add("topk.csv", topk_module.to_csv(content.topk).encode("utf-8"))
    if content.glue:
        add("glue.csv", "".join(t.to_csv() for t in content.glue).encode("utf-8"))
    for tables in content.blocks.values():
        for table in tables:
            if table.csv_path:
                add(table.csv_path, table.csv.encode("utf-8"))
    for table in content.imported:
        add(f"tables/imported_{table.slug}.csv", table.to_csv().encode("utf-8"))
    for fig in content.figures:
        add(f"figures/{fig.slug}.png", fig.png)
        add(f"figures/{fig.slug}.svg", fig.svg)
    add("report.md", to_markdown(content).encode("utf-8"))
    add("index.html", to_html(content).encode("utf-8"))
    return out


def write(content: Content, out_dir: str | pathlib.Path, force: bool = False) -> pathlib.Path:
    """Write every file of the report into ``out_dir``; returns the path of index.html.

    Refuses a folder holding files no report wrote unless ``force``; see
    :mod:`demon_optim.report.output`.
    """
    return output.write_files(out_dir, files(content), force=force) / "index.html"
