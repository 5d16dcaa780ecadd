"""USB HID keyboard-wedge barcode scanners, read from their Linux evdev node under gevent.

A keyboard wedge "types" each code followed by Enter. :class:`KeyboardWedgeReader` reads the
scanner's own event node (``/dev/input/by-id/usb-...-event-kbd``), grabs it by default so the
keystrokes do not also reach a shell or a BLISS prompt, and decodes the key events with
:mod:`bliss_sampletrack.readers.keyboard_decoder`. It is a BLISS object::

    - name: wedge1
      plugin: bliss
      package: bliss_sampletrack.readers.keyboard_wedge
      class: KeyboardWedgeReader
      device: /dev/input/by-id/usb-Honeywell_Scanner-event-kbd

Reading is cooperative: the fd is non-blocking, every wait is a ``gevent.select`` with a timeout
of at most :data:`WAIT_SLICE_S`, and ``struct input_event`` is unpacked here, so the same code
path reads a real device and a pipe of recorded events (:class:`RecordedEventSource`). The
``evdev`` package is only used to open and grab the real device, and imported lazily.

Caveats:
- A wedge cannot be triggered: :meth:`KeyboardWedgeReader.read` waits for the next scan, and
  discards (with a warning) codes scanned before it was called, which would otherwise be taken
  for the sample now in front of the scanner.
- One consumer at a time: a second ``read()``/``stream()`` while one is running raises.
  :meth:`KeyboardWedgeReader.close` from another greenlet takes effect within ``WAIT_SLICE_S``
  (an fd is never closed under a running ``select``).
- A code not ended by Enter within :data:`CODE_GAP_S` is reported and dropped (a scanner types a
  whole code in one burst).
- ``struct input_event`` is unpacked as on 64-bit Linux (24 bytes).
- Only one process can grab a device: set ``grab: false`` to share it (keystrokes then also go
  to whatever window or terminal has the focus).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, Protocol

import gevent
import gevent.select

from bliss_sampletrack.core.barcode import BARCODE_MAX_LENGTH
from bliss_sampletrack.errors import ConfigurationError, ReaderConnectionError, ReaderError, ReaderTimeout
from bliss_sampletrack.readers.keyboard_decoder import (
    EVENT_STRUCT,
    EventUnpacker,
    InputEvent,
    KeyDecoder,
    pack_events,
)
from bliss_sampletrack.readers.protocol import BarcodeRead, ConnectionState, ReadOutcome

log = logging.getLogger(__name__)

READ_SIZE = EVENT_STRUCT.size * 64
WAIT_SLICE_S = 0.5  # longest single wait: bounds how late a close() from another greenlet is seen
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0  # reconnect delays, doubling between failed attempts
CODE_GAP_S = 1.0  # a pause this long in the middle of a code means its Enter will not come
DRAIN_MAX_READS = 64  # read() discards stale input, but a flooding device must not keep it busy


class EventSource(Protocol):
    """Where the reader's input events come from: a readable fd of packed ``input_event``.

    Optional members, used when present: ``name`` (shown by ``__info__``), ``grab()`` (called
    when the reader is configured with ``grab: true``; raises OSError when it cannot),
    ``caps_lock`` (the Caps Lock LED state when opened).
    """

    def fileno(self) -> int: ...

    def close(self) -> None: ...


def _import_evdev(reader: str) -> Any:
    try:
        import evdev
    except ImportError:
        raise ReaderConnectionError(
            f"reader {reader!r}: the 'evdev' Python package is needed to read a keyboard wedge; "
            "pip install evdev"
        ) from None
    return evdev


def _open_hint(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such device: is the scanner plugged in? (ls -l /dev/input/by-id/)"
    if exc.errno == errno.EACCES:
        return "permission denied: add the BLISS user to the 'input' group, or a udev rule for the scanner"
    return str(exc)


class EvdevDeviceSource:
    """A real input device, opened non-blocking with ``evdev.InputDevice``."""

    def __init__(self, reader: str, path: str) -> None:
        evdev = _import_evdev(reader)
        try:
            self._device = evdev.InputDevice(path)
        except OSError as exc:
            raise ReaderConnectionError(f"reader {reader!r}: cannot open {path}: {_open_hint(exc)}") from None
        os.set_blocking(self._device.fd, False)
        self.name: str = self._device.name
        try:  # seed the decoder's Caps Lock from the LED (a scanner may compensate for it)
            self.caps_lock = evdev.ecodes.LED_CAPSL in self._device.leds()
        except OSError:
            self.caps_lock = False

    def fileno(self) -> int:
        return int(self._device.fd)

    def grab(self) -> None:
        self._device.grab()

    def close(self) -> None:
        self._device.close()  # closing the fd also releases the grab


class RecordedEventSource:
    """A pipe: the reader reads its end like a device; :meth:`send` plays recorded events into it."""

    def __init__(self, name: str = "recorded events") -> None:
        self.name = name
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        return self._read_fd

    def send(self, events: Iterable[InputEvent] | bytes, timeout: float = 5.0) -> None:
        """Write packed events (or raw bytes), cooperatively; TimeoutError if the pipe stays full."""
        data = memoryview(events if isinstance(events, bytes) else pack_events(events))
        deadline = time.monotonic() + timeout
        while data:
            try:
                data = data[os.write(self._write_fd, data) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not gevent.select.select([], [self._write_fd], [], remaining)[1]:
                    raise TimeoutError(f"{self.name}: pipe still full after {timeout:g} s") from None

    def end(self) -> None:
        """Close the writing end: the reader sees end-of-file, like an unplugged device."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1

    def close(self) -> None:
        self.end()
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1


# --- configuration -----------------------------------------------------------------------------

_KEYS = ("device", "grab", "no_read", "timeout", "max_length")
_BLISS_KEYS = frozenset({"name", "plugin", "class", "package", "module", "user_tag"})


@dataclass(frozen=True, slots=True)
class KeyboardWedgeConfig:
    device: str
    grab: bool = True
    no_read: tuple[str, ...] = ()
    timeout: float = 5.0
    max_length: int = BARCODE_MAX_LENGTH


def parse_config(name: str, config: Mapping[str, Any]) -> KeyboardWedgeConfig:
    """Check a reader's YAML keys; ConfigurationError names the key and the file."""
    filename = getattr(config, "filename", None)
    where = f"keyboard wedge {name!r} ({filename or 'configuration without a file name'})"

    def error(key: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"{where}: key {key!r} {problem}")

    for key in sorted(set(config) - set(_KEYS) - _BLISS_KEYS, key=str):
        close = get_close_matches(str(key), _KEYS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(_KEYS)}"
        raise error(key, f"is not a keyboard-wedge setting; {hint}")
    device = config.get("device")
    if device is None:
        raise error("device", "is missing: the scanner's evdev node, e.g. /dev/input/by-id/usb-...-event-kbd")
    if not isinstance(device, str) or not device.strip():
        raise error("device", f"must be a device path, got {device!r}")
    grab = config.get("grab", True)
    if not isinstance(grab, bool):
        raise error("grab", f"must be true or false, got {grab!r}")
    no_read = config.get("no_read", ())
    if isinstance(no_read, str | bytes) or not isinstance(no_read, Sequence):
        raise error("no_read", f"must be a list of strings, got {no_read!r}")
    if not all(isinstance(s, str) and s.strip() for s in no_read):
        raise error("no_read", f"must contain non-empty strings only, got {list(no_read)!r}")
    timeout = config.get("timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < float("inf"):
        raise error("timeout", f"must be a positive number of seconds, got {timeout!r}")
    max_length = config.get("max_length", BARCODE_MAX_LENGTH)
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, int)
        or not 0 < max_length <= BARCODE_MAX_LENGTH
    ):
        raise error("max_length", f"must be an integer from 1 to {BARCODE_MAX_LENGTH}, got {max_length!r}")
    return KeyboardWedgeConfig(device.strip(), grab, tuple(no_read), float(timeout), max_length)


# --- the reader --------------------------------------------------------------------------------


class KeyboardWedgeReader:
    """A USB keyboard-wedge scanner: a BLISS object (``Class(name, config)``) and a BarcodeReader.

    ``source_factory`` (for tests and simulators) replaces opening ``device`` with evdev; it
    returns a new :class:`EventSource` for each (re)connection, or raises ReaderConnectionError.
    """

    def __init__(
        self, name: str, config: Mapping[str, Any], *, source_factory: Callable[[], EventSource] | None = None
    ) -> None:
        self.name = name
        self.settings = parse_config(name, config)
        self._factory = source_factory or (lambda: EvdevDeviceSource(self.name, self.device))
        self._decoder = KeyDecoder(name, no_read=self.settings.no_read, max_length=self.settings.max_length)
        self._unpacker = EventUnpacker()
        self._source: EventSource | None = None
        self._source_name: str | None = None
        self._state = ConnectionState.DISCONNECTED
        self._last_error: str | None = None
        self._last_code: BarcodeRead | None = None
        self._pending: deque[ReadOutcome] = deque()
        self._backoff = BACKOFF_MIN_S
        self._next_attempt = 0.0  # time.monotonic() before which no reconnection is tried
        self._last_input = 0.0  # time.monotonic() of the last bytes read
        self._generation = 0  # bumped by close(): a running read/stream stops
        self._busy = False
        self._reported: str | None = None  # last connection error yielded by stream()

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def last_code(self) -> BarcodeRead | None:
        return self._last_code

    def read(self, timeout: float | None = None) -> BarcodeRead:
        """Wait for the next scan (codes scanned before this call are discarded); raise on errors."""
        limit = self.timeout if timeout is None else timeout
        with self._exclusive("read"):
            self._discard_stale()
            for outcome in self._outcomes(time.monotonic() + limit):
                if isinstance(outcome, BarcodeRead):
                    return outcome
                raise outcome
        if self._source is None and self._state is ConnectionState.CONNECTING:
            raise ReaderConnectionError(
                f"reader {self.name!r}: {self.device} still not connected after {limit:g} s "
                f"(last error: {self._last_error})"
            )
        raise ReaderTimeout(f"reader {self.name!r}: no code scanned on {self.device} within {limit:g} s")

    def stream(self, timeout: float | None = None) -> Iterator[ReadOutcome]:
        """Yield codes and errors as scans complete; a repeated connection failure is yielded once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._exclusive("stream"):
            for outcome in self._outcomes(deadline):
                if isinstance(outcome, ReaderConnectionError):
                    if str(outcome) == self._reported:
                        continue
                    self._reported = str(outcome)
                yield outcome

    def close(self) -> None:
        self._generation += 1
        self._state = ConnectionState.DISCONNECTED
        self._pending.clear()
        self._backoff, self._next_attempt = BACKOFF_MIN_S, 0.0
        if not self._busy:  # else the reading greenlet releases it, out of its select()
            self._release()

    def __info__(self) -> str:
        s = self.settings
        code = self._last_code
        last = f"{code.barcode!r} at {code.received_at.isoformat(timespec='seconds')}" if code else "none"
        lines = [
            f"KeyboardWedgeReader {self.name!r}: USB keyboard-wedge barcode scanner (Linux evdev)",
            f"  device:     {s.device}" + (f" ({self._source_name})" if self._source_name else ""),
            f"  grab:       {s.grab}",
            f"  state:      {self._state.value}",
            f"  timeout:    {s.timeout:g} s",
            f"  max length: {s.max_length}",
            "  no-read:    ERROR, NOREAD" + "".join(f", {x}" for x in s.no_read),
            f"  last code:  {last}",
            f"  last error: {self._last_error or 'none'}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<KeyboardWedgeReader {self.name!r} {self.device} {self._state.value}>"

    # --- internals ---------------------------------------------------------------------------

    @contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        if self._busy:
            raise ReaderError(
                f"reader {self.name!r} is already being read by another read() or stream(); "
                f"{what}() needs it alone (end the other one first)"
            )
        self._busy = True
        generation = self._generation
        try:
            yield
        finally:
            self._busy = False
            if generation != self._generation:  # close() was called meanwhile: release for it
                self._release()
                self._pending.clear()  # decoded after close(): not for the next consumer

    def _outcomes(self, deadline: float | None) -> Iterator[ReadOutcome]:
        generation = self._generation
        while generation == self._generation:
            if self._pending:
                yield self._record(self._pending.popleft())
                continue
            remaining = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return
            wait = min(remaining, WAIT_SLICE_S)
            if self._source is None:
                self._connect(wait)
            else:
                self._pump(wait)

    def _record(self, outcome: ReadOutcome) -> ReadOutcome:
        if isinstance(outcome, BarcodeRead):
            self._last_code = outcome
            log.info("reader %r read %r", self.name, outcome.barcode)
        else:
            self._last_error = str(outcome)
            log.warning("%s", outcome)
        return outcome

    def _connect(self, wait: float) -> None:
        delay = self._next_attempt - time.monotonic()
        if delay > 0:
            gevent.sleep(min(wait, delay))
            return
        self._state = ConnectionState.CONNECTING
        try:
            source = self._factory()
        except (ReaderConnectionError, OSError) as exc:
            self._retry_later(exc if isinstance(exc, ReaderConnectionError) else self._lost_error(str(exc)))
            return
        try:
            if self.settings.grab and hasattr(source, "grab"):
                source.grab()
        except OSError as exc:
            source.close()
            self._retry_later(
                ReaderConnectionError(
                    f"reader {self.name!r}: cannot grab {self.device} (EVIOCGRAB: {exc}); another program "
                    "holds it (another BLISS session?); close it, or set grab: false to share the device"
                )
            )
            return
        self._attach(source)

    def _attach(self, source: EventSource) -> None:
        self._source, self._source_name = source, getattr(source, "name", None)
        self._state = ConnectionState.CONNECTED
        self._backoff, self._reported = BACKOFF_MIN_S, None
        self._last_input = time.monotonic()
        self._unpacker.clear()
        self._decoder.reset()  # a code cut by a disconnection must not be completed by the next one
        self._decoder.caps_lock = bool(getattr(source, "caps_lock", False))
        log.info("reader %r: reading %s (%s)", self.name, self.device, self._source_name or "no name")

    def _lost_error(self, why: str) -> ReaderConnectionError:
        return ReaderConnectionError(f"reader {self.name!r}: lost {self.device}: {why}; reconnecting")

    def _retry_later(self, error: ReaderConnectionError) -> None:
        self._release()
        self._state = ConnectionState.CONNECTING
        self._next_attempt = time.monotonic() + self._backoff
        log.debug("reader %r: next connection attempt in %g s", self.name, self._backoff)
        self._backoff = min(2 * self._backoff, BACKOFF_MAX_S)
        self._pending.append(error)

    def _release(self) -> None:
        source, self._source, self._source_name = self._source, None, None
        self._unpacker.clear()
        self._decoder.reset()
        if source is not None:
            try:
                source.close()
            except OSError as exc:  # the device may already be gone: nothing left to release
                log.debug("reader %r: closing %s: %s", self.name, self.device, exc)

    def _pump(self, wait: float) -> bool:
        """Wait up to ``wait`` s for input; decode it into ``_pending`` (or note the loss).

        Returns True when bytes were read.
        """
        assert self._source is not None
        fd = self._source.fileno()
        try:
            readable = gevent.select.select([fd], [], [], wait)[0]
            data = os.read(fd, READ_SIZE) if readable else None
        except BlockingIOError:  # woken up, but another reader of the fd took the events
            return False
        except (OSError, ValueError) as exc:  # ENODEV when unplugged, EBADF/ValueError when closed
            errno_ = getattr(exc, "errno", None)
            self._retry_later(self._lost_error(os.strerror(errno_) if errno_ else str(exc)))
            return False
        if data == b"":
            self._retry_later(self._lost_error("end of file (device unplugged, or its event source closed)"))
            return False
        self._end_stalled_code()
        if data is None:
            return False
        self._last_input = time.monotonic()
        for event in self._unpacker.feed(data):
            outcome = self._decoder.feed(event)
            if outcome is not None:
                self._pending.append(outcome)
        return True

    def _end_stalled_code(self) -> None:
        if self._decoder.idle or time.monotonic() - self._last_input < CODE_GAP_S:
            return
        error = self._decoder.abandon(f"no Enter followed within {CODE_GAP_S:g} s")
        if error is not None:
            self._pending.append(error)

    def _discard_stale(self) -> None:
        """Before read(): drop codes scanned earlier, so that they are not taken for this scan."""
        for _ in range(DRAIN_MAX_READS):
            if self._source is None or not self._pump(0):
                break
        while self._pending:
            stale = self._pending.popleft()
            shown = repr(stale.barcode) if isinstance(stale, BarcodeRead) else str(stale)
            log.warning("reader %r: discarding %s, received before read() was called", self.name, shown)
