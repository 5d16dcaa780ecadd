"""The exception tree of bliss-sampletrack, in one place.

Every error the plugin raises on purpose derives from :class:`SampleTrackError`, so a macro can
catch the plugin's failures without catching everything else. Each message says what was wrong
and what to do about it.

::

    SampleTrackError
    ├── InvalidBarcodeError (also a ValueError)   malformed text where a barcode was expected
    │   └── NoReadError                           the reader answered a no-read (ERROR, NOREAD, empty)
    ├── InvalidSampleError (also a ValueError)    a sample record breaks the contract's limits
    ├── InvalidEventError (also a ValueError)     an event that does not satisfy the contract
    ├── ConfigurationError (also a ValueError)    a wrong or missing YAML key (names key and file)
    ├── ReaderError                               a barcode reader failed (names the reader)
    │   ├── ReaderConnectionError                 cannot connect, or the connection was lost
    │   ├── ReaderTimeout                         no answer in time
    │   ├── ReaderCommandError                    the reader refused a command (e.g. Keyence ER,LON,02)
    │   └── ReaderProtocolError                   garbage: over-long line, bytes that are not text
    ├── MountRefusedError                         a mount the tracker's policy refuses (unknown barcode)
    ├── ScanRefusedError                          the scan policy refuses a scan (no sample, conflict)
    ├── TrackerOwnedError                         another BLISS session records this tracker's changes
    └── TestBedError                              the test bed could not start BLISS/beacon/Redis

A reader's no-read is a :class:`NoReadError` (and a malformed code an :class:`InvalidBarcodeError`)
whose message names the reader and the bytes received.
"""

from __future__ import annotations

from collections.abc import Mapping


class SampleTrackError(Exception):
    """Base class of every error raised on purpose by bliss-sampletrack."""


class InvalidBarcodeError(SampleTrackError, ValueError):
    """Text that was offered as a barcode is not one (see the contract's barcode rules)."""

    def __init__(self, message: str, *, raw: object = None) -> None:
        super().__init__(message)
        #: the rejected input, as received (for logs and tests; never a secret)
        self.raw = raw


class NoReadError(InvalidBarcodeError):
    """The reader reported that it could not read a code: this is never a sample."""


class InvalidSampleError(SampleTrackError, ValueError):
    """A sample record has a field outside the contract's limits."""


class InvalidEventError(SampleTrackError, ValueError):
    """An event does not satisfy the contract; ``fields`` maps each bad field to its problem."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        detail = "; ".join(f"{name}: {problem}" for name, problem in sorted(self.fields.items()))
        super().__init__(f"invalid sample-tracking event ({len(self.fields)} bad field(s)): {detail}")


class ConfigurationError(SampleTrackError, ValueError):
    """A configuration (beacon YAML) key is wrong or missing; the message names key and file."""


class ReaderError(SampleTrackError):
    """A barcode reader failed; the message names the reader (and the bytes, where any)."""


class ReaderConnectionError(ReaderError):
    """The reader cannot be reached, or its connection was lost (it will be retried)."""


class ReaderTimeout(ReaderError):
    """The reader did not answer in time."""


class ReaderCommandError(ReaderError):
    """The reader answered a command with an error code."""


class ReaderProtocolError(ReaderError):
    """The reader sent something that is not a line of its protocol (garbage, over-long, not text)."""


class MountRefusedError(SampleTrackError):
    """The tracker refuses a mount (e.g. a barcode no registry knows, with ``unknown_barcode: refuse``)."""


class ScanRefusedError(SampleTrackError):
    """The tracker's scan policy refuses to start a scan; the message says why and how to fix it."""


class TrackerOwnedError(SampleTrackError):
    """Another BLISS session owns the tracker (its Redis owner key): this one may not write its state.

    ``holder`` describes the owner (session, host, pid, since when), as stored in Redis."""

    def __init__(self, message: str, *, holder: str = "") -> None:
        super().__init__(message)
        self.holder = holder


class TestBedError(SampleTrackError):
    """The test bed (beacon, Redis, BLISS session) could not be started or used."""

    __test__ = False  # not a pytest test class, despite the name
