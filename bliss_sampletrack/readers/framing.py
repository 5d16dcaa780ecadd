"""Splitting a reader's byte stream into lines, and turning a data line into a barcode.

Pure functions and a small stateful splitter: no I/O, so every parser can be fed arbitrary bytes
in property-based tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.errors import InvalidBarcodeError, NoReadError, ReaderProtocolError
from bliss_sampletrack.readers.protocol import BarcodeRead

DEFAULT_MAX_LINE = 256  # longer than any code plus framing; beyond that the reader is flooding


#: a line (or the error it makes) and the monotonic time its first byte arrived
Timed = tuple["bytes | ReaderProtocolError", float]


class LineSplitter:
    """Accumulate bytes; return complete lines (header and terminator removed) and errors.

    ``header`` (e.g. STX for STX/ETX framing): every line must start with it; a line that does
    not is framing noise (a :class:`ReaderProtocolError`, never a code). An LF (or CR LF) right
    after a terminator that has none is tolerated (devices set to add one).
    An over-long line produces one :class:`ReaderProtocolError`; its bytes are dropped up to the
    next terminator, so one flood costs one error, not a stream of fragments taken for codes.
    An unterminated line is reported as soon as it is certainly over-long: more than
    ``max_length`` bytes besides a possible partial terminator at its end, so the result never
    depends on where the stream was split into chunks.
    """

    def __init__(
        self, reader: str, terminator: bytes, max_length: int = DEFAULT_MAX_LINE, header: bytes = b""
    ) -> None:
        if not terminator:
            raise ValueError("a line terminator cannot be empty")
        self.reader = reader
        self.terminator = terminator
        self.header = header
        self.max_length = max_length
        self._buffer = bytearray()
        self._discarding = False
        self._started: float | None = None  # when the first byte of the buffered line arrived

    def feed(self, data: bytes) -> list[bytes | ReaderProtocolError]:
        return [item for item, _ in self.feed_timed(data)]

    def feed_timed(self, data: bytes, now: float | None = None) -> list[Timed]:
        """:meth:`feed`, each line with the time its first byte arrived (``now`` for this chunk's
        bytes, ``time.monotonic()`` by default): a line begun before a trigger is no answer to it."""
        now = time.monotonic() if now is None else now
        if data and (self._started is None or not self._buffer):
            self._started = now
        self._buffer += data
        out: list[Timed] = []
        while True:
            end = self._buffer.find(self.terminator)
            if end < 0:
                break
            started = self._started if self._started is not None else now
            line = bytes(self._buffer[:end])
            del self._buffer[: end + len(self.terminator)]
            self._started = now if self._buffer else None  # the rest came with this chunk
            if self._discarding:
                self._discarding = False
                continue
            line = self._tolerated(line)
            if len(line) > self.max_length:
                out.append((self._overlong(line), started))
                continue
            if self.header:
                if not line.startswith(self.header):
                    if line:  # a bare terminator (or LF) between frames is no frame at all
                        out.append((self._unframed(line), started))
                    continue
                line = line[len(self.header) :]
            out.append((line, started))
        if not self._discarding and self._pending_length() > self.max_length:
            out.append((self._overlong(bytes(self._buffer)), self._started or now))
            self._discarding = True
        if self._discarding:
            # keep what may be the start of the terminator that ends the flood
            del self._buffer[: max(0, len(self._buffer) - (len(self.terminator) - 1))]
        return out

    def _tolerated(self, line: bytes) -> bytes:
        """Drop the LF (or CR LF) a device adds after a terminator that has none."""
        if b"\n" not in self.terminator:
            if line.startswith(b"\r\n") and b"\r" not in self.terminator:
                return line[2:]
            if line.startswith(b"\n"):
                return line[1:]
        return line

    def _unframed(self, line: bytes) -> ReaderProtocolError:
        return ReaderProtocolError(
            f"reader {self.reader!r} sent {line[:40]!r} without the frame header {self.header!r}: "
            "framing noise, not a code. Check the reader's header/terminator setting against the "
            "'framing' key of its configuration"
        )

    def _pending_length(self) -> int:
        """The fewest data bytes the buffered, unterminated line can have once it ends."""
        pending = len(self._buffer) - (len(self.terminator) - 1)  # a partial terminator at the end
        pending -= len(bytes(self._buffer)) - len(self._tolerated(bytes(self._buffer)))  # a tolerated LF
        if self.header and self._buffer.startswith(self.header):
            pending -= len(self.header)
        return pending

    def clear(self) -> None:
        self._buffer.clear()
        self._discarding = False
        self._started = None

    def _overlong(self, line: bytes) -> ReaderProtocolError:
        return ReaderProtocolError(
            f"reader {self.reader!r} sent {len(line)}+ bytes without a line terminator "
            f"{self.terminator!r} (at most {self.max_length}); starts with {line[:40]!r}. "
            "Check the reader's output format or the configured terminator"
        )


def decode_code(reader: str, line: bytes, no_read: Iterable[str] = ()) -> BarcodeRead:
    """A data line -> :class:`BarcodeRead`, or raise saying which reader sent which bytes."""
    try:
        code = validate_barcode(line, no_read=no_read)
    except NoReadError as exc:
        raise NoReadError(f"reader {reader!r} answered a no-read ({line!r}): {exc}", raw=line) from None
    except InvalidBarcodeError as exc:
        raise InvalidBarcodeError(
            f"reader {reader!r} sent {line!r}, not a barcode: {exc}", raw=line
        ) from None
    return BarcodeRead(reader=reader, barcode=code, raw=line, received_at=datetime.now(UTC))
