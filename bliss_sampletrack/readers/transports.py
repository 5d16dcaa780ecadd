"""Byte transports for line readers: TCP (gevent sockets) and local serial lines (pyserial + gevent).

Both are cooperative: every wait goes through gevent (sockets, ``gevent.select``) with a timeout,
so a reader waiting for a code never blocks the hub or a running scan.

Caveat: serial support covers local tty devices (``/dev/ttyS0``, USB adapters, pseudo-terminals).
For a serial port behind a terminal server (ser2net, Moxa), configure the reader with ``tcp``.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Protocol

import gevent
import gevent.select
import gevent.socket

from bliss_sampletrack.errors import ReaderConnectionError, ReaderTimeout

log = logging.getLogger(__name__)

READ_CHUNK = 4096
#: TCP keepalive: first probe after 10 s of silence, then every 5 s, dead after 3 unanswered
KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
KEEPALIVE_S = 10 + 5 * 3


class Transport(Protocol):
    """An ordered byte stream to a device. ``read_some`` returns at least one byte or raises."""

    @property
    def url(self) -> str: ...

    @property
    def is_open(self) -> bool: ...

    def open(self, timeout: float) -> None: ...

    def close(self) -> None: ...

    def write(self, data: bytes, timeout: float) -> None: ...

    def read_some(self, timeout: float) -> bytes:
        """Raise ReaderTimeout after ``timeout`` s, ReaderConnectionError when the peer is gone."""
        ...


class TcpTransport:
    """TCP client (e.g. Keyence SR port 9004, DataMan DMCC port 23) on a gevent socket."""

    def __init__(self, reader: str, host: str, port: int) -> None:
        self.reader, self.host, self.port = reader, host, port
        self._sock: gevent.socket.socket | None = None

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self, timeout: float) -> None:
        self.close()
        try:
            sock = gevent.socket.create_connection((self.host, self.port), timeout=timeout)
        except TimeoutError:
            raise ReaderConnectionError(
                f"reader {self.reader!r}: no TCP connection to {self.url} within {timeout:g} s"
            ) from None
        except OSError as exc:
            raise ReaderConnectionError(
                f"reader {self.reader!r}: cannot connect to {self.url}: {exc}"
            ) from None
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        # a reader that loses power sends no FIN: without traffic (continuous mode) the connection
        # would look alive forever; keepalive probes find it dead within about KEEPALIVE_S
        sock.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_KEEPALIVE, 1)
        for option, value in KEEPALIVE:
            if hasattr(gevent.socket, option):  # Linux names; other systems keep their defaults
                sock.setsockopt(gevent.socket.IPPROTO_TCP, getattr(gevent.socket, option), value)
        self._sock = sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _require(self) -> gevent.socket.socket:
        if self._sock is None:
            raise ReaderConnectionError(f"reader {self.reader!r}: not connected to {self.url}")
        return self._sock

    def write(self, data: bytes, timeout: float) -> None:
        sock = self._require()
        sock.settimeout(timeout)
        try:
            sock.sendall(data)
        except TimeoutError:
            raise ReaderTimeout(
                f"reader {self.reader!r}: sending {data!r} to {self.url} took over {timeout:g} s"
            ) from None
        except OSError as exc:
            self.close()
            raise ReaderConnectionError(
                f"reader {self.reader!r}: connection to {self.url} lost: {exc}"
            ) from None

    def read_some(self, timeout: float) -> bytes:
        sock = self._require()
        sock.settimeout(timeout)
        try:
            data = sock.recv(READ_CHUNK)
        except TimeoutError:
            raise ReaderTimeout(
                f"reader {self.reader!r}: nothing from {self.url} for {timeout:g} s"
            ) from None
        except OSError as exc:
            self.close()
            raise ReaderConnectionError(
                f"reader {self.reader!r}: connection to {self.url} lost: {exc}"
            ) from None
        if not data:
            self.close()
            raise ReaderConnectionError(f"reader {self.reader!r}: {self.url} closed the connection")
        return data


class SerialTransport:
    """A local serial line (pyserial, non-blocking) read through ``gevent.select``."""

    def __init__(self, reader: str, port: str, baudrate: int = 9600, **settings: object) -> None:
        self.reader, self.port, self.baudrate, self.settings = reader, port, baudrate, settings
        self._serial: object | None = None

    @property
    def url(self) -> str:
        return f"serial://{self.port}@{self.baudrate}"

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self, timeout: float) -> None:
        import serial  # pyserial, a BLISS dependency

        self.close()
        try:
            self._serial = serial.Serial(
                self.port, baudrate=self.baudrate, timeout=0, write_timeout=0, **self.settings
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ReaderConnectionError(f"reader {self.reader!r}: cannot open {self.url}: {exc}") from None

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            port.close()  # type: ignore[attr-defined]

    def _fd(self) -> int:
        if self._serial is None:
            raise ReaderConnectionError(f"reader {self.reader!r}: {self.url} is not open")
        return int(self._serial.fileno())  # type: ignore[attr-defined]

    def write(self, data: bytes, timeout: float) -> None:
        fd = self._fd()
        view = memoryview(data)
        with gevent.Timeout(
            timeout, ReaderTimeout(f"reader {self.reader!r}: writing to {self.url} took over {timeout:g} s")
        ):
            while view:
                gevent.select.select([], [fd], [], timeout)
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    continue
                except OSError as exc:
                    # left open: the pump greenlet, which owns the port, sees the failure on its next read
                    raise ReaderConnectionError(f"reader {self.reader!r}: {self.url} failed: {exc}") from None

    def read_some(self, timeout: float) -> bytes:
        fd = self._fd()
        readable, _, _ = gevent.select.select([fd], [], [], timeout)
        if not readable:
            raise ReaderTimeout(f"reader {self.reader!r}: nothing from {self.url} for {timeout:g} s")
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return b""
        except OSError as exc:
            self.close()
            # EIO: the other end of a pseudo-terminal closed, or a USB adapter was unplugged
            gone = "device gone" if exc.errno in (errno.EIO, errno.ENXIO, errno.ENODEV) else str(exc)
            raise ReaderConnectionError(f"reader {self.reader!r}: {self.url} failed: {gone}") from None
        if not data:
            self.close()
            raise ReaderConnectionError(f"reader {self.reader!r}: {self.url} reached end of file")
        return data
