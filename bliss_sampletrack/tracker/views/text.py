"""Text building blocks of the shell views: local times with their zone, aligned tables, and the
highlight of one row.

The highlight is a ``>`` marker in front of the row, always, so that a view copied into a log,
an e-mail or a ticket still shows it; on a terminal the row is also bold (ANSI), which the BLISS
shell renders. :func:`ansi_wanted` decides: a terminal, and no ``NO_COLOR`` in the environment.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TextIO

log = logging.getLogger(__name__)

BOLD = "\x1b[1m"
RESET = "\x1b[0m"
MARK = ">"


def local_time(when: datetime, tz: tzinfo | None = None) -> str:
    """``2026-12-03 10:14:07 CET``: ``when`` in this machine's zone (or ``tz``), zone shown.

    The zone is the one in force at that instant (CET in winter, CEST in summer), so two times
    of one view may name two zones around a change of season: both are right."""
    local = when.astimezone(tz)
    zone = local.strftime("%Z") or local.strftime("UTC%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {zone}"


def ansi_wanted(stream: TextIO | None = None) -> bool:
    """Bold highlights on a terminal only (the BLISS shell's is one), never in a pipe or a log
    file; ``NO_COLOR`` (https://no-color.org) turns them off everywhere."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a stream without isatty(), or a closed one: no terminal
        return False


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a :func:`table`; ``marked``: the highlighted one (e.g. the mounted pin)."""

    cells: Sequence[str]
    marked: bool = False


def table(
    headers: Sequence[str], rows: Sequence[Row], *, indent: str = "  ", ansi: bool = False
) -> list[str]:
    """Aligned columns (the last one is not padded: it may be long), a ``>`` before marked rows,
    bold too with ``ansi``. Returns the lines."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row.cells) != len(headers):
            raise ValueError(f"a row has {len(row.cells)} cells for {len(headers)} columns: {row.cells!r}")
        widths = [max(w, len(c)) for w, c in zip(widths, row.cells, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    lines = [f"{indent}  {line(headers)}"]
    for row in rows:
        text = line(row.cells)
        if row.marked:
            lines.append(f"{indent}{MARK} {BOLD}{text}{RESET}" if ansi else f"{indent}{MARK} {text}")
        else:
            lines.append(f"{indent}  {text}")
    return lines
