"""The demo's summary: every scan's sample tag read back from Redis (blissdata) and from its HDF5
file (h5py), and the events the tracking service stored (its REST API), side by side.

Caveat: under the ESRF data policy, BLISS's writer also writes the dataset's ICAT ``Sample_*``
fields into ``/<n>.1/sample``, after the tracker's tag: ``sample/name`` is then ICAT's
``Sample_name``, which the tracker sets to the sample's name (or barcode), or to "no sample
mounted" when nothing is. So "agree" compares the keys the tracker's tag has; the HDF5 ``name``
of a scan without a sample is reported apart. The writer (``--writer``) is named in the summary:
with the NexusWriter, each scan's file is read once the writer says SUCCEEDED.

The puck inventory of the sequence's last step, as kept in Redis, is compared with what the
sequence did to the simulated pucks (not with the tracker's own view): the pin taken out must be
the one ``missing``, the relabelled pin and the pin whose label it copies the one ``duplicated``,
the pins with no label (the simulation's truth, ``sc.physical()``) the ``no_read`` ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bliss_sampletrack.demo.sequence import DemoLog, InventoryRecord

TAG_KEYS = ("state", "name", "barcode", "changer_position", "mount_event_id")


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def redis_tags(redis_data_url: str, session: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(filename, scan number) -> scan_info["sample"], read with a fresh blissdata client."""
    from blissdata.redis_engine.store import DataStore

    store = DataStore(redis_data_url)
    _, keys = store.search_existing_scans(session=session)
    tags = {}
    for key in keys:
        info = store.load_scan(key).info
        if "sample" in info:
            tags[(info["filename"], int(info["scan_nb"]))] = dict(info["sample"])
    return tags


def hdf5_tag(filename: str, scan_nb: int) -> dict[str, Any]:
    import h5py

    with h5py.File(filename, "r", locking=False) as h5:
        group = h5.get(f"{scan_nb}.1/sample")
        if group is None:
            return {}
        tag = {key: _text(item[()]) for key, item in group.items() if not hasattr(item, "keys")}
        tag.update({f"@{key}": _text(value) for key, value in group.attrs.items()})
        return tag


def service_events(api_url: str, token: str, beamline: str) -> list[dict[str, Any]]:
    import requests

    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"beamline": beamline, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        answer = requests.get(
            f"{api_url}/events", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        answer.raise_for_status()
        body = answer.json()
        events += body["events"]
        cursor = body.get("next_cursor")
        if not cursor:
            return events


def _position(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split(":"))


#: the findings the inventory check compares with what the sequence did
CHECKED = ("missing", "duplicated", "no_read")


def inventory_check(record: InventoryRecord) -> dict[str, Any]:
    """The inventory kept in Redis against what the sequence did to the pucks: per checked kind,
    the expected and the found ``[addresses, barcode]`` rows, and whether they all agree."""
    expected: dict[str, list[list[Any]]] = {
        "missing": [[[address], barcode] for address, barcode in sorted(record.removed.items())],
        "duplicated": [
            [sorted((a for a, text in record.physical.items() if text == label), key=_position), label]
            for label in sorted(set(record.relabelled.values()))
        ],
        "no_read": [
            [[address], None]
            for address in sorted((a for a, text in record.physical.items() if text is None), key=_position)
        ],
    }
    findings = (record.kept or {}).get("findings", [])
    found = {
        kind: [[list(f["addresses"]), f["barcode"]] for f in findings if f["kind"] == kind]
        for kind in CHECKED
    }
    return {
        "removed": record.removed,
        "relabelled": record.relabelled,
        "kept_in_redis": record.kept is not None,
        "counts": (record.kept or {}).get("counts", {}),
        "expected": expected,
        "found": found,
        "agree": record.kept is not None and found == expected,
    }


def build(
    log: DemoLog, redis_data_url: str, session: str, api_url: str, token: str, beamline: str
) -> dict[str, Any]:
    from_redis = redis_tags(redis_data_url, session)
    scans = []
    for scan in log.scans:
        in_redis = from_redis.get((scan.filename, scan.scan_nb), {})
        in_file = hdf5_tag(scan.filename, scan.scan_nb)
        scans.append(
            {
                "step": scan.step,
                "scan_nb": scan.scan_nb,
                "title": scan.title,
                "dataset": Path(scan.filename).parent.name,
                "filename": scan.filename,
                "writer_wait_s": scan.writer_wait_s,
                "redis": {k: in_redis.get(k) for k in TAG_KEYS},
                "hdf5": {k: in_file.get(k) for k in TAG_KEYS},
                # the tag's own keys must match; see the module's caveat for the HDF5 'name'
                "agree": bool(in_redis)
                and all(in_redis[k] == in_file.get(k) for k in TAG_KEYS if k in in_redis),
            }
        )
    events = service_events(api_url, token, beamline)
    return {
        "scans": scans,
        "notes": log.notes,
        "inventory": inventory_check(log.inventory) if log.inventory is not None else None,
        "service_events": [
            {
                "event_id": e["event_id"],
                "type": e["type"],
                "status": e["status"],
                "occurred_at": e["occurred_at"],
                "sample": e["sample"]["name"] or e["sample"]["barcode"],
                "barcode": e["sample"]["barcode"],
                "position": (e["sample_changer"] or {}).get("position"),
                "message": e["message"],
            }
            for e in events
        ],
    }


def print_summary(summary: dict[str, Any], timeline_url: str) -> None:
    print(
        f"\nWriter: {summary.get('writer', '?')}"
        + (f", started in {summary['writer_start_s']} s" if summary.get("writer_start_s") is not None else "")
    )
    print("\nScans and their sample tags (read back from Redis and from the HDF5 file):")
    print(
        f"  {'scan':>4}  {'title':28} {'state':8} {'sample (Redis)':18} {'sample (HDF5)':18} {'pos':5} agree"
    )
    for s in summary["scans"]:
        redis_tag, file_tag = s["redis"], s["hdf5"]
        print(
            f"  {s['scan_nb']:>4}  {s['title'][:28]:28} {str(redis_tag['state']):8} "
            f"{str(redis_tag['name'] or redis_tag['barcode'] or '-'):18} "
            f"{str(file_tag['name'] or file_tag['barcode'] or '-'):18} "
            f"{str(redis_tag['changer_position'] or '-'):5} "
            f"{'yes' if s['agree'] else 'NO'}"
        )
    print("  (HDF5 'sample/name' under the ESRF data policy is ICAT's Sample_name: with no sample mounted,")
    print("   the tracker sets it to 'no sample mounted'; the tag's 'state' says the same.)")
    print("\nWhat happened along the way:")
    for note in summary["notes"]:
        print(f"  - {note}")
    inventory = summary.get("inventory")
    if inventory is not None:
        done = ", ".join(
            [f"pin of {a} taken out" for a in inventory["removed"]]
            + [f"pin of {a} relabelled {label}" for a, label in inventory["relabelled"].items()]
        )
        print(f"\nThe puck inventory (kept in Redis) against what the sequence did ({done}):")
        for kind in CHECKED:
            expected, found = inventory["expected"][kind], inventory["found"][kind]
            print(
                f"  {kind:10} expected {_rows(expected):28} found {_rows(found):28} "
                f"{'yes' if expected == found else 'NO'}"
            )
    print(f"\nEvents stored by the tracking service ({len(summary['service_events'])}):")
    for e in summary["service_events"]:
        message = f"  ({e['message'][:70]})" if e["message"] else ""
        print(
            f"  {e['occurred_at']}  {e['type']:9} {e['status']:7} {str(e['sample']):14} "
            f"{str(e['position'] or ''):5}{message}"
        )
    print(f"\nTimeline page of the tracking service: {timeline_url}")


def _rows(rows: list[list[Any]]) -> str:
    return (
        "; ".join(f"{', '.join(addresses)}{f' ({code})' if code else ''}" for addresses, code in rows) or "-"
    )


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, default=str))
