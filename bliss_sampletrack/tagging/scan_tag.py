"""The ``scan_info["sample"]`` tag: what the tracker knew when a scan started (and ended).

The tag is an ``NXsample`` group in the HDF5 file. It always says the tracker's ``state``; when
no sample can be named (EMPTY, UNKNOWN, CONFLICT, or a failure), ``reason`` says why, and the
last sample believed mounted is only given as ``last_known_*``, never as the sample itself.
Unknown values are left out (HDF5 has no null).

Bookkeeping (``@tracker``, ``@state_since``, ``@changed_during_scan``) is stored as attributes
of the group, the sample's fields as datasets: BLISS's HDF5 writer spends about 1 ms per dataset
and per pass (it writes the category at the scan's start and end), against a third of that for
an attribute (measured by ``benchmarks/tagging_overhead.py``).
"""

from __future__ import annotations

from typing import Any

from bliss_sampletrack.core.contract import format_timestamp
from bliss_sampletrack.core.snapshot import Snapshot, TrackerState

NX_CLASS = "NXsample"
_SAMPLE_KEYS = (
    "name",
    "barcode",
    "sample_id",
    "parcel_id",
    "parcel_name",
    "container_id",
    "container_name",
    "container_position",
    "changer_name",
    "changer_position",
    "registry_note",  # e.g. the record came from a registry cache that may be stale
)
_DEFAULT_REASONS = {
    TrackerState.EMPTY: "no sample mounted",
    TrackerState.UNKNOWN: "the mounted sample is unknown",
    TrackerState.CONFLICT: "the sources disagree about the mounted sample",
}


def sample_tag(snapshot: Snapshot, tracker: str) -> dict[str, Any]:
    """The tag for a scan that runs while the tracker is in ``snapshot``."""
    tag: dict[str, Any] = {"@NX_class": NX_CLASS, "@tracker": tracker, "state": str(snapshot.state)}
    tag["@state_since"] = format_timestamp(snapshot.since)
    tag["@seq"] = snapshot.seq
    if snapshot.source is not None:
        tag["source"] = str(snapshot.source)
    sample = snapshot.sample
    if snapshot.state is TrackerState.MOUNTED and sample is not None:
        tag.update({key: getattr(sample, key) for key in _SAMPLE_KEYS if getattr(sample, key) is not None})
        tag["mount_event_id"] = str(snapshot.mount_event_id)
        return tag
    tag["reason"] = snapshot.reason or _DEFAULT_REASONS.get(snapshot.state, "no sample")
    if sample is not None:
        tag.update(
            {f"last_known_{key}": getattr(sample, key) for key in ("name", "barcode") if getattr(sample, key)}
        )
    return tag


def failure_tag(tracker: str, error: BaseException) -> dict[str, Any]:
    """The tag when building the real one failed: the scan still says so, explicitly."""
    return {
        "@NX_class": NX_CLASS,
        "@tracker": tracker,
        "state": "ERROR",
        "reason": f"sample tagging failed: {type(error).__name__}: {error}",
    }


def end_of_scan_tag(
    start: dict[str, Any], end: dict[str, Any], changes: list[str] | None = None
) -> dict[str, Any]:
    """The tag at the end of a scan: the start tag, plus what changed meanwhile, if anything.

    A change is a different sequence number (``@seq``: every recorded change, whatever the
    states), or a different state or mount (e.g. a doubt that only the end's cross-check with
    the hardware saw). ``changes``: what was recorded in between, for ``changes_during_scan``.
    BLISS merges the end tag into the start tag; the start values are repeated so that they win.
    """
    keys = ("@seq", "state", "mount_event_id", "reason")
    changed = any(start.get(key) != end.get(key) for key in keys)
    tag = dict(start)
    tag["@changed_during_scan"] = changed
    if changed:
        tag["end_state"] = end.get("state")
        if "@seq" in end:
            tag["@end_seq"] = end["@seq"]
        if changes:
            tag["changes_during_scan"] = "; ".join(changes)
        for key in ("name", "barcode", "mount_event_id", "reason"):
            if key in end:
                tag[f"end_{key}"] = end[key]
        what = end.get("name") or end.get("barcode") or end.get("reason") or end.get("state")
        tag["change_note"] = f"the sample changed during the scan: at its end the tracker said {what!r}"
    return tag
