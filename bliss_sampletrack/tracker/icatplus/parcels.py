"""Flattening ICAT+ parcels into one record per sample item, and indexing the records.

An item's children are in ``content`` (else ``items``). An item of type ``SAMPLE`` is a sample;
any other item with children is a container, and the nearest one holds the sample. Ids: ``_id``,
else ``id`` (ICAT+ sends both; pyicat-plus keeps ``id`` only). ``sampleChangerLocation`` is the
container's (the sample's own if it has one), ``sampleContainerPosition`` the sample's; numbers
become text (``3.0`` -> ``"3"``). ICAT+ items have no barcode field: ``barcode_fields`` says
which item fields carry the code that readers see (default ``name``; also ``id``, ``sampleId``,
``description``, ``comments``). A value that is not a valid barcode, or a no-read string, is not
indexed; a code or an address that several items share resolves to nothing (ambiguous), never to
one of them at random.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.delivery.icatplus_json import as_position, as_text, children, ident, items_with_holder
from bliss_sampletrack.errors import InvalidBarcodeError
from bliss_sampletrack.tracker.icatplus.errors import IcatPlusUnavailable

#: ICAT+ item fields that may carry the code a reader sees -> record key
BARCODE_FIELDS = {
    "name": "item_name",
    "id": "item_id",
    "sampleId": "sample_id",
    "description": "description",
    "comments": "comments",
}


def flatten(parcels: Iterable[Any], sheet_names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One record per sample item of ``parcels`` (ICAT+ JSON), with its parcel and container."""
    records: list[dict[str, Any]] = []
    for parcel in parcels:
        if not isinstance(parcel, Mapping):
            raise IcatPlusUnavailable(f"unexpected parcel in ICAT+'s answer: {str(parcel)[:80]!r}")
        where = {"parcel_id": ident(parcel), "parcel_name": as_text(parcel.get("name"))}
        for item in children(parcel):
            _walk(item, where, None, records, sheet_names or {})
    return records


def _walk(
    item: Any,
    where: Mapping[str, Any],
    container: Mapping[str, Any] | None,
    records: list[dict[str, Any]],
    sheet_names: Mapping[str, str],
) -> None:
    if not isinstance(item, Mapping):
        return
    if str(item.get("type") or "").upper() == "SAMPLE":
        holder = container or {}
        sample_id = as_text(item.get("sampleId"))
        records.append(
            {
                **where,
                "item_name": as_text(item.get("name")),
                "sheet_name": sheet_names.get(sample_id) if sample_id else None,
                "item_id": ident(item),
                "sample_id": sample_id,
                "container_id": ident(holder) if container else None,
                "container_name": as_text(holder.get("name")),
                "container_position": as_text(item.get("sampleContainerPosition")),
                "changer_location": as_text(item.get("sampleChangerLocation"))
                or as_text(holder.get("sampleChangerLocation")),
                "description": as_text(item.get("description")),
                "comments": as_text(item.get("comments")),
            }
        )
        return
    for child in children(item):
        _walk(child, where, item, records, sheet_names)


def all_items(node: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Every item under ``node``, at any depth."""
    return (item for item, _ in items_with_holder(node))


def index(
    records: list[dict[str, Any]], barcode_fields: Iterable[str], no_read: Iterable[str]
) -> tuple[dict[str, set[int]], dict[tuple[str, str], set[int]]]:
    """(by barcode, by changer address): the positions in ``records`` of each code and address."""
    by_barcode: dict[str, set[int]] = {}
    by_location: dict[tuple[str, str], set[int]] = {}
    for i, record in enumerate(records):
        for name in barcode_fields:
            code = record.get(BARCODE_FIELDS[name])
            if code is None:
                continue
            try:
                validate_barcode(code, no_read=no_read)
            except InvalidBarcodeError:  # e.g. a name with non-ASCII letters, or "NOREAD"
                continue
            by_barcode.setdefault(code, set()).add(i)
        location = as_position(record.get("changer_location"))
        position = as_position(record.get("container_position"))
        if location is not None and position is not None:
            by_location.setdefault((location, position), set()).add(i)
    return by_barcode, by_location
