"""Splitting a reader's byte stream into lines, and turning a data line into a barcode.

Pure functions and a small stateful splitter: no I/O, so every parser can be fed arbitrary bytes
in property-based tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.errors import InvalidBarcodeError, NoReadError, ReaderProtocolError
from bliss_sampletrack.readers.protocol import BarcodeRead

DEFAULT_MAX_LINE = 256  # longer than any code plus framing; beyond that the reader is flooding


class LineSplitter:
    """Accumulate bytes; return complete lines (terminator removed) and over-long-line errors.

    With a CR terminator, an LF right after it is tolerated (devices set to CR LF by mistake).
    An over-long line produces one :class:`ReaderProtocolError`; its bytes are dropped up to the
    next terminator, so one flood costs one error, not a stream of fragments taken for codes.
    An unterminated line is reported as soon as it is certainly over-long: more than
    ``max_length`` bytes besides a possible partial terminator at its end, so the result never
    depends on where the stream was split into chunks.
    """

    def __init__(self, reader: str, terminator: bytes, max_length: int = DEFAULT_MAX_LINE) -> None:
        if not terminator:
            raise ValueError("a line terminator cannot be empty")
        self.reader = reader
        self.terminator = terminator
        self.max_length = max_length
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | ReaderProtocolError]:
        self._buffer += data
        out: list[bytes | ReaderProtocolError] = []
        while True:
            end = self._buffer.find(self.terminator)
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + len(self.terminator)]
            if self._discarding:
                self._discarding = False
                continue
            if self.terminator == b"\r" and line.startswith(b"\n"):
                line = line[1:]
            if len(line) > self.max_length:
                out.append(self._overlong(line))
                continue
            out.append(line)
        if not self._discarding and self._pending_length() > self.max_length:
            out.append(self._overlong(bytes(self._buffer)))
            self._discarding = True
        if self._discarding:
            # keep what may be the start of the terminator that ends the flood
            del self._buffer[: max(0, len(self._buffer) - (len(self.terminator) - 1))]
        return out

    def _pending_length(self) -> int:
        """The fewest data bytes the buffered, unterminated line can have once it ends."""
        pending = len(self._buffer) - (len(self.terminator) - 1)  # a partial terminator at the end
        if self.terminator == b"\r" and self._buffer.startswith(b"\n"):
            pending -= 1  # the tolerated LF of a previous CR LF
        return pending

    def clear(self) -> None:
        self._buffer.clear()
        self._discarding = False

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
