"""External results (``--from-csv``): a published table as per-setting tables and Top-k.

The CSV has a header ``setting,method,value`` and an optional ``std`` column, one row per
(setting, method): ``value`` is the setting's metric (default lower is better, as error %
and perplexity; ``higher_is_better`` flips it). Each setting is ranked exactly as a store's
(:func:`demon_optim.report.tables.rank_rows`) and Top-1 / Top-3 is counted by schedule name
(:func:`demon_optim.report.naming.canonical`: compared case-insensitively, registered
method names map to their schedule, the paper's labels such as ``LR cosine`` to theirs,
anything else is kept as written; names equal but for case and white space are one method,
shown as first written).

Names are free text: tables keep them as written (stripped); where they become file names
or ids, :func:`demon_optim.report.naming.file_stems` makes them safe and distinct.

Every error names the file and the line:
``from-csv 'published.csv' line 7: value: got 'abc'; allowed: a number``.
"""

from __future__ import annotations

import csv
import io
import math
import pathlib

from demon_optim.errors import ConfigError
from demon_optim.report import naming
from demon_optim.report.tables import Row, Setting, rank_rows

REQUIRED = ("setting", "method", "value")
OPTIONAL = ("std",)


def _where(path: pathlib.Path, line: int | None = None) -> str:
    """``from-csv 'PATH' line N`` (the prefix of every error about the file)."""
    return f"from-csv {str(path)!r}" + ("" if line is None else f" line {line}")


def _number(text: str, where: str, field: str, allowed: str, minimum: float | None) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ConfigError(f"{where}: {field}: got {text!r}; allowed: {allowed}")
    return value


def read_csv(
    path: str | pathlib.Path, higher_is_better: bool = False, rank_all: bool = False
) -> list[Setting]:
    """Per-setting ranked tables from ``path``; ConfigError naming the file and the line on
    bad input."""
    path = pathlib.Path(path)
    try:
        return _read(path, higher_is_better, rank_all)
    except csv.Error as error:  # e.g. a field over csv.field_size_limit()
        raise ConfigError(f"{_where(path)}: not a readable CSV file: {error}") from None


def _read(path: pathlib.Path, higher_is_better: bool, rank_all: bool) -> list[Setting]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{_where(path)}: cannot read it: {error}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise ConfigError(
            f"{_where(path, 1)}: header: got nothing; allowed: the columns "
            f"{','.join(REQUIRED)}[,std]"
        )
    columns = [cell.strip().lower() for cell in header]
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if missing or unknown or repeated:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
        if repeated:
            problems.append(f"repeated column(s) {', '.join(repeated)}")
        raise ConfigError(
            f"{_where(path, 1)}: header: {'; '.join(problems)} (got {','.join(columns)}); allowed: "
            f"{','.join(REQUIRED)} and optionally std"
        )
    index = {name: columns.index(name) for name in columns}

    order: list[str] = []
    rows: dict[str, list[Row]] = {}
    seen: dict[tuple[str, str], int] = {}
    spelling: dict[str, str] = {}  # naming.key -> the first spelling of a Top-k name
    for cells in reader:
        line = reader.line_num
        where = _where(path, line)
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            raise ConfigError(
                f"{where}: got {len(cells)} fields; allowed: {len(columns)} ({','.join(columns)})"
            )
        setting = cells[index["setting"]].strip()
        method = cells[index["method"]].strip()
        for field, value in (("setting", setting), ("method", method)):
            if not value:
                raise ConfigError(f"{where}: {field}: got ''; allowed: a non-empty name")
        value = _number(cells[index["value"]].strip(), where, "value", "a number", None)
        std = None
        if "std" in index and cells[index["std"]].strip():
            std = _number(cells[index["std"]].strip(), where, "std", "a number >= 0, or empty", 0.0)
        canonical = naming.canonical(method)
        schedule = spelling.setdefault(naming.key(canonical), canonical)
        first = seen.get((setting, schedule))
        if first is not None:
            raise ConfigError(
                f"{where}: method: got {method!r} in setting {setting!r}, which line "
                f"{first} already has (as {schedule!r}); allowed: one row per method and setting"
            )
        seen[(setting, schedule)] = line
        if setting not in rows:
            order.append(setting)
            rows[setting] = []
        reference = naming.is_reference(method)
        rows[setting].append(
            Row(
                method=method,
                schedule=schedule,
                reference=reference,
                ranked=rank_all or not reference,
                selected="",
                config=None,
                mean=value,
                std=std,
                ci95=None,
                seeds=0,
                trials=1,
            )
        )
    if not order:
        raise ConfigError(f"{_where(path)}: has a header but no rows")
    return [
        Setting(
            name=name,
            slug=slug,
            metric="value",
            higher_is_better=higher_is_better,
            rows=rank_rows(rows[name], higher_is_better),
        )
        for name, slug in zip(order, naming.file_stems(order), strict=True)
    ]
