"""Simulated barcode readers on real loopback sockets (and pseudo-terminals for serial lines).

``ReaderSimulator("keyence").start()`` listens on 127.0.0.1 (a free port by default) and speaks
the device's framing: a driver connects to it exactly as to the real reader. Steer it with
:meth:`ReaderSimulator.queue` (next codes), ``no_read``, ``silence``, ``garbage``, ``push``
(an unsolicited code, as in continuous mode), ``behaviour.delay``, :meth:`disconnect` and
:meth:`power_off`/:meth:`power_on`.

:class:`SerialSimulator` runs the same device model on the master side of a pseudo-terminal;
the driver opens :attr:`SerialSimulator.port` (``/dev/pts/N``) like a serial device.
"""

from __future__ import annotations

import logging
import os
import tty
from collections.abc import Callable

import gevent
import gevent.select
import gevent.server
import gevent.socket

from bliss_sampletrack.readers.simulators.devices import NO_READ, SILENCE, Behaviour, DeviceModel, model_for

log = logging.getLogger(__name__)

Send = Callable[[bytes], None]


class _Device:
    """Shared logic of TCP and pty simulators: commands in, answers out (after the delay)."""

    def __init__(self, family: str, behaviour: Behaviour | None, **options: object) -> None:
        self.model: DeviceModel = model_for(family, **options)
        self.behaviour = behaviour or Behaviour()
        self.commands: list[bytes] = []  # every command received, for tests
        self.triggers = 0

    def queue(self, *answers: object) -> None:
        """Answers for the next triggers, in order: codes (str), NO_READ, SILENCE or raw bytes."""
        self.behaviour.answers.extend(answers)

    def no_read(self, count: int = 1) -> None:
        self.queue(*([NO_READ] * count))

    def silence(self, count: int = 1) -> None:
        self.queue(*([SILENCE] * count))

    def _handle(self, buffer: bytearray, send: Send) -> None:
        for command in self.model.split_commands(buffer):
            self.commands.append(command)
            if self.model.is_trigger(command):
                self.triggers += 1
                for ack in self.model.trigger_ack(command, self.behaviour):
                    send(ack)
                answer = self.behaviour.next_answer()
                if answer is not SILENCE:
                    gevent.spawn_later(
                        self.behaviour.delay, self._send_quietly, send, self.model.answer(answer)
                    )
            else:
                for reply in self.model.reply(command, self.behaviour):
                    send(reply)

    @staticmethod
    def _send_quietly(send: Send, data: bytes) -> None:
        try:
            send(data)
        except OSError as exc:  # the client went away before the answer: as with the real device
            log.debug("simulator: answer %r not delivered: %s", data, exc)


class ReaderSimulator(_Device):
    """A reader family's simulator on a real TCP server on loopback."""

    def __init__(
        self,
        family: str,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
        **options: object,
    ) -> None:
        super().__init__(family, behaviour, **options)
        self.host = host
        self._requested_port = port
        self.port = port
        self._server: gevent.server.StreamServer | None = None
        self._clients: set[gevent.socket.socket] = set()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> ReaderSimulator:
        # after a power cycle, come back on the same port, as a real device keeps its address
        server = gevent.server.StreamServer((self.host, self.port or self._requested_port), self._serve)
        server.init_socket()
        server.socket.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_REUSEADDR, 1)
        server.start()
        self._server = server
        self.port = server.server_port
        log.info("%s simulator listening on %s", self.model.family, self.url)
        return self

    def stop(self) -> None:
        self.power_off()

    def power_off(self) -> None:
        """Stop listening and drop every connection, like a power cut."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.disconnect()

    def power_on(self) -> None:
        if self._server is None:
            self.start()

    def disconnect(self) -> None:
        """Close every client connection (the device keeps listening)."""
        for sock in list(self._clients):
            self._close_client(sock)

    def _close_client(self, sock: gevent.socket.socket) -> None:
        self._clients.discard(sock)
        try:
            sock.shutdown(gevent.socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer
        sock.close()

    def send(self, data: bytes) -> None:
        """Send raw bytes to every connected client (garbage, floods, partial lines)."""
        for sock in list(self._clients):
            sock.sendall(data)

    def push(self, code: str) -> None:
        """An unsolicited result, as a reader in continuous/presentation mode sends it."""
        self.send(self.model.answer(code))

    def garbage(self, data: bytes) -> None:
        self.send(data)

    def _serve(self, sock: gevent.socket.socket, address: tuple[str, int]) -> None:
        self.connections += 1
        self._clients.add(sock)
        buffer = bytearray()
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                buffer += data
                self._handle(buffer, sock.sendall)
        except OSError as exc:
            log.debug("simulator connection from %s ended: %s", address, exc)
        finally:
            self._clients.discard(sock)
            sock.close()

    def __enter__(self) -> ReaderSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SerialSimulator(_Device):
    """A reader family's simulator on the master side of a pseudo-terminal (a real tty pair)."""

    def __init__(self, family: str, behaviour: Behaviour | None = None, **options: object) -> None:
        super().__init__(family, behaviour, **options)
        self._master: int | None = None
        self._slave: int | None = None
        self._greenlet: gevent.Greenlet | None = None
        self.port = ""

    def start(self) -> SerialSimulator:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes as a serial line carries them
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        self._greenlet = gevent.spawn(self._serve, master)
        return self

    def stop(self) -> None:
        """Close the pty: the driver's next read fails, as when a USB adapter is unplugged."""
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def send(self, data: bytes) -> None:
        if self._master is None:
            raise OSError("serial simulator is stopped")
        view = memoryview(data)
        while view:
            gevent.select.select([], [self._master], [], 1.0)
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                continue

    def push(self, code: str) -> None:
        self.send(self.model.answer(code))

    def _serve(self, master: int) -> None:
        buffer = bytearray()
        while True:
            readable, _, _ = gevent.select.select([master], [], [], 1.0)
            if not readable:
                continue
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:  # EIO: nobody has the slave side open right now
                gevent.sleep(0.05)
                continue
            buffer += data
            self._handle(buffer, self.send)

    def __enter__(self) -> SerialSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["NO_READ", "SILENCE", "Behaviour", "ReaderSimulator", "SerialSimulator"]
