"""Results that print as aligned text tables, render as HTML and save as JSON."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


# --------------------------------------------------------------------------- tables
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return f"{value:.3e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@dataclass
class Table:
    """Rows of results that print as an aligned text table and save as JSON.

    In a terminal (``print``) it is plain text; displayed in Jupyter or in the
    book (``display(table)``, or a table as a cell's last value) it renders as an
    HTML table (:meth:`_repr_html_`), numbers right-aligned, with the title as
    its caption. Both show the same formatted values.

    >>> print(Table([{"model": "a", "bytes": 1024}], title="sizes"))  # doctest: +SKIP
    """

    rows: list[dict[str, Any]]
    title: str = ""

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        return cols

    def __str__(self) -> str:
        cols = self.columns
        cells = [[_fmt(r.get(c, "")) for c in cols] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        def line(vals: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if i else v.ljust(w)
                             for i, (v, w) in enumerate(zip(vals, widths, strict=True)))
        out = [self.title] if self.title else []
        out += [line(cols), line(["-" * w for w in widths])]
        out += [line(row) for row in cells]
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cols = self.columns
        numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                       for r in self.rows if c in r) for c in cols]

        def cell(tag: str, text: str, right: bool) -> str:
            style = ' style="text-align: right"' if right else ' style="text-align: left"'
            return f"<{tag}{style}>{html.escape(text)}</{tag}>"

        head = "".join(cell("th", c, num) for c, num in zip(cols, numeric, strict=True))
        body = "".join(
            "<tr>" + "".join(cell("td", _fmt(r.get(c, "")), num)
                             for c, num in zip(cols, numeric, strict=True)) + "</tr>"
            for r in self.rows)
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return (f'<table class="companion-table">{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def to_markdown(self) -> str:
        cols = self.columns
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in self.rows]
        return "\n".join(lines)

    def save_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"title": self.title, "rows": self.rows}, indent=2,
                                         default=str))
