"""The barcode reader protocol: one small typed interface in front of every reader.

A reader can be asked for one code on demand (:meth:`BarcodeReader.read`), or followed as codes
arrive (:meth:`BarcodeReader.stream`, for readers in continuous/presentation mode and keyboard
wedges). It reports its connection state and its last error, and explains itself in
``__info__()`` like any BLISS object.

Outcomes are values: a :class:`BarcodeRead` when a code was read, an exception instance from
:mod:`bliss_sampletrack.errors` otherwise (``NoReadError``, ``ReaderCommandError``,
``ReaderProtocolError``, ``ReaderConnectionError``...). ``read()`` raises the exception;
``stream()`` yields it, so a follower sees no-reads and disconnects instead of silence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from bliss_sampletrack.errors import SampleTrackError


class ConnectionState(StrEnum):
    DISCONNECTED = "disconnected"  # not started, or closed by the user
    CONNECTING = "connecting"  # first attempt, or retrying after a failure (with backoff)
    CONNECTED = "connected"


@dataclass(frozen=True, slots=True)
class BarcodeRead:
    """A code read by ``reader``: validated per the contract, so never a no-read."""

    reader: str
    barcode: str
    raw: bytes  # the line as received, without its terminator (for diagnostics)
    received_at: datetime  # timezone-aware, when the line arrived


#: what a reader produces for each line or event: a code, or why there is none
ReadOutcome = BarcodeRead | SampleTrackError


@runtime_checkable
class BarcodeReader(Protocol):
    """What the tracker needs from any barcode reader."""

    name: str

    @property
    def state(self) -> ConnectionState: ...

    @property
    def last_error(self) -> str | None:
        """The message of the last failure (connection, no-read, garbage...), or None."""
        ...

    def read(self, timeout: float | None = None) -> BarcodeRead:
        """Trigger one read and wait for its result, at most ``timeout`` seconds (the reader's
        configured default when None). Raises NoReadError, ReaderTimeout, ReaderCommandError,
        ReaderConnectionError... never returns a no-read."""
        ...

    def stream(self, timeout: float | None = None) -> Iterator[ReadOutcome]:
        """Yield outcomes as they arrive, without triggering. Ends after ``timeout`` seconds
        (None: until :meth:`close`). Cooperative: blocks only the calling greenlet."""
        ...

    def close(self) -> None:
        """Stop reading and release the device; a later read() reconnects."""
        ...

    def __info__(self) -> str: ...
