"""Changer addresses: ``<puck>:<position>`` (``3:05``), as changers, registries and the ISPyB
client write and read them. May import nothing of the package."""

from __future__ import annotations

import re

ADDRESS = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def format_address(puck: int, position: int) -> str:
    """The canonical ``<puck>:<position>`` address, position on two digits: ``3:05``."""
    return f"{puck}:{position:02d}"


def parse_address(text: str) -> tuple[int, int] | None:
    """``(puck, position)`` for text like ``3:05`` or ``3:5``; None when it is not an address."""
    match = ADDRESS.match(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def split_address(address: str | None) -> tuple[str | None, str | None]:
    """(puck, position-in-puck) as ISPyB's dewarLocation/containerLocation, when it has that form."""
    parsed = None if address is None else parse_address(address)
    if parsed is None:
        return None, None
    return str(parsed[0]), str(parsed[1])
