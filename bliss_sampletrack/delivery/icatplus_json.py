"""How ICAT+ writes parcels and items in JSON, read the same way by the parcel registry
(tracker/icatplus/parcels.py) and the write-back client (delivery/icatplus_writeback.py).

An item's children are in ``content`` (else ``items``). Ids: ``_id``, else ``id`` (ICAT+ sends
both; pyicat-plus keeps ``id`` only). Numbers become text (``3.0`` -> ``"3"``); a changer location
or a container position is compared without leading zeros (``05`` = ``5``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def as_text(value: Any) -> str | None:
    """ICAT+ values as text: numbers without a spurious ``.0``, blank as None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def ident(node: Mapping[str, Any]) -> str | None:
    return as_text(node.get("_id")) or as_text(node.get("id"))


def children(node: Mapping[str, Any]) -> list[Any]:
    found = node.get("content")
    if found is None:
        found = node.get("items")
    return list(found) if isinstance(found, list) else []


def as_position(value: str | int | None) -> str | None:
    """A changer location or container position, compared without leading zeros (``05`` = ``5``)."""
    text = as_text(value)
    if text is None:
        return None
    return str(int(text)) if text.isdigit() else text


def items_with_holder(
    node: Mapping[str, Any], holder: Mapping[str, Any] | None = None
) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any] | None]]:
    """(item, the item holding it: None at the top) for every item under ``node``, at any depth."""
    for child in children(node):
        if isinstance(child, Mapping):
            yield child, holder
            yield from items_with_holder(child, child)
