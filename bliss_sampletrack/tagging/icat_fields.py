"""The ESRF ICAT dataset fields that describe the mounted sample (icat-esrf-definitions names).

ICAT needs a sample name: when the registry knows no name for a barcode, ``Sample_name`` is the
barcode (the identifier the user can search for), never a placeholder.
"""

from __future__ import annotations

from bliss_sampletrack.tracker.state import Snapshot, TrackerState

ICAT_SAMPLE_FIELDS = (
    "Sample_name",
    "SampleChanger_name",
    "SampleChanger_position",
    "SampleTrackingParcel_id",
    "SampleTrackingParcel_name",
    "SampleTrackingContainer_id",
    "SampleTrackingContainer_name",
    "SampleTrackingContainer_position",
)


def icat_fields(snapshot: Snapshot) -> dict[str, str | None]:
    """Field -> value for the dataset; every field present, None to clear it (nothing mounted)."""
    sample = snapshot.sample if snapshot.state is TrackerState.MOUNTED else None
    if sample is None:
        return dict.fromkeys(ICAT_SAMPLE_FIELDS)
    return {
        "Sample_name": sample.name or sample.barcode,
        "SampleChanger_name": sample.changer_name,
        "SampleChanger_position": sample.changer_position,
        "SampleTrackingParcel_id": sample.parcel_id,
        "SampleTrackingParcel_name": sample.parcel_name,
        "SampleTrackingContainer_id": sample.container_id,
        "SampleTrackingContainer_name": sample.container_name,
        "SampleTrackingContainer_position": sample.container_position,
    }
