"""The one plain-text table renderer (torch-free, so converters and the CLI share it).

Columns are left-aligned, two spaces apart, each as wide as its widest cell; trailing spaces are dropped. The
export table, ``sgsc compress``'s layer table and the pipeline's summary all print through
:func:`render_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_rows"]


def render_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` (the first is usually the header) as aligned lines."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
