"""Terminal tables that fit the terminal they are printed on and never cut a verdict or a name.

Rules (issue 9, item 17):

- Nothing is ever truncated: no cell ends in "…". Text wraps at spaces; only a word longer than the
  whole terminal is folded onto the next line.
- A *key* column holds verdicts and names (services, functions, mechanisms, rules, endpoints,
  targets, scenarios): it is never narrower than its longest word, so each of them stays whole on
  one line.
- A *secondary* column holds detail that may move out of its column when space is short.

How: the layout is chosen when the table is printed (``__rich_console__`` knows the width), the
first that fits winning:

1. ``boxed``: the usual boxed table at its natural width (nothing has to wrap);
2. ``compact``: no borders, two spaces between columns, the widest columns narrowed first, each to
   no less than its minimum (a key column's longest word; another column's longest word, up to
   :data:`FOLD_MIN` cells, beyond which it folds);
3. ``merged``: as compact, with the secondary columns written as "header value" lines under the
   cell of the column named to carry them;
4. ``rows``: one wrapped paragraph per row, the values of the main columns then the secondary ones
   with their headers; it fits any terminal at least as wide as the longest word.

Cells are Rich markup strings, as everywhere in the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

Layout = Literal["boxed", "compact", "merged", "rows"]
Justify = Literal["left", "right", "center"]

FOLD_MIN = 8
"""The narrowest a non-key column is made (a longer word in it folds)."""


@dataclass(frozen=True)
class Column:
    header: str
    key: bool = False
    """Verdicts and names: never narrower than the longest word in the column."""
    secondary: bool = False
    """Detail that may move under the carrier column's cell when the terminal is narrow."""
    justify: Justify = "left"


def _lines(markup: str) -> list[str]:
    return Text.from_markup(markup).plain.split("\n")


def _longest_word(markups: Iterable[str]) -> int:
    return max(
        (cell_len(w) for m in markups for line in _lines(m) for w in line.split()), default=0
    )


def _longest_line(markups: Iterable[str]) -> int:
    return max((cell_len(line) for m in markups for line in _lines(m)), default=0)


def narrow(widths: list[int], minimums: list[int], available: int) -> list[int] | None:
    """Widths summing to at most ``available``: the widest column narrowed first, none below its
    minimum; None when the minimums alone do not fit."""
    if sum(minimums) > available:
        return None
    out = list(widths)
    while sum(out) > available:
        shrinkable = [i for i, w in enumerate(out) if w > minimums[i]]
        widest = max(shrinkable, key=lambda i: out[i])
        out[widest] -= 1
    return out


class FitTable:
    """A table of markup cells that chooses its layout from the width it is printed at."""

    def __init__(self, *columns: Column, title: str | None = None, carrier: int = -1) -> None:
        self.columns = columns
        self.title = title
        self.rows: list[tuple[str, ...]] = []
        main = [i for i, c in enumerate(columns) if not c.secondary]
        self.carrier = main[carrier] if main else 0
        """The column whose cells carry the secondary columns in the ``merged`` layout."""

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(cells)

    # -- measuring -----------------------------------------------------------------------------

    def _cells(
        self, index: int, columns: tuple[Column, ...], rows: list[tuple[str, ...]]
    ) -> list[str]:
        return [escape(columns[index].header)] + [row[index] for row in rows]

    def _limits(
        self, columns: tuple[Column, ...], rows: list[tuple[str, ...]]
    ) -> tuple[list[int], list[int]]:
        """Natural widths and minimum widths of each column."""
        widths, minimums = [], []
        for i, column in enumerate(columns):
            cells = self._cells(i, columns, rows)
            word = _longest_word(cells)
            widths.append(max(1, _longest_line(cells)))
            minimums.append(max(1, word if column.key else min(word, FOLD_MIN)))
        return widths, minimums

    def _merged(self) -> tuple[tuple[Column, ...], list[tuple[str, ...]]]:
        """The columns and rows with the secondary columns moved under the carrier's cells."""
        keep = [i for i, c in enumerate(self.columns) if not c.secondary or i == self.carrier]
        moved = [i for i, c in enumerate(self.columns) if c.secondary and i != self.carrier]
        rows = []
        for row in self.rows:
            extra = [f"[dim]{escape(self.columns[i].header)}[/] {row[i]}" for i in moved if row[i]]
            cells = [
                "\n".join(filter(None, [row[i], *extra])) if i == self.carrier else row[i]
                for i in keep
            ]
            rows.append(tuple(cells))
        # The carrier keeps whole what it carries: it is a key column when any moved column is.
        key = any(self.columns[i].key for i in moved)
        columns = tuple(
            replace(c, key=c.key or key) if i == self.carrier else c
            for i, c in enumerate(self.columns)
            if i in keep
        )
        return columns, rows

    def layout(self, width: int) -> Layout:
        """The layout the table takes at ``width`` cells."""
        return self._choose(width)[0]

    def _choose(
        self, width: int
    ) -> tuple[Layout, tuple[Column, ...], list[tuple[str, ...]], list[int]]:
        n = len(self.columns)
        widths, minimums = self._limits(self.columns, self.rows)
        if sum(widths) + 3 * n + 1 <= width:  # borders and a space either side of each cell
            return "boxed", self.columns, self.rows, widths
        fitted = narrow(widths, minimums, width - 2 * (n - 1))
        if fitted is not None:
            return "compact", self.columns, self.rows, fitted
        if any(c.secondary for c in self.columns):
            columns, rows = self._merged()
            widths, minimums = self._limits(columns, rows)
            fitted = narrow(widths, minimums, width - 2 * (len(columns) - 1))
            if fitted is not None:
                return "merged", columns, rows, fitted
        return "rows", self.columns, self.rows, []

    # -- rendering -----------------------------------------------------------------------------

    def render(self, width: int) -> RenderableType:
        layout, columns, rows, widths = self._choose(width)
        if layout == "rows":
            return self._paragraphs()
        table = Table(title=self.title, title_justify="left")
        if layout != "boxed":
            table.box = box.SIMPLE_HEAD
            table.show_edge = False
            table.pad_edge = False
            table.padding = (0, 1, 0, 0)
        for column, column_width in zip(columns, widths, strict=True):
            table.add_column(
                escape(column.header),
                justify=column.justify,
                overflow="fold",
                no_wrap=False,
                width=None if layout == "boxed" else column_width,
                min_width=column_width if column.key else None,
            )
        for row in rows:
            table.add_row(*row)
        return table

    def _paragraphs(self) -> RenderableType:
        """One bullet per row, its lines indented under the bullet's text."""
        grid = Table.grid(padding=(0, 1, 0, 0))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for row in self.rows:
            main = [row[i] for i, c in enumerate(self.columns) if not c.secondary and row[i]]
            extra = [
                f"[dim]{escape(c.header)}[/] {row[i]}"
                for i, c in enumerate(self.columns)
                if c.secondary and row[i]
            ]
            markup = " ".join(m.replace("\n", " ") for m in main)
            if extra:
                markup += " [dim]—[/] " + ", ".join(e.replace("\n", " ") for e in extra)
            grid.add_row("•", markup)
        return Group(Text(self.title, style="italic"), grid) if self.title else grid

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.render(options.max_width)
