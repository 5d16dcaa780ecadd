"""The ESRF ICAT dataset fields that describe the mounted sample (icat-esrf-definitions names).

ICAT needs a sample name: when the registry knows no name for a barcode, ``Sample_name`` is the
barcode (the identifier the user can search for), never a placeholder.

With nothing mounted (EMPTY) the dataset's ``Sample_name`` says so explicitly
(:data:`NO_SAMPLE_NAME`): otherwise BLISS shows the collection's name, which the HDF5 file then
writes as ``/<n>.1/sample/name``, naming a sample that is not there. UNKNOWN and CONFLICT remove
the dataset's own fields: the collection's name (what the scientist chose with ``newsample``) is
the best guess, and the scan's tag says the tracker does not know.
"""

from __future__ import annotations

from bliss_sampletrack.core.snapshot import Snapshot, TrackerState

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


#: ``Sample_name`` of a dataset taken with nothing on the goniometer
NO_SAMPLE_NAME = "no sample mounted"


def icat_fields(snapshot: Snapshot) -> dict[str, str | None]:
    """Field -> value for the dataset; every field present, None to clear it."""
    sample = snapshot.sample if snapshot.state is TrackerState.MOUNTED else None
    if sample is None:
        fields: dict[str, str | None] = dict.fromkeys(ICAT_SAMPLE_FIELDS)
        if snapshot.state is TrackerState.EMPTY:
            fields["Sample_name"] = NO_SAMPLE_NAME
        return fields
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
