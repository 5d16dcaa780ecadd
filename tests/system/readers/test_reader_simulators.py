"""The reader simulators on the wire: the exact bytes each vendor's manual describes.

Plain clients only (a gevent socket, or the pty opened with ``os.open``): no reader driver, so
these tests pin the simulators down independently of the drivers tested against them.
"""

from __future__ import annotations

import os
import time
import tty
from collections.abc import Callable, Iterator
from functools import reduce
from pathlib import Path

import gevent
import gevent.select
import gevent.socket
import pytest

from bliss_sampletrack.readers.simulators.devices import (
    LOST,
    SILENCE,
    Behaviour,
    CommandError,
    KeyenceError,
    Late,
)
from bliss_sampletrack.readers.simulators.server import ReaderSimulator, SerialSimulator

Connect = Callable[..., tuple[ReaderSimulator, gevent.socket.socket]]


@pytest.fixture
def tcp() -> Iterator[Connect]:
    """``tcp(family, **options)``: a started simulator and a plain socket connected to it."""
    opened: list[tuple[ReaderSimulator, gevent.socket.socket]] = []

    def connect(family: str, **options: object) -> tuple[ReaderSimulator, gevent.socket.socket]:
        simulator = ReaderSimulator(family, **options).start()
        sock = gevent.socket.create_connection((simulator.host, simulator.port), timeout=2.0)
        opened.append((simulator, sock))
        return simulator, sock

    yield connect
    for simulator, sock in opened:
        sock.close()
        simulator.stop()


def receive(sock: gevent.socket.socket, size: int, timeout: float = 2.0) -> bytes:
    """At least ``size`` bytes (fewer if ``timeout`` passes first)."""
    data = b""
    with gevent.Timeout(timeout, False):
        while len(data) < size:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def arriving(sock: gevent.socket.socket, seconds: float) -> bytes:
    """Whatever arrives within ``seconds``."""
    data = b""
    with gevent.Timeout(seconds, False):
        while chunk := sock.recv(4096):
            data += chunk
    return data


def expect(sock: gevent.socket.socket, expected: bytes, quiet: float = 0.1) -> None:
    """``expected`` exactly, then nothing more for ``quiet`` seconds."""
    assert receive(sock, len(expected)) == expected
    assert arriving(sock, quiet) == b""


def xor(data: bytes) -> bytes:
    return bytes([reduce(lambda a, b: a ^ b, data, 0)])


# -- factory defaults: the bytes the simulators always sent ------------------------------------------
@pytest.mark.parametrize(
    ("family", "options", "trigger", "answer", "no_read"),
    [
        ("keyence", {}, b"LON\r", b"CODE-1\r", b"ERROR\r"),
        ("dataman", {}, b"||>TRIGGER ON\r\n", b"CODE-1\r\n", b"NOREAD\r\n"),
        ("microscan", {}, b"< >", b"CODE-1\r\n", b"NOREAD\r\n"),
        ("generic", {"trigger": b"T"}, b"T\r\n", b"CODE-1\r\n", b"NOREAD\r\n"),
    ],
)
def test_factory_defaults_are_unchanged(
    tcp: Connect, family: str, options: dict[str, object], trigger: bytes, answer: bytes, no_read: bytes
) -> None:
    simulator, sock = tcp(family, **options)
    simulator.queue("CODE-1")
    sock.sendall(trigger)
    expect(sock, answer)
    sock.sendall(trigger)
    expect(sock, no_read)
    assert simulator.triggers == 2


# -- 1. framing per family ---------------------------------------------------------------------------
def test_keyence_stx_etx_framing(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", framing="stx_etx")
    simulator.queue("CODE")
    sock.sendall(b"\x02LON\x03")
    expect(sock, b"\x02CODE\x03")
    sock.sendall(b"\x02LON\x03")
    expect(sock, b"\x02ERROR\x03")  # the no-read is data too
    sock.sendall(b"\x02XYZ\x03")
    expect(sock, b"\x02ER,XYZ,00\x03")
    assert simulator.commands == [b"LON", b"LON", b"XYZ"]
    assert simulator.model.terminator == b"\x03"


def test_keyence_responses_have_the_framing_of_their_command_data_that_of_the_setting(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", framing="stx_etx", behaviour=Behaviour(ack=True))
    simulator.queue("A-1", "B-2")
    sock.sendall(b"\x02LON\x03")
    expect(sock, b"\x02OK,LON\x03\x02A-1\x03")
    sock.sendall(b"LON\r")  # the other form: "Use either of them"
    expect(sock, b"OK,LON\r\x02B-2\x03")


def test_keyence_ignores_an_lf_after_the_terminator(tcp: Connect) -> None:
    simulator, sock = tcp("keyence")
    simulator.queue("A-1", "B-2")
    sock.sendall(b"LON\r\n")
    expect(sock, b"A-1\r")
    sock.sendall(b"\x02LON\x03\n")
    expect(sock, b"B-2\r")
    assert simulator.commands == [b"LON", b"LON"]  # no "\n" command, no ER,...,00


def test_keyence_esc_clears_what_was_received_before_it(tcp: Connect) -> None:
    simulator, sock = tcp("keyence")
    simulator.queue("A-1", "B-2")
    sock.sendall(b"LO")  # a partial command left over (a previous session, line noise)
    gevent.sleep(0.05)
    sock.sendall(b"\x1bLON\r")
    expect(sock, b"A-1\r")  # not ER,LOLON,00
    sock.sendall(b"\x1b\x02LON\x03")
    expect(sock, b"B-2\r")
    assert simulator.commands == [b"\x1bLON", b"\x1bLON"]  # as sent, ESC kept, header/terminator not


def test_keyence_trigger_with_a_bank_number(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", behaviour=Behaviour(ack=True))
    simulator.queue("BANK-2")
    sock.sendall(b"LON,02\r")
    expect(sock, b"OK,LON\rBANK-2\r")


def test_microscan_preamble_and_postamble_on_a_pty() -> None:
    for framing, expected in (("crlf", b"MS-1\r\n"), ("stx_etx", b"\x02MS-1\x03")):
        simulator = SerialSimulator("microscan", framing=framing).start()
        client = PtyClient(simulator.port)
        try:
            simulator.queue("MS-1")
            client.write(b"< >")
            assert client.read(len(expected)) == expected
            assert client.read(1, 0.1) == b""
        finally:
            client.close()
            simulator.stop()


def test_generic_header_and_terminator(tcp: Connect) -> None:
    simulator, sock = tcp("generic", header=b"\x02", terminator=b"\x03", trigger=b"T")
    simulator.queue("G-1", "G-2")
    sock.sendall(b"T\x03")
    expect(sock, b"\x02G-1\x03")
    sock.sendall(b"\x02T\x03")  # a command starting with the header is understood too
    expect(sock, b"\x02G-2\x03")
    sock.sendall(b"T\x03")
    expect(sock, b"\x02NOREAD\x03")


# -- 2. DataMan DMCC response modes and header forms -------------------------------------------------
def test_dataman_silent_mode_answers_no_command(tcp: Connect) -> None:
    simulator, sock = tcp("dataman")
    sock.sendall(b"||>SET SYMBOL.QR ON\r\n||>GET SYMBOL.QR\r\n||>FOO\r\n||>TRIGGER OFF\r\n")
    assert arriving(sock, 0.2) == b""
    simulator.queue(CommandError("104"))
    sock.sendall(b"||>TRIGGER ON\r\n")
    assert arriving(sock, 0.2) == b""  # silent: "Invalid commands are ignored without feedback"


def test_dataman_extended_full_header(tcp: Connect) -> None:
    simulator, sock = tcp("dataman", response_mode="extended")
    simulator.queue("CODE")
    sock.sendall(b"||0:42>TRIGGER ON\r\n")
    expect(sock, b"||0:42[0]CODE\r\n")
    sock.sendall(b"||>SET SYMBOL.QR ON\r\n")
    expect(sock, b"||0:2[0]\r\n")  # no command-id: the response count
    sock.sendall(b"||:9>GET SYMBOL.QR\r\n")
    expect(sock, b"||0:9[0]ON\r\n")
    sock.sendall(b"||:10>FOO BAR\r\n")
    expect(sock, b"||0:10[101]\r\n")  # command invalid
    sock.sendall(b"||:11>SET SYMBOL.QR\r\n")
    expect(sock, b"||0:11[102]\r\n")  # parameter invalid
    sock.sendall(b"||:12>TRIGGER ON\r\n")
    expect(sock, b"||0:12[0]NOREAD\r\n")
    simulator.push("PUSHED")
    expect(sock, b"||0:7[1]PUSHED\r\n")  # reader initiated read-string


@pytest.mark.parametrize(
    ("header", "first", "second", "pushed"),
    [
        ("id", b"||5[0]CODE\r\n", b"||2[0]NOREAD\r\n", b"||3[1]P-1\r\n"),
        ("bare", b"||[0]CODE\r\n", b"||[0]NOREAD\r\n", b"||[1]P-1\r\n"),
        ("colons", b"||:::1[0]CODE\r\n", b"||:::2[0]NOREAD\r\n", b"||:::3[1]P-1\r\n"),
    ],
)
def test_dataman_extended_header_forms(
    tcp: Connect, header: str, first: bytes, second: bytes, pushed: bytes
) -> None:
    simulator, sock = tcp("dataman", response_mode="extended", header=header)
    simulator.queue("CODE")
    sock.sendall(b"||:5>TRIGGER ON\r\n")
    expect(sock, first)
    sock.sendall(b"||>TRIGGER ON\r\n")
    expect(sock, second)
    simulator.push("P-1")
    expect(sock, pushed)


def test_dataman_colons_form_from_the_first_answer(tcp: Connect) -> None:
    simulator, sock = tcp("dataman", response_mode="extended", header="colons")
    simulator.queue("CODE")
    sock.sendall(b"||>TRIGGER ON\r\n")
    expect(sock, b"||:::1[0]CODE\r\n")


def test_dataman_checksum_is_checked_and_answered_in_kind(tcp: Connect) -> None:
    simulator, sock = tcp("dataman", response_mode="extended")
    simulator.queue("CODE")
    command = b"||1:3>TRIGGER ON"
    sock.sendall(command + xor(command) + b"\r\n")
    line = b"||1:3[0]CODE"
    expect(sock, line + xor(line) + b"\r\n")
    sock.sendall(command + b"\x00\r\n")  # wrong checksum
    line = b"||1:3[103]"
    expect(sock, line + xor(line) + b"\r\n")
    assert simulator.triggers == 1


def test_dataman_set_dmcc_response_switches_the_mode(tcp: Connect) -> None:
    simulator, sock = tcp("dataman", header="bare")
    sock.sendall(b"||>SET COM.DMCC-RESPONSE 1\r\n")
    expect(sock, b"||[0]\r\n")  # answered in the new mode
    sock.sendall(b"||>GET COM.DMCC-RESPONSE\r\n")
    expect(sock, b"||[0]1\r\n")
    simulator.queue(CommandError("104"))
    sock.sendall(b"||>TRIGGER ON\r\n")
    expect(sock, b"||[104]\r\n")
    sock.sendall(b"||>SET COM.DMCC-RESPONSE 0\r\n")
    assert arriving(sock, 0.2) == b""
    simulator.queue("CODE")
    sock.sendall(b"||>TRIGGER ON\r\n")
    expect(sock, b"CODE\r\n")


# -- 3./4. stop commands answer a pending read; late answers ------------------------------------------
@pytest.mark.parametrize(
    ("family", "options", "trigger", "stop", "at_once"),
    [
        ("keyence", {}, b"LON\r", b"LOFF\r", b"ERROR\r"),
        ("keyence", {"framing": "stx_etx"}, b"\x02LON\x03", b"\x02LOFF\x03", b"\x02ERROR\x03"),
        ("dataman", {}, b"||>TRIGGER ON\r\n", b"||>TRIGGER OFF\r\n", b"NOREAD\r\n"),
        (
            "dataman",
            {"response_mode": "extended", "header": "id"},
            b"||:5>TRIGGER ON\r\n",
            b"||:6>TRIGGER OFF\r\n",
            b"||6[0]\r\n||5[0]NOREAD\r\n",  # the stop's response, then the trigger's no-read
        ),
        ("generic", {"trigger": b"T", "stop": b"S"}, b"T\r\n", b"S\r\n", b"NOREAD\r\n"),
    ],
)
def test_a_stop_answers_a_pending_read_with_the_no_read_at_once(
    tcp: Connect, family: str, options: dict[str, object], trigger: bytes, stop: bytes, at_once: bytes
) -> None:
    simulator, sock = tcp(family, behaviour=Behaviour(delay=0.5), **options)
    simulator.queue("LATE-1")
    sock.sendall(trigger)
    assert arriving(sock, 0.1) == b""  # decoding
    started = time.monotonic()
    sock.sendall(stop)
    assert receive(sock, len(at_once)) == at_once
    assert time.monotonic() - started < 0.3  # at once, not after the delay
    assert arriving(sock, 0.6) == b""  # LATE-1 was cancelled


def test_a_keyence_stop_is_acknowledged_before_its_no_read(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", behaviour=Behaviour(delay=0.5, ack=True))
    simulator.queue("LATE-1")
    sock.sendall(b"LON\r")
    expect(sock, b"OK,LON\r")
    sock.sendall(b"LOFF\r")
    expect(sock, b"OK,LOFF\rERROR\r", quiet=0.6)


@pytest.mark.parametrize(("ack", "reply"), [(False, b""), (True, b"OK,LOFF\r")])
def test_a_keyence_stop_with_nothing_pending_sends_no_data(tcp: Connect, ack: bool, reply: bytes) -> None:
    simulator, sock = tcp("keyence", behaviour=Behaviour(ack=ack))
    sock.sendall(b"LOFF\r")
    assert arriving(sock, 0.2) == reply
    simulator.queue(SILENCE)  # heard, never answered: nothing pending either
    sock.sendall(b"LON\r")
    assert arriving(sock, 0.1) == (b"OK,LON\r" if ack else b"")
    sock.sendall(b"LOFF\r")
    assert arriving(sock, 0.2) == reply


def test_dataman_extended_stop_with_nothing_pending_gets_its_response_only(tcp: Connect) -> None:
    simulator, sock = tcp("dataman", response_mode="extended", header="colons")
    sock.sendall(b"||>TRIGGER OFF\r\n")
    expect(sock, b"||:::1[0]\r\n")


@pytest.mark.parametrize("how", ["behaviour", "marker"])
def test_a_late_answer_comes_after_the_delay_even_after_a_stop(tcp: Connect, how: str) -> None:
    behaviour = Behaviour(delay=0.4, late=how == "behaviour")
    simulator, sock = tcp("keyence", behaviour=behaviour)
    simulator.queue("LATE-1" if how == "behaviour" else Late("LATE-1"))
    started = time.monotonic()
    sock.sendall(b"LON\r")
    gevent.sleep(0.1)
    sock.sendall(b"LOFF\r")
    assert arriving(sock, 0.15) == b""  # no no-read: nothing was pending
    assert receive(sock, 7) == b"LATE-1\r"
    assert time.monotonic() - started >= 0.35


def test_microscan_has_no_stop_its_answer_always_comes_after_the_delay(tcp: Connect) -> None:
    simulator, sock = tcp("microscan", behaviour=Behaviour(delay=0.3))
    simulator.queue("MS-1")
    started = time.monotonic()
    sock.sendall(b"< >")
    sock.sendall(b"LOFF\r||>TRIGGER OFF\r\n<K230,0>")  # nothing stops a Microscan read cycle
    assert receive(sock, 6) == b"MS-1\r\n"
    assert time.monotonic() - started >= 0.25


# -- 5. segmentation -----------------------------------------------------------------------------------
def test_a_split_answer_arrives_in_chunks_apart_in_time(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", behaviour=Behaviour(split=3, split_gap=0.15))
    simulator.queue("ABCDEFG")
    sock.sendall(b"LON\r")
    chunks: list[tuple[float, bytes]] = []
    with gevent.Timeout(2):
        while sum(len(c) for _, c in chunks) < 8:
            chunk = sock.recv(4096)
            chunks.append((time.monotonic(), chunk))
    assert [c for _, c in chunks] == [b"ABC", b"DEF", b"G\r"]  # one recv() per chunk
    gaps = [b - a for (a, _), (b, _) in zip(chunks, chunks[1:], strict=False)]
    assert all(gap >= 0.12 for gap in gaps), gaps


def test_a_split_stop_no_read_too(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", behaviour=Behaviour(delay=1.0, split=2, split_gap=0.1))
    simulator.queue("LATE-1")
    sock.sendall(b"LON\r")
    gevent.sleep(0.05)
    sock.sendall(b"LOFF\r")
    with gevent.Timeout(2):
        chunks = [sock.recv(4096) for _ in range(3)]
    assert chunks == [b"ER", b"RO", b"R\r"]


def test_merged_answers_arrive_in_one_segment(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", behaviour=Behaviour(merge=True))
    simulator.queue("A-1", "B-2")
    sock.sendall(b"LON\r")
    assert arriving(sock, 0.2) == b""  # held for the next answer
    sock.sendall(b"LON\r")
    with gevent.Timeout(2):
        assert sock.recv(4096) == b"A-1\rB-2\r"  # one recv(): one segment


# -- 6. junk lines ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "options", "trigger", "expected"),
    [
        ("keyence", {}, b"LON\r", b"\x01\xfe\x7f\rCODE\r"),
        ("keyence", {"framing": "stx_etx"}, b"LON\r", b"\x02\x01\xfe\x7f\x03\x02CODE\x03"),
        ("dataman", {}, b"||>TRIGGER ON\r\n", b"\x01\xfe\x7f\r\nCODE\r\n"),
        (
            "generic",
            {"header": b"\x02", "terminator": b"\x03"},
            b"T\x03",
            b"\x02\x01\xfe\x7f\x03\x02CODE\x03",
        ),
    ],
)
def test_a_junk_line_framed_like_data_comes_just_before_the_next_answer(
    tcp: Connect, family: str, options: dict[str, object], trigger: bytes, expected: bytes
) -> None:
    simulator, sock = tcp(family, behaviour=Behaviour(junk=b"\x01\xfe\x7f"), **options)
    simulator.queue("CODE", "CODE")
    sock.sendall(trigger)
    expect(sock, expected)
    sock.sendall(trigger)  # one-shot
    expect(sock, expected[expected.index(b"CODE") - len(simulator.model.header) :])
    assert simulator.behaviour.junk is None


# -- 7. command errors as answers -------------------------------------------------------------------------
def test_keyence_command_error_answers_the_trigger(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", framing="stx_etx", behaviour=Behaviour(ack=True))
    simulator.queue(KeyenceError("14"), CommandError("11"))
    sock.sendall(b"LON\r")
    expect(sock, b"ER,LON,14\r")  # framed like its command, no OK,LON: refused
    sock.sendall(b"\x02LON\x03")
    expect(sock, b"\x02ER,LON,11\x03")
    sock.sendall(b"LOFF\r")
    expect(sock, b"OK,LOFF\r")  # nothing pending


def test_command_errors_only_for_families_that_have_them() -> None:
    for family in ("microscan", "generic"):
        with pytest.raises(ValueError, match="no command-error answer"):
            ReaderSimulator(family).queue(CommandError("14"))
    with pytest.raises(ValueError, match="digits"):
        CommandError("E1")


# -- 8. silently lost triggers ------------------------------------------------------------------------------
def test_a_lost_trigger_gets_nothing_and_a_later_stop_finds_nothing(tcp: Connect) -> None:
    simulator, sock = tcp("keyence", behaviour=Behaviour(ack=True, delay=0.1))
    simulator.queue(LOST, "NEXT-1")
    sock.sendall(b"LON\r")
    assert arriving(sock, 0.3) == b""  # not even OK,LON
    sock.sendall(b"LOFF\r")
    expect(sock, b"OK,LOFF\r", quiet=0.2)  # no ERROR
    sock.sendall(b"LON\r")
    expect(sock, b"OK,LON\rNEXT-1\r")
    assert simulator.triggers == 2


# -- 9. power cycles --------------------------------------------------------------------------------------
class PtyClient:
    """The driver's side of a pty, opened as a driver would (raw)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read(self, size: int, timeout: float = 2.0) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < size and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = gevent.select.select([self.fd], [], [], left)
            if readable:
                data += os.read(self.fd, 4096)
        return data

    def close(self) -> None:
        os.close(self.fd)


def test_a_power_cycle_on_a_pty_loses_everything_while_off() -> None:
    simulator = SerialSimulator("keyence", behaviour=Behaviour(delay=0.2)).start()
    client = PtyClient(simulator.port)
    try:
        simulator.queue("PENDING-1", "AFTER-1")
        client.write(b"LON\r")
        gevent.sleep(0.05)
        client.write(b"LO")  # a partial command: in the receive buffer when the power goes
        gevent.sleep(0.05)
        back = simulator.power_cycle(0.4)
        client.write(b"N\rLON\r")  # sent while off: lost
        simulator.push("PUSHED-OFF")  # sent while off: lost
        assert client.read(1, 0.3) == b""  # PENDING-1 died with the device
        back.join(1)
        assert not simulator.cut
        client.write(b"LON\r")
        assert client.read(8) == b"AFTER-1\r"  # not ER,LON,... from a glued "LO" + "N\r"
        assert client.read(1, 0.3) == b""
        assert simulator.commands == [b"LON", b"LON"]
        assert simulator.port == simulator.pts  # the same tty all along
    finally:
        client.close()
        simulator.stop()


def test_power_off_and_on_still_replug_the_pty(tmp_path: Path) -> None:
    simulator = SerialSimulator("keyence", link=str(tmp_path / "ttyBCR")).start()
    try:
        simulator.power_off()
        assert not os.path.lexists(simulator.port)  # unplugged: the link is gone
        simulator.power_on()
        client = PtyClient(simulator.port)
        try:
            simulator.queue("BACK-1")
            client.write(b"LON\r")
            assert client.read(7) == b"BACK-1\r"
            assert os.path.realpath(simulator.port) == simulator.pts
        finally:
            client.close()
    finally:
        simulator.stop()


def test_a_power_cycle_over_tcp_resets_the_old_connection(tcp: Connect) -> None:
    simulator, sock = tcp("keyence")
    simulator.power_cycle(0.2).join(1)
    with pytest.raises(ConnectionResetError), gevent.Timeout(1):
        sock.sendall(b"LON\r")
        sock.recv(16)
    fresh = gevent.socket.create_connection((simulator.host, simulator.port), timeout=2.0)
    try:
        simulator.queue("AGAIN-1")
        fresh.sendall(b"LON\r")
        expect(fresh, b"AGAIN-1\r")
    finally:
        fresh.close()


# -- a simulator in its own process (readers/simulators/remote.py) ----------------------------------------
def test_a_simulator_process_speaks_the_same_bytes_and_takes_the_same_steering() -> None:
    from bliss_sampletrack.readers.simulators.devices import NO_READ
    from bliss_sampletrack.readers.simulators.remote import SimulatorProcess

    simulator = SimulatorProcess("generic", header=b"\x02", terminator=b"\x03", trigger=b"T").start()
    host, port = simulator.url.rsplit(":", 1)
    sock = gevent.socket.create_connection((host, int(port)), timeout=2.0)
    try:
        assert os.getpid() != int(simulator.call("pid")["pid"])  # really another process
        simulator.queue("CODE-1", NO_READ, Late("CODE-3"))
        sock.sendall(b"\x02T\x03")
        expect(sock, b"\x02CODE-1\x03")
        simulator.behave(junk=b"\x01\xfe\xff")  # bytes survive the pipe, every value kept
        sock.sendall(b"\x02T\x03")
        expect(sock, b"\x02\x01\xfe\xff\x03\x02NOREAD\x03")
        simulator.behave(delay=0.2, split=2, split_gap=0.01)
        sock.sendall(b"\x02T\x03")
        assert arriving(sock, 0.1) == b""  # still decoding
        expect(sock, b"\x02CODE-3\x03")
        simulator.clear_answers()
        simulator.behave(delay=0.0, split=None)
        sock.sendall(b"\x02T\x03")
        expect(sock, b"\x02NOREAD\x03")  # nothing queued: the default no-read
        simulator.disconnect()
        assert arriving(sock, 1.0) == b""  # closed by the device
    finally:
        sock.close()
        simulator.stop()


def test_a_simulator_process_refuses_what_it_cannot_do_and_says_so() -> None:
    from bliss_sampletrack.readers.simulators.remote import SimulatorProcess, SimulatorProcessError

    simulator = SimulatorProcess("microscan", serial=True).start()
    try:
        assert simulator.port.startswith("/dev/pts/")
        with pytest.raises(SimulatorProcessError, match="refused queue: .*NOT_A_MARKER"):
            simulator.call("queue", answers=[{"marker": "NOT_A_MARKER"}])
        with pytest.raises(ValueError, match="no remote form"):
            simulator.queue(object())
        client = PtyClient(simulator.port)
        try:
            simulator.power_cycle(0.05)  # returns once it is back on
            simulator.queue("BACK")
            client.write(b"< >")
            assert client.read(6) == b"BACK\r\n"
        finally:
            client.close()
    finally:
        simulator.stop()
    with pytest.raises(SimulatorProcessError, match="not started"):
        simulator.disconnect()
