"""One table type for everything initwise prints: plans, diagnose reports, comparisons.

A :class:`Table` is data (a title, column names, rows of strings, notes) that renders itself:
``print(table)`` writes aligned plain text fitted to the terminal's width (the widest text
columns wrap; numbers never do), ``rich.print(table)`` draws a rich table, ``table.markdown()``
gives GitHub Markdown and ``table.render(width)`` the text at a chosen width.
"""
from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["Table"]

#: Narrowest a wrapped column gets (characters) before the table is allowed to overflow.
_MIN_WRAP = 12


@dataclass
class Table:
    """``rows`` of cells (strings) under ``columns``; ``right`` holds the names of the columns
    aligned right (numbers); ``notes`` are lines printed under the table."""

    title: str
    columns: Sequence[str]
    rows: list[list[str]]
    right: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.columns = list(self.columns)
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: row {i} has {len(row)} cells for "
                                 f"{len(self.columns)} columns")
        self.rows = [[str(c) for c in row] for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[str]:
        """The cells of column ``name``, top to bottom."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    # ------------------------------------------------------------------ text
    def render(self, width: int | None = None) -> str:
        """Plain text at most ``width`` characters wide (default: the terminal's width, 80 when
        it is unknown): columns are separated by two spaces; when the table is too wide, the
        widest left-aligned columns wrap, down to 12 characters each."""
        width = width or shutil.get_terminal_size((80, 24)).columns
        cells = [list(self.columns)] + self.rows
        widths = [max(len(line) for r in cells for line in r[i].split("\n")) if cells else 0
                  for i in range(len(self.columns))]
        wrap = [i for i, c in enumerate(self.columns) if c not in self.right]
        while sum(widths) + 2 * (len(widths) - 1) > width:
            i = max(wrap, key=lambda j: widths[j], default=None)
            if i is None or widths[i] <= _MIN_WRAP:
                break
            widths[i] -= 1
        lines = [self.title] if self.title else []
        for k, row in enumerate(cells):
            parts = [textwrap.wrap(c, widths[i]) or [""] if self.columns[i] not in self.right and len(c) > widths[i]
                     else [c] for i, c in enumerate(row)]
            for j in range(max(len(p) for p in parts)):
                out = []
                for i, p in enumerate(parts):
                    text = p[j] if j < len(p) else ""
                    out.append(text.rjust(widths[i]) if self.columns[i] in self.right else text.ljust(widths[i]))
                lines.append("  ".join(out).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += self.notes
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:  # the REPL and notebooks show the table itself
        return self.render()

    def __rich__(self) -> Any:
        """A ``rich.table.Table`` of the same cells (``rich.print(table)``)."""
        from rich.console import Group
        from rich.table import Table as RichTable
        from rich.text import Text

        t = RichTable(title=self.title or None, title_justify="left")
        for c in self.columns:
            t.add_column(c, justify="right" if c in self.right else "left", overflow="fold")
        for r in self.rows:
            t.add_row(*r)
        return Group(t, *(Text(n) for n in self.notes)) if self.notes else t

    def markdown(self) -> str:
        """The table as GitHub Markdown (title in bold above it, notes below)."""
        def esc(c: str) -> str:
            return c.replace("|", "\\|").replace("\n", " ")
        out = [f"**{self.title}**", ""] if self.title else []
        out.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        out.append("|" + "|".join("---:" if c in self.right else "---" for c in self.columns) + "|")
        out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in self.rows]
        if self.notes:
            out += [""] + self.notes
        return "\n".join(out) + "\n"
