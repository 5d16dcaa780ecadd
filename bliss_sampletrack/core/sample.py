"""The ``Sample`` value: what is (or was) on the goniometer, as the contract and ICAT know it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.errors import InvalidSampleError

#: the contract's ``sample`` object: field -> maximum length
CONTRACT_SAMPLE_FIELDS: dict[str, int] = {
    "barcode": 64,
    "name": 256,
    "sample_id": 64,
    "parcel_id": 64,
    "parcel_name": 256,
    "container_id": 64,
    "container_name": 256,
    "container_position": 32,
}
CHANGER_NAME_MAX = 64
CHANGER_POSITION_MAX = 32
#: what a registry says about a record (e.g. that it comes from a cache that may be stale)
REGISTRY_NOTE_MAX = 512


@dataclass(frozen=True, slots=True)
class Sample:
    """A sample, identified by its barcode, its name, or both.

    Every field but one of ``barcode``/``name`` is optional (``None`` when unknown, never a
    placeholder string). ``changer_name``/``changer_position`` say where a sample changer holds
    it (e.g. ``"3:05"``); they feed the event's ``sample_changer`` object, not its ``sample``.

    The barcode is validated per the contract, so a no-read can never become a ``Sample``.
    Pass ``no_read`` to :meth:`create` to reject configured no-read strings too.
    """

    barcode: str | None = None
    name: str | None = None
    sample_id: str | None = None
    parcel_id: str | None = None
    parcel_name: str | None = None
    container_id: str | None = None
    container_name: str | None = None
    container_position: str | None = None
    changer_name: str | None = None
    changer_position: str | None = None
    #: what the registry says about the record (e.g. "from the ICAT+ cache of ..., may be stale"):
    #: kept in the tracker's snapshot and the scan tag, never in an event (not in the contract's
    #: sample object), and not compared (the same record with or without a note is one sample)
    registry_note: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def create(cls, *, no_read: Iterable[str] = (), **values: str | None) -> Sample:
        """Build a sample, also rejecting the configured ``no_read`` strings as barcodes."""
        barcode = values.get("barcode")
        if barcode is not None:
            validate_barcode(barcode, no_read=no_read)
        return cls(**values)

    def _check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not isinstance(value, str):
                raise InvalidSampleError(
                    f"sample field {f.name!r} must be text or None, got {type(value).__name__} {value!r}"
                )
        if self.barcode is None and self.name is None:
            raise InvalidSampleError("a sample needs a barcode or a name (or both); got neither")
        if self.barcode is not None:
            validate_barcode(self.barcode)
        limits = {
            **CONTRACT_SAMPLE_FIELDS,
            "changer_name": CHANGER_NAME_MAX,
            "changer_position": CHANGER_POSITION_MAX,
            "registry_note": REGISTRY_NOTE_MAX,
        }
        for name, limit in limits.items():
            value = getattr(self, name)
            if value is not None and len(value) > limit:
                raise InvalidSampleError(
                    f"sample field {name!r} is {len(value)} characters long; at most {limit} are "
                    f"allowed ({value[:40]!r}...)"
                )
        if self.changer_position is not None and self.changer_name is None:
            raise InvalidSampleError(
                f"changer_position {self.changer_position!r} given without changer_name; "
                "say which sample changer holds the sample"
            )
        if self.changer_name is not None and not self.changer_name:
            raise InvalidSampleError("changer_name is empty; give the changer's name or None")

    @property
    def label(self) -> str:
        """Short human label: ``name (barcode)``, or whichever exists."""
        if self.name and self.barcode:
            return f"{self.name} ({self.barcode})"
        return self.name or self.barcode or "?"

    def to_contract(self) -> dict[str, str | None]:
        """The contract's ``sample`` object (exactly its eight fields)."""
        return {key: getattr(self, key) for key in CONTRACT_SAMPLE_FIELDS}

    def changer_to_contract(self) -> dict[str, str | None] | None:
        """The contract's ``sample_changer`` object, or None when no changer holds the sample."""
        if self.changer_name is None:
            return None
        return {"name": self.changer_name, "position": self.changer_position}

    def to_dict(self) -> dict[str, str | None]:
        """All fields, for persistence (the inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        """Rebuild a sample from :meth:`to_dict` output; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSampleError(f"unknown sample field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_contract(
        cls, sample: Mapping[str, Any], sample_changer: Mapping[str, Any] | None = None
    ) -> Sample:
        """Rebuild a sample from an event's ``sample`` and ``sample_changer`` objects."""
        values = {key: sample.get(key) for key in CONTRACT_SAMPLE_FIELDS}
        if sample_changer is not None:
            values["changer_name"] = sample_changer.get("name")
            values["changer_position"] = sample_changer.get("position")
        return cls(**values)
