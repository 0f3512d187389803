"""Results as tables that show themselves: plain text in a terminal, HTML in a notebook,
pandas on request. Standard library only (pandas is imported by to_pandas alone).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import printable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Table", "cell"]


def cell(value: Any) -> str:
    """A value as a table shows it: floats to 4 significant places after the point."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value else f"{value:.2f}" \
            if abs(value) >= 10 else f"{value:.4f}".rstrip("0").rstrip(".")
    return printable(str(value))


class Table:
    """Rows (dicts) under `columns`, with an optional caption (a sentence or two)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                 caption: str = "") -> None:
        self.rows = [dict(r) for r in rows]
        self.columns = tuple(columns)
        self.caption = caption

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(self.columns))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        cells = [[cell(r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells])
                  for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                  for row in cells]
        lines = [ln.rstrip() for ln in lines] or ["(empty)"]
        return "\n".join(([printable(self.caption)] if self.caption else []) + lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(cell(r.get(c)))}</td>"
                                        for c in self.columns) + "</tr>" for r in self.rows)
        caption = f"<caption style='caption-side:bottom;text-align:left'>" \
                  f"{esc(self.caption)}</caption>" if self.caption else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
