"""Plain-text tables for the terminal: a header, then one aligned line per row.

    aligned(["rank", "file"], [["1", "a.png"], ["2", "b.png"]], right={"rank"})

Cells longer than `max_width` are shortened from the start ("…" and their end, which names a file); a
`/` inside the kept end starts it at a folder.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def shorten(text: str, max_width: int) -> str:
    """`text`, or "…" and its end when longer than `max_width` (from a folder when one ends inside it)."""
    if len(text) <= max_width:
        return text
    tail = text[-(max_width - 1) :]
    cut = tail.find("/")
    return "…" + (tail[cut:] if 0 <= cut < len(tail) - 1 else tail)


def aligned(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Collection[str] = (),
    max_width: int | None = None,
    keep_whole: Collection[str] = (),
) -> list[str]:
    """Lines of a table: `header`, then `rows` (cells as text), columns as wide as their widest cell;
    columns named in `right` are right-aligned (numbers), those in `keep_whole` never shortened."""
    cells = [
        [
            cell if max_width is None or name in keep_whole else shorten(cell, max_width)
            for name, cell in zip(header, row, strict=True)
        ]
        for row in rows
    ]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if name in right else value.ljust(width)
            for name, value, width in zip(header, values, widths, strict=True)
        ).rstrip()

    return [line(header)] + [line(row) for row in cells]
