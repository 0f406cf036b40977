"""Escaping for each format the report writes: names are free text (``--from-csv``).

A setting or method name may hold anything a CSV cell can: ``<script>``, ``|``, newlines,
``=cmd|...``, ``$x$``. Every format gets it shown as written, never interpreted:

* HTML: :func:`html.escape` (in :mod:`demon_optim.report.html`);
* Markdown (:func:`markdown`): HTML-significant characters as entities, Markdown's inline
  metacharacters backslash-escaped, line breaks as spaces (one table row, one heading);
* CSV (:func:`csv_cell`): a cell a spreadsheet would run as a formula gets a leading ``'``
  (the OWASP rule), except a plain number such as ``-0.5``;
* matplotlib (:func:`mathtext`): ``$`` escaped, so a name is never parsed as mathtext.
"""

from __future__ import annotations

import re

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MARKDOWN = frozenset("\\`*_[]|~$")  # inline metacharacters (and GitHub's $ math)
_BREAKS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


def markdown(text: object) -> str:
    """``text`` as literal Markdown inline text (a table cell, a heading, a list item).

    >>> markdown("<b>a|b</b>\\n`x`")
    '&lt;b&gt;a\\\\|b&lt;/b&gt; \\\\`x\\\\`'
    """
    out = []
    for char in _BREAKS.sub(" ", str(text)):
        if char in _HTML:
            out.append(_HTML[char])
        elif char in _MARKDOWN:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def csv_cell(value: object) -> object:
    """``value`` safe to open in a spreadsheet: text starting with ``= + - @``, a tab or a
    carriage return gets a leading ``'`` (so it is shown, not evaluated); numbers and plain
    numeric text (``-0.5``, ``1e-3``) are kept.

    >>> csv_cell("=cmd|' /C calc'!A0"), csv_cell("-0.5"), csv_cell(-1), csv_cell("demon")
    ("'=cmd|' /C calc'!A0", '-0.5', -1, 'demon')
    """
    if not isinstance(value, str):
        return value
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def mathtext(text: object) -> str:
    """``text`` for a matplotlib label: ``$`` escaped, so it is drawn as written."""
    return str(text).replace("$", r"\$")
