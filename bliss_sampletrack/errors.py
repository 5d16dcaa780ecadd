"""The exception tree of bliss-sampletrack, in one place.

Every error the plugin raises on purpose derives from :class:`SampleTrackError`, so a macro can
catch the plugin's failures without catching everything else. Each message says what was wrong
and what to do about it. Every class is defined here (the family modules re-export theirs:
``from bliss_sampletrack.changers.errors import ChangerError`` is the same class). May import
nothing of the package: every layer imports it.

::

    SampleTrackError                              what happened -> what to do
    ├── InvalidBarcodeError (also a ValueError)   malformed text where a barcode was expected
    │   │                                         -> check the reader's output format / retype
    │   └── NoReadError                           the reader answered a no-read (ERROR, NOREAD, empty)
    │                                             -> nothing was read: re-read, or type the code
    ├── InvalidSampleError (also a ValueError)    a sample record breaks the contract's limits
    ├── InvalidEventError (also a ValueError)     an event that does not satisfy the contract
    ├── ConfigurationError (also a ValueError)    a wrong or missing YAML key -> fix the named key
    │                                             in the named file
    ├── ReaderError                               a barcode reader failed (names the reader)
    │   ├── ReaderConnectionError                 cannot connect / connection lost -> cable, power,
    │   │                                         address; it reconnects by itself
    │   ├── ReaderTimeout                         no answer in time -> trigger setting, framing
    │   ├── ReaderCommandError                    the reader refused a command (Keyence ER,LON,02)
    │   └── ReaderProtocolError                   garbage: over-long line, bytes that are not text
    ├── ChangerError                              a changer refused a command before anything moved
    │   │                                         (unknown address, empty position) -> fix the call
    │   ├── ChangerBusyError                      another load/unload runs -> wait for it
    │   ├── MountFailedError                      a load/unload failed midway (recorded, tracker in
    │   │   │                                     CONFLICT) -> check the robot, then resolve()
    │   │   └── ChangerTimeout                    it did not finish in time (state unknown)
    │   └── ChangerOfflineError                   the changer cannot be read -> its server/object
    ├── MountRefusedError                         a mount the tracker's policy refuses (unknown
    │                                             barcode, an address typed as a code) -> the message
    │                                             names the way through (force=True, the changer)
    ├── ScanRefusedError                          the scan policy refuses a scan (no sample, conflict)
    ├── TrackerOwnedError                         another BLISS session records this tracker's changes
    │                                             -> close it there, or take_ownership()
    ├── StaleStateError                           the state in Redis changed under a change -> it is
    │                                             recomputed (internal; surfaces only if it repeats)
    ├── OwnershipLostError                        this session's owner key is gone -> take it again
    ├── AnnotateError                             an HDF5 file cannot be annotated or verified
    │   ├── FileLockedError                       open elsewhere (the writer, a viewer) -> retry later
    │   └── ScanNotFoundError                     no such scan entry in the file
    ├── IcatPlusUnavailable                       ICAT+ could not give the parcels now (the registry
    │                                             keeps what it had, marked stale) -> check ICAT+
    ├── RetryLater                                a delivery call failed in a retryable way (the
    │                                             delivery loop's signal; never reaches a user)
    ├── DeliveryLeaseLost                         another deliverer took over this one's lease (it
    │                                             was paused or cut off past the lease); its
    │                                             cursor write was refused -> nothing: it stands by
    └── TestBedError                              the test bed could not start BLISS/beacon/Redis

Outside this tree, on purpose: the tracking service (its own process) has ``StorageError`` ->
``StorageUnavailable``, ``SchemaTooNewError`` (``service/storage/errors.py``) and ``ApiError``
(``service/problems.py``, an HTTP problem answer); the simulators' errors are test tools.

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


class ChangerError(SampleTrackError):
    """A sample changer refused or failed a command; the message names the changer.

    A command refused *before* anything moved (unknown address, empty position, a pin already on
    the goniometer) is a plain :class:`ChangerError`: nothing is recorded for it. Once the robot
    moves, a failure is recorded (robot action ``ERROR``, tracker ``CONFLICT``) before it is raised.
    """


class ChangerBusyError(ChangerError):
    """A load or unload is already running on this changer."""


class MountFailedError(ChangerError):
    """A load or unload started and failed midway (the robot moved: it was recorded).

    ``reason`` is the failure alone ("the pin was dropped midway"), for records that say the
    rest (which changer, which action) themselves.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class ChangerTimeout(MountFailedError):
    """A load or unload did not finish within its timeout (the robot's state is unknown)."""


class ChangerOfflineError(ChangerError):
    """The changer, or the BLISS object behind an adapter, could not be read."""


class StaleStateError(SampleTrackError):
    """The state in Redis is no longer the one a change was computed from (another writer, or
    Redis lost data): reload and compute the change again."""


class OwnershipLostError(SampleTrackError):
    """This process's owner key is gone (expired while the session was paused, deleted, or lost
    in a Redis restart): take it again (if free) before writing."""


class AnnotateError(SampleTrackError):
    """A file cannot be annotated or verified (missing, not HDF5, bad history); the message says why."""


class FileLockedError(AnnotateError):
    """The file is open elsewhere (the BLISS writer during a scan, a viewer): retry when it is closed."""


class ScanNotFoundError(AnnotateError):
    """A requested scan number has no ``<n>.1`` entry in the file."""


class IcatPlusUnavailable(SampleTrackError):
    """ICAT+ could not give the parcels now (unreachable, timeout, refused, unexpected answer)."""


class RetryLater(SampleTrackError):
    """A delivery call failed as a whole in a way worth retrying; ``retry_after`` is the server's
    hint (s); ``batch_too_large``: a 413, the loop sends one event per request until one goes
    through; ``unreachable``: no server answered, or a gateway said the service is down
    (502/503/504), so the loop probes the service's health and resumes as soon as it answers."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        batch_too_large: bool = False,
        *,
        unreachable: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.batch_too_large = batch_too_large
        self.unreachable = unreachable


class DeliveryLeaseLost(SampleTrackError):
    """A deliverer's lease was taken over by another deliverer (this one was paused, cut off from
    Redis, or its hub blocked past the lease's TTL): the outbox refused its cursor write (the
    fencing check). Nothing is lost: the new holder delivers, and this one stands by."""


class TestBedError(SampleTrackError):
    """The test bed (beacon, Redis, BLISS session) could not be started or used."""

    __test__ = False  # not a pytest test class, despite the name
