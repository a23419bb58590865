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
    #: how many leading columns name a row (repeated in each block of a table too wide to print)
    key: int = 1
    #: the width ``str(table)`` renders at (None: the terminal's)
    width: int | None = None

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
        it is unknown). Columns are separated by two spaces; when the table is too wide, the
        widest left-aligned columns wrap, down to 12 characters each; when it is still too
        wide, the columns are printed in blocks, each repeating the first ``key`` columns.
        Notes wrap at the width."""
        width = width or self.width or shutil.get_terminal_size((80, 24)).columns
        widths = self._widths(range(len(self.columns)), width)
        groups = self._groups(widths, width)
        lines = textwrap.wrap(self.title, width, subsequent_indent="  ") if self.title else []
        for k, group in enumerate(groups):
            if k:
                lines.append("")
            lines += self._block(group, self._widths(group, width))
        for note in self.notes:
            lines += textwrap.wrap(note, width, subsequent_indent="  ") or [""]
        return "\n".join(lines) + "\n"

    def _natural(self, i: int) -> int:
        return max([len(self.columns[i])] + [len(r[i]) for r in self.rows])

    def _widths(self, cols: Sequence[int], width: int) -> dict[int, int]:
        """Column widths for the columns ``cols``: natural, the widest left-aligned ones
        narrowed (wrapping) until the block fits ``width`` or reaches 12 characters."""
        widths = {i: self._natural(i) for i in cols}
        wrap = [i for i in cols if self.columns[i] not in self.right]
        while sum(widths.values()) + 2 * (len(widths) - 1) > width:
            i = max(wrap, key=lambda j: widths[j], default=None)
            if i is None or widths[i] <= _MIN_WRAP:
                break
            widths[i] -= 1
        return widths

    def _groups(self, widths: dict[int, int], width: int) -> list[list[int]]:
        """The columns in blocks that fit ``width`` (each starting with the key columns)."""
        n = len(self.columns)
        if sum(widths.values()) + 2 * (n - 1) <= width or n <= self.key + 1:
            return [list(range(n))]
        def least(i: int) -> int:  # narrowest a column prints at, with its separator
            return (widths[i] if self.columns[i] in self.right else min(widths[i], _MIN_WRAP)) + 2

        key = list(range(min(self.key, n)))
        base = sum(least(i) for i in key)
        groups, cur, used = [], list(key), base
        for i in range(len(key), n):
            w = least(i)
            if cur != key and used + w > width:
                groups.append(cur)
                cur, used = list(key), base
            cur.append(i)
            used += w
        groups.append(cur)
        return groups

    def _block(self, cols: list[int], widths: dict[int, int]) -> list[str]:
        lines = []
        for k, row in enumerate([list(self.columns)] + self.rows):
            parts = {i: (textwrap.wrap(row[i], widths[i]) or [""]) if self.columns[i] not in self.right
                     and len(row[i]) > widths[i] else [row[i]] for i in cols}
            for j in range(max(len(p) for p in parts.values())):
                out = []
                for i in cols:
                    text = parts[i][j] if j < len(parts[i]) else ""
                    out.append(text.rjust(widths[i]) if self.columns[i] in self.right else text.ljust(widths[i]))
                lines.append("  ".join(out).rstrip())
            if k == 0:
                lines.append("  ".join("-" * widths[i] for i in cols))
        return lines

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
