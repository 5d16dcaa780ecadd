"""Domain core: samples, events and the contract's rules. Imports nothing from BLISS.

May import: ``errors`` only; every other layer imports it.
"""

from bliss_sampletrack.core.barcode import DEFAULT_NO_READ_STRINGS, is_no_read, validate_barcode
from bliss_sampletrack.core.event import Event, EventType, Producer, Source, Status
from bliss_sampletrack.core.sample import Sample

__all__ = [
    "DEFAULT_NO_READ_STRINGS",
    "Event",
    "EventType",
    "Producer",
    "Sample",
    "Source",
    "Status",
    "is_no_read",
    "validate_barcode",
]
