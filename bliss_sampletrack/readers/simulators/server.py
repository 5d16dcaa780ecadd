"""Simulated barcode readers on real loopback sockets (and pseudo-terminals for serial lines).

``ReaderSimulator("keyence").start()`` listens on 127.0.0.1 (a free port by default) and speaks
the device's framing: a driver connects to it exactly as to the real reader. Steer it with
:meth:`ReaderSimulator.queue` (next codes, or a :class:`PowerCut` mid-answer), ``no_read``,
``silence``, ``garbage``, ``push`` (an unsolicited code, as in continuous mode), ``flood``,
``behaviour.delay``, and the faults:

- ``disconnect()``: the connections drop (TCP: closed; serial: the USB adapter re-plugged);
- ``power_off()``/``power_on()``: the device is gone (TCP: connections closed, nothing listens;
  serial: the tty disappears) and comes back (same port, same ``link``);
- ``power_cut()``: the device dies on the spot: silent, commands unheard, but no connection is
  closed (a dead device sends no FIN; a serial line just goes quiet). ``power_on()`` then resets
  the old TCP connections, as a rebooted device's network stack answers them;
- ``power_cycle(off_for)``: ``power_cut()`` then, ``off_for`` s later, ``power_on()`` (returns the
  greenlet): everything sent or received meanwhile is lost, pending answers included; on a pty
  the tty stays (a device on a serial line switched off and on), on TCP the old connections are
  reset when it is back.

Per-answer behaviour (see :mod:`~bliss_sampletrack.readers.simulators.devices` for the markers and
the ``Behaviour`` fields): a trigger's answer is *pending* for ``behaviour.delay`` s; a stop command
(Keyence ``LOFF``, DataMan ``TRIGGER OFF``, a generic model's ``stop``) then gets its own reply
(acks) and the device sends its no-read at once, the pending answer cancelled; with nothing
pending, a stop gets only its reply. ``Late`` answers / ``behaviour.late`` are never pending (they
come even after a stop). Each answer goes out through ``junk`` (a junk line first), ``merge`` (held
for the next answer, both in one segment) and ``split``/``split_gap`` (chunks, apart in time);
sockets use TCP_NODELAY, so chunks really are separate segments. Model options (framing, DMCC
response mode and header form...) are keywords: ``ReaderSimulator("keyence", framing="stx_etx")``.

:class:`SerialSimulator` runs the same device model on the master side of a pseudo-terminal;
the driver opens :attr:`SerialSimulator.port` (``/dev/pts/N``, or ``link``: a symlink kept
pointing at the current pty, like a udev ``/dev/serial/by-id`` name, so the device can come back).
"""

from __future__ import annotations

import logging
import os
import struct
import tty
from collections.abc import Callable, Sequence

import gevent
import gevent.lock
import gevent.select
import gevent.server
import gevent.socket

from bliss_sampletrack.readers.simulators.devices import (
    LOST,
    NO_READ,
    SILENCE,
    Behaviour,
    Command,
    CommandError,
    DeviceModel,
    Late,
    PowerCut,
    model_for,
)

log = logging.getLogger(__name__)

Send = Callable[[bytes], None]


class _Link:
    """One connection to the device (a TCP client, or the pty): where its answers go, the reads
    pending on it (greenlet -> the trigger command), the answer held for ``merge``."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.pending: dict[gevent.Greenlet, bytes] = {}
        self.held = b""
        self.lock = gevent.lock.Semaphore()  # one answer at a time, even split over time

    def take_pending(self) -> list[bytes]:
        """Cancel the pending reads; their trigger commands, oldest first."""
        pending, self.pending = self.pending, {}
        for task in pending:
            task.kill(block=False)
        return list(pending.values())


class _Device:
    """Shared logic of TCP and pty simulators: commands in, answers out (after the delay)."""

    def __init__(self, family: str, behaviour: Behaviour | None, **options: object) -> None:
        self.model: DeviceModel = model_for(family, **options)
        self.behaviour = behaviour or Behaviour()
        # every command received, for tests: as sent (a leading ESC kept), header/terminator removed
        self.commands: list[bytes] = []
        self.triggers = 0
        self.cut = False  # after power_cut(): deaf and silent until power_on()
        self._tasks: set[gevent.Greenlet] = set()  # floods, power cuts and cycles in progress
        self._links: set[_Link] = set()  # the live connections (pending reads, held answers)

    # -- what a transport provides ----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def power_off(self) -> None:
        raise NotImplementedError

    def power_cut(self) -> None:
        raise NotImplementedError

    # -- steering ----------------------------------------------------------------------------------
    def queue(self, *answers: object) -> None:
        """Answers for the next triggers, in order: codes (str), NO_READ, SILENCE, LOST,
        CommandError, Late(answer), PowerCut or raw bytes."""
        for answer in answers:
            inner = answer.answer if isinstance(answer, Late) else answer
            if isinstance(inner, CommandError) and not self.model.supports_command_error:
                raise ValueError(f"{self.model.family} readers have no command-error answer: {answer!r}")
        self.behaviour.answers.extend(answers)

    def no_read(self, count: int = 1) -> None:
        self.queue(*([NO_READ] * count))

    def silence(self, count: int = 1) -> None:
        self.queue(*([SILENCE] * count))

    def push(self, code: str) -> None:
        """An unsolicited result, as a reader in continuous/presentation mode sends it."""
        self.send(self.model.answer(code))

    def garbage(self, data: bytes) -> None:
        """Raw bytes as they are (garbage, partial or over-long lines)."""
        self.send(data)

    def flood(
        self, codes: Sequence[str | bytes], count: int, per_second: float | None = 5000.0, batch: int = 100
    ) -> gevent.Greenlet:
        """Send ``count`` lines, cycling through ``codes`` (text: framed as results; bytes: sent as
        given), about ``per_second`` lines a second (None: as fast as the connection takes them), in
        writes of ``batch`` lines. Returns the sending greenlet; its value is the lines sent. Ends
        early when the device loses power or its connections (what was sent so far is the value)."""
        if not codes or count < 0 or batch < 1:
            raise ValueError(f"flood needs codes, count >= 0 and batch >= 1, got {codes!r}, {count}, {batch}")
        frames = [c if isinstance(c, bytes) else self.model.answer(c) for c in codes]
        task = gevent.spawn(self._flood, frames, count, per_second, batch)
        self._tasks.add(task)
        task.link(self._tasks.discard)
        return task

    def _flood(self, frames: list[bytes], count: int, per_second: float | None, batch: int) -> int:
        sent = 0
        while sent < count:
            size = min(batch, count - sent)
            chunk = b"".join(frames[(sent + i) % len(frames)] for i in range(size))
            try:
                self.send(chunk)
            except OSError as exc:
                log.info("%s simulator: flood ended after %d lines: %s", self.model.family, sent, exc)
                return sent
            sent += size
            gevent.sleep(size / per_second if per_second else 0)
        return sent

    def power_cycle(self, off_for: float) -> gevent.Greenlet:
        """Switched off and, ``off_for`` seconds later, on again: :meth:`power_cut` then
        :meth:`power_on`. Whatever is sent or received meanwhile is lost, and so are the pending
        answers. Returns the greenlet that powers it back on (join it to wait)."""
        log.info("%s simulator: power cycle, off for %.3g s", self.model.family, off_for)
        self.power_cut()
        task = gevent.spawn_later(off_for, self.power_on)
        self._tasks.add(task)
        task.link(self._tasks.discard)
        return task

    def _stop_tasks(self) -> None:
        current = gevent.getcurrent()
        for task in list(self._tasks):
            if task is not current:
                task.kill(block=False)
        self._tasks.clear()
        for link in list(self._links):
            link.take_pending()
            link.held = b""

    def _handle(self, buffer: bytearray, link: _Link) -> None:
        if self.cut:  # a dead device hears nothing
            buffer.clear()
            return
        for command in self.model.split_commands(buffer):
            self.commands.append(command.raw if isinstance(command, Command) else bytes(command))
            if self.model.is_trigger(command):
                self._trigger(command, link)
            elif self.model.is_stop(command):
                self._stop(command, link)
            else:
                for reply in self.model.reply(command, self.behaviour):
                    self._reply(link, reply)

    def _trigger(self, command: bytes, link: _Link) -> None:
        self.triggers += 1
        answer = self.behaviour.next_answer()
        late = self.behaviour.late
        if isinstance(answer, Late):
            answer, late = answer.answer, True
        if answer is LOST:
            log.debug("%s simulator: trigger %r lost", self.model.family, command)
            return
        if isinstance(answer, CommandError):  # refused: the command's response, at once
            self._send_answer(link, self.model.answer(answer, command))
            return
        for ack in self.model.trigger_ack(command, self.behaviour):
            self._reply(link, ack)
        if isinstance(answer, PowerCut):
            task = gevent.spawn_later(self.behaviour.delay, self._cut_mid_frame, link.send, answer)
            self._tasks.add(task)
            task.link(self._tasks.discard)
        elif answer is not SILENCE:
            task = gevent.spawn_later(self.behaviour.delay, self._answer, link, answer, command)
            if not late:
                link.pending[task] = command

    def _stop(self, command: bytes, link: _Link) -> None:
        """A stop: its replies, then, if a read was pending, the no-read at once (it is cancelled)."""
        pending = link.take_pending()
        for reply in self.model.reply(command, self.behaviour):
            self._reply(link, reply)
        if pending:
            log.debug("%s simulator: %r stops a pending read", self.model.family, command)
            self._send_answer(link, self.model.answer(NO_READ, pending[0]))

    @staticmethod
    def _reply(link: _Link, data: bytes) -> None:
        """A command's reply: after the frame being sent, never inside it (a device's output is
        one byte stream; an answer split over time still goes out whole before the next)."""
        with link.lock:
            link.send(data)

    def _answer(self, link: _Link, result: object, command: bytes) -> None:
        link.pending.pop(gevent.getcurrent(), None)  # being sent: a stop now is too late
        if self.cut:
            return  # the answer was being decoded when the power went
        self._deliver(link, self.model.answer(result, command))

    def _send_answer(self, link: _Link, data: bytes) -> None:
        """Send an answer from the handler: in its own greenlet if it is sent in chunks over time."""
        if self.behaviour.split:
            gevent.spawn(self._deliver, link, data)
        else:
            self._deliver(link, data)

    def _deliver(self, link: _Link, data: bytes) -> None:
        """An answer on its way out: junk line first, merge, split (see the module docstring)."""
        behaviour = self.behaviour
        if not data or self.cut:
            return
        if behaviour.junk is not None:
            junk, behaviour.junk = behaviour.junk, None
            data = self.model.frame(junk) + data
        if behaviour.merge and not link.held:
            link.held = data  # sent with the next answer, in the same segment
            return
        data, link.held = link.held + data, b""
        size = behaviour.split or len(data)
        with link.lock:
            try:
                for start in range(0, len(data), size):
                    if start:
                        gevent.sleep(behaviour.split_gap)
                        if self.cut:
                            return  # the rest of the answer died with the device
                    link.send(data[start : start + size])
            except OSError as exc:  # the client went away before the answer: as with the real device
                log.debug("simulator: answer %r not delivered: %s", data, exc)

    def _cut_mid_frame(self, send: Send, cut: PowerCut) -> None:
        if cut.partial:
            self._send_quietly(send, cut.partial)
        self.power_cut()
        if cut.vanish_after is not None:
            gevent.sleep(cut.vanish_after)
            self.power_off()

    def _send_quietly(self, send: Send, data: bytes) -> None:
        if self.cut:
            return  # the answer was being decoded when the power went
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
        server.socket.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        server.start()
        self._server = server
        self.port = server.server_port
        log.info("%s simulator listening on %s", self.model.family, self.url)
        return self

    def stop(self) -> None:
        self.power_off()

    def power_off(self) -> None:
        """Stop listening and drop every connection, like a power cut seen by a terminal server."""
        self._stop_tasks()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.disconnect()
        self.cut = False

    def power_cut(self) -> None:
        """Die on the spot: stop answering and listening, but leave the connections open (a
        dead device sends no FIN, so the driver sees silence); :meth:`power_on` resets them."""
        self._stop_tasks()
        self.cut = True
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def power_on(self) -> None:
        if self.cut:
            for sock in list(self._clients):  # a rebooted stack answers old connections with a reset
                self._close_client(sock, reset=True)
            self.cut = False
        if self._server is None:
            self.start()

    def disconnect(self) -> None:
        """Close every client connection (the device keeps listening)."""
        for sock in list(self._clients):
            self._close_client(sock)

    def _close_client(self, sock: gevent.socket.socket, reset: bool = False) -> None:
        self._clients.discard(sock)
        try:
            if reset:  # linger 0: close() sends RST instead of FIN
                sock.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(gevent.socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer
        sock.close()

    def send(self, data: bytes) -> None:
        """Send raw bytes to every connected client (garbage, floods, partial lines); a client
        that went away is dropped, as the device would. Nothing is sent after a power cut."""
        if self.cut:
            return
        clients = list(self._clients)
        if not clients and self._server is None:
            raise OSError(f"{self.model.family} simulator on {self.url} is powered off")
        for sock in clients:
            try:
                sock.sendall(data)
            except OSError as exc:
                log.debug("simulator: client gone while sending: %s", exc)
                self._close_client(sock)

    def _serve(self, sock: gevent.socket.socket, address: tuple[str, int]) -> None:
        self.connections += 1
        self._clients.add(sock)
        # each answer chunk its own segment (split), a merged pair one segment
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        link = _Link(sock.sendall)
        self._links.add(link)
        buffer = bytearray()
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                buffer += data
                self._handle(buffer, link)
        except OSError as exc:
            log.debug("simulator connection from %s ended: %s", address, exc)
        finally:
            self._links.discard(link)
            link.take_pending()
            self._clients.discard(sock)
            sock.close()

    def __enter__(self) -> ReaderSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SerialSimulator(_Device):
    """A reader family's simulator on the master side of a pseudo-terminal (a real tty pair).

    ``link``: a path kept as a symlink to the current pty (removed while unplugged), which the
    driver opens instead of ``/dev/pts/N``, so that after :meth:`power_off`/:meth:`power_on` or
    :meth:`disconnect` the device is found again at the same name (a new pty each time).
    """

    def __init__(
        self, family: str, behaviour: Behaviour | None = None, link: str | None = None, **options: object
    ) -> None:
        super().__init__(family, behaviour, **options)
        self.link = link
        self._master: int | None = None
        self._slave: int | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._plug = 0  # which plug-in the fds belong to: an fd number may be reused by the next pty
        self._rx = bytearray()  # what the device received and has not made a command of yet
        self.pts = ""

    @property
    def port(self) -> str:
        """What the driver opens: the link if any, else the current pty."""
        return self.link or self.pts

    def start(self) -> SerialSimulator:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes as a serial line carries them
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._plug += 1
        self.pts = os.ttyname(slave)
        if self.link:
            fresh = f"{self.link}.new"
            if os.path.lexists(fresh):
                os.unlink(fresh)
            os.symlink(self.pts, fresh)
            os.replace(fresh, self.link)  # atomic: the driver never sees a half-made link
        self.cut = False
        self._greenlet = gevent.spawn(self._serve, master)
        return self

    def stop(self) -> None:
        """Close the pty: the driver's next read fails, as when a USB adapter is unplugged."""
        self.power_off()

    def power_off(self) -> None:
        """Unplugged: the pty is closed (a driver reading it gets EIO) and the link removed."""
        self._stop_tasks()
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self.link and os.path.lexists(self.link):
            os.unlink(self.link)
        self.cut = False

    def power_on(self) -> None:
        """Plugged in again (a new pty at ``link``), or back to life after :meth:`power_cut`."""
        if self._master is None:
            self.start()
        self._rx.clear()  # a rebooted device starts with an empty receive buffer
        self.cut = False

    def power_cut(self) -> None:
        """The device dies but the serial line stays: the tty is open and silent."""
        self._stop_tasks()
        self.cut = True
        self._rx.clear()

    def disconnect(self) -> None:
        """The USB adapter unplugged and plugged back at once: a new pty (at ``link``)."""
        self.power_off()
        self.start()

    def send(self, data: bytes) -> None:
        if self.cut:
            return
        master, plug = self._master, self._plug
        view = memoryview(data)
        while view:
            if master is None or self._master != master or self._plug != plug:
                raise OSError("serial simulator is unplugged")
            gevent.select.select([], [master], [], 1.0)
            if self._master != master or self._plug != plug:
                continue  # unplugged while waiting: said above
            try:
                view = view[os.write(master, view) :]
            except BlockingIOError:
                continue

    def _serve(self, master: int) -> None:
        self._rx = bytearray()
        link = _Link(self.send)
        self._links.add(link)
        try:
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
                self._rx += data
                self._handle(self._rx, link)
        finally:
            self._links.discard(link)
            link.take_pending()

    def __enter__(self) -> SerialSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "LOST",
    "NO_READ",
    "SILENCE",
    "Behaviour",
    "CommandError",
    "Late",
    "PowerCut",
    "ReaderSimulator",
    "SerialSimulator",
]
