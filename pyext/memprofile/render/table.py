"""HTML tables for every renderer that builds one (the static report, the
comparison, the ipywidgets view), so that escaping happens in one place.

Headers, captions and cells are text and go through `escape`; only `Html`,
markup a renderer built itself from parts it escaped (a bar, a <code> span),
goes in as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape


class Html(str):
    """Markup a renderer built from escaped parts: a cell put in as it is."""


@dataclass(frozen=True)
class Column:
    """A column's title, with the style of its header cell and of its cells."""

    title: str
    header_style: str = ""
    cell_style: str = ""


@dataclass(frozen=True)
class Row:
    """A row with attributes of its own (`data-line`)."""

    cells: Sequence[str]
    attrs: Mapping[str, object] = field(default_factory=dict)


def attributes(attrs: Mapping[str, object]) -> str:
    """The attributes that have a value, as ` name='value'`, each value escaped."""
    return "".join(f" {name}='{escape(str(value))}'" for name, value in attrs.items() if value not in ("", None))


def cell_html(content: str) -> str:
    return content if isinstance(content, Html) else escape(str(content))


def html_table(
    columns: Sequence[str | Column],
    rows: Iterable[Sequence[str] | Row],
    *,
    caption: str = "",
    attrs: Mapping[str, object] | None = None,
    header_style: str = "",
    cell_style: str = "",
    more: int = 0,
) -> str:
    """A <table> with a head and a body, then 'and N more' when `more` rows
    were left out. `columns`: titles, or Columns with styles of their own;
    `header_style`, `cell_style`: the style of the cells whose column has none."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    head = "".join(
        f"<th{attributes({'style': c.header_style or header_style})}>{cell_html(c.title)}</th>" for c in cols
    )
    td = [f"<td{attributes({'style': c.cell_style or cell_style})}>" for c in cols]

    def row(r: Sequence[str] | Row) -> str:
        cells, own = (r.cells, r.attrs) if isinstance(r, Row) else (r, {})
        return f"<tr{attributes(own)}>" + "".join(f"{td[i]}{cell_html(c)}</td>" for i, c in enumerate(cells)) + "</tr>"

    body = "".join(row(r) for r in rows)
    title = f"<caption style='text-align:left'>{cell_html(caption)}</caption>" if caption else ""
    tail = f"<p class='mp-muted' style='opacity:.7'>and {more:,} more</p>" if more else ""
    return f"<table{attributes(attrs or {})}>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tail}"
