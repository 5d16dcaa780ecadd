"""Each line-reader driver against its device simulator, over real loopback sockets and ptys."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest

from bliss_sampletrack.errors import (
    ConfigurationError,
    InvalidBarcodeError,
    NoReadError,
    ReaderCommandError,
    ReaderConnectionError,
    ReaderProtocolError,
    ReaderTimeout,
)
from bliss_sampletrack.readers import (
    BarcodeRead,
    BarcodeReader,
    CognexDataMan,
    ConnectionState,
    GenericLineReader,
    KeyenceSR,
    LineReader,
    Microscan,
)
from bliss_sampletrack.readers.simulators.server import ReaderSimulator, SerialSimulator

TCP_FAMILIES = [
    ("keyence", KeyenceSR, {}, {}),
    ("dataman", CognexDataMan, {}, {}),
    ("generic", GenericLineReader, {"trigger": "T\r\n", "terminator": "\r\n"}, {"trigger": b"T"}),
]


@pytest.fixture(params=TCP_FAMILIES, ids=[f[0] for f in TCP_FAMILIES])
def tcp_pair(request: pytest.FixtureRequest) -> Iterator[tuple[ReaderSimulator, LineReader]]:
    family, cls, extra, sim_options = request.param
    simulator = ReaderSimulator(family, **sim_options).start()
    reader = cls("bcr", {"tcp": {"url": simulator.url}, "timeout": 1.0, **extra})
    reader.backoff.initial = reader.backoff.next = 0.05
    yield simulator, reader
    reader.close()
    simulator.stop()


def test_reader_satisfies_the_protocol(tcp_pair: tuple[ReaderSimulator, LineReader]) -> None:
    assert isinstance(tcp_pair[1], BarcodeReader)


def test_good_read_then_no_read(tcp_pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = tcp_pair
    simulator.queue("LYS-0042")
    read = reader.read()
    assert isinstance(read, BarcodeRead) and read.barcode == "LYS-0042" and read.reader == "bcr"
    assert reader.state is ConnectionState.CONNECTED
    simulator.no_read()
    with pytest.raises(NoReadError, match=r"'bcr'.*no-read"):
        reader.read()
    assert "no-read" in (reader.last_error or "")
    assert simulator.triggers == 2


def test_timeout_sends_the_stop_command_and_a_late_answer_is_not_taken(
    tcp_pair: tuple[ReaderSimulator, LineReader],
) -> None:
    simulator, reader = tcp_pair
    simulator.behaviour.delay = 0.4
    simulator.queue("LATE-1", "FRESH-2")
    with pytest.raises(ReaderTimeout, match="'bcr'"):
        reader.read(0.2)
    gevent.sleep(0.4)  # LATE-1 arrives with nobody waiting for it
    simulator.behaviour.delay = 0.0
    assert reader.read().barcode == "FRESH-2"
    if reader.dialect.stop:
        assert reader.dialect.stop.strip(b"\r\n") in simulator.commands


def test_reconnects_after_disconnect_and_power_cycle(tcp_pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = tcp_pair
    simulator.queue("A-1")
    assert reader.read().barcode == "A-1"
    simulator.disconnect()
    gevent.sleep(0.2)
    simulator.queue("A-2")
    assert reader.read().barcode == "A-2"
    simulator.power_off()
    with pytest.raises(ReaderConnectionError, match="'bcr'"):
        reader.read(0.5)
    assert reader.state is ConnectionState.CONNECTING
    assert "bcr" in reader.__info__() and "connecting" in reader.__info__()
    simulator.power_on()
    simulator.queue("A-3")
    assert reader.read(3.0).barcode == "A-3"
    assert reader.reconnections >= 2
    assert simulator.connections >= 3


def test_garbage_and_floods_are_errors_never_codes(tcp_pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = tcp_pair
    terminator = reader.dialect.terminator
    reader.connect()
    outcomes = []

    def follow() -> None:
        for outcome in reader.stream(timeout=1.0):
            outcomes.append(outcome)
            if len(outcomes) == 3:
                return

    follower = gevent.spawn(follow)
    gevent.sleep(0.05)
    simulator.garbage(b"\xff\xfe\x00bin" + terminator)
    simulator.garbage(b"Z" * 1000)
    simulator.garbage(terminator + b"OK-CODE" + terminator)
    follower.join(2)
    assert [type(o) for o in outcomes] == [InvalidBarcodeError, ReaderProtocolError, BarcodeRead]
    assert "\\xff\\xfe" in str(outcomes[0]) and "'bcr'" in str(outcomes[0])
    assert outcomes[2].barcode == "OK-CODE"


def test_stream_follows_unsolicited_codes(tcp_pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = tcp_pair
    reader.connect()
    received: list[str] = []

    def follow() -> None:
        for outcome in reader.stream(timeout=2.0):
            assert isinstance(outcome, BarcodeRead)
            received.append(outcome.barcode)
            if len(received) == 3:
                return

    follower = gevent.spawn(follow)
    gevent.sleep(0.05)
    for code in ("S-1", "S-2", "S-3"):
        simulator.push(code)
    follower.join(3)
    assert received == ["S-1", "S-2", "S-3"]


def test_a_read_does_not_block_other_greenlets(tcp_pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = tcp_pair
    simulator.behaviour.delay = 0.3
    simulator.queue("SLOW-1")
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(20)])
    assert reader.read().barcode == "SLOW-1"
    ticker.join(1)
    assert len(ticks) == 20  # the ticker ran during the 0.3 s read


def test_keyence_command_error_and_acknowledgements() -> None:
    with ReaderSimulator("keyence") as simulator:
        reader = KeyenceSR("bcr", {"tcp": {"url": simulator.url}, "timeout": 1})
        try:
            simulator.behaviour.ack = True
            simulator.queue("ACKED-1")
            assert reader.read().barcode == "ACKED-1"  # OK,LON skipped
            simulator.queue(b"ER,LON,11\r")
            with pytest.raises(ReaderCommandError, match=r"LON refused with code 11"):
                reader.read()
        finally:
            reader.close()


def test_dataman_extended_status_error() -> None:
    with ReaderSimulator("dataman") as simulator:
        reader = CognexDataMan("dm", {"tcp": {"url": simulator.url}, "timeout": 1})
        try:
            simulator.queue(b"||[104]\r\n")
            with pytest.raises(ReaderCommandError, match="DMCC status 104"):
                reader.read()
        finally:
            reader.close()


def test_configured_no_read_string() -> None:
    with ReaderSimulator("generic", trigger=b"T") as simulator:
        reader = GenericLineReader(
            "gen", {"tcp": {"url": simulator.url}, "trigger": "T\r\n", "no_read": ["FAIL"], "timeout": 1}
        )
        try:
            simulator.queue("FAIL")
            with pytest.raises(NoReadError, match="FAIL"):
                reader.read()
        finally:
            reader.close()


@pytest.mark.parametrize(
    ("cls", "family", "extra"),
    [
        (Microscan, "microscan", {}),
        (KeyenceSR, "keyence", {}),
        (GenericLineReader, "generic", {"trigger": "T\r\n"}),
    ],
)
def test_serial_readers_over_a_real_pty(cls: type[LineReader], family: str, extra: dict[str, str]) -> None:
    options = {"trigger": b"T"} if family == "generic" else {}
    simulator = SerialSimulator(family, **options).start()
    reader = cls("ser", {"serial": {"url": simulator.port, "baudrate": 115200}, "timeout": 1, **extra})
    try:
        simulator.queue("SER-1")
        assert reader.read().barcode == "SER-1"
        simulator.no_read()
        with pytest.raises(NoReadError):
            reader.read()
        simulator.stop()  # unplugged
        with pytest.raises((ReaderConnectionError, ReaderTimeout)):
            reader.read(0.5)
        with gevent.Timeout(2):
            while reader.state is not ConnectionState.CONNECTING:
                gevent.sleep(0.02)
        assert "ser" in (reader.last_error or "")
    finally:
        reader.close()
        simulator.stop()


def test_microscan_sends_its_delimited_trigger_character() -> None:
    simulator = SerialSimulator("microscan", trigger_char=b"T").start()
    reader = Microscan("ms", {"serial": {"url": simulator.port}, "trigger_char": "T", "timeout": 1})
    try:
        simulator.queue("MS-9")
        assert reader.read().barcode == "MS-9"
        assert simulator.commands == [b"<T>"]
    finally:
        reader.close()
        simulator.stop()


class Node(dict):  # a mapping with a filename, as BLISS's ConfigNode has
    filename = "readers/bcr.yml"


@pytest.mark.parametrize(
    ("cls", "config", "message"),
    [
        (KeyenceSR, {}, "key 'tcp' or 'serial' must be given"),
        (KeyenceSR, {"tcp": {"url": "host:port"}}, "key 'tcp.url' must be 'host:port'"),
        (KeyenceSR, {"tcp": {"url": "h:1"}, "serial": {"url": "/dev/x"}}, "exactly one"),
        (
            KeyenceSR,
            {"serial": {"url": "/dev/x", "baudrate": "fast"}},
            "'serial.baudrate' must be a positive",
        ),
        (KeyenceSR, {"tcp": {"url": "h:1"}, "timeout": -1}, "'timeout' must be > 0"),
        (KeyenceSR, {"tcp": {"url": "h:1"}, "timout": 1}, "'timout' is not a known key"),
        (Microscan, {"serial": {"url": "/dev/x"}, "trigger_char": "ab"}, "'trigger_char' must be one ASCII"),
        (GenericLineReader, {"tcp": {"url": "h:1"}, "terminator": ""}, "'terminator' must not be empty"),
    ],
)
def test_config_errors_name_the_key_and_the_file(cls: type, config: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        cls("bcr", Node(config))
    assert message in str(info.value)
    assert "readers/bcr.yml" in str(info.value) and "'bcr'" in str(info.value)


def test_default_ports_per_family() -> None:
    assert KeyenceSR("k", {"tcp": {"url": "bcr-host"}}).transport.url == "tcp://bcr-host:9004"
    assert CognexDataMan("d", {"tcp": {"url": "dm-host"}}).transport.url == "tcp://dm-host:23"


# -- every read returns the answer to its own trigger (issue 17) ----------------------------------
def frame(reader: LineReader, text: bytes) -> bytes:
    return getattr(reader.dialect, "header", b"") + text + reader.dialect.terminator


def no_read_frame(reader: LineReader) -> bytes:
    return frame(reader, reader.dialect.no_read[0].encode())


def test_the_answer_to_a_timed_out_trigger_is_never_the_next_reads(
    tcp_pair: tuple[ReaderSimulator, LineReader],
) -> None:
    simulator, reader = tcp_pair
    simulator.silence()
    with pytest.raises(ReaderTimeout):
        reader.read(0.2)
    late = gevent.spawn_later(0.1, simulator.send, no_read_frame(reader))  # e.g. the stop's no-read
    simulator.behaviour.delay = 0.2
    simulator.queue("FRESH-2")
    assert reader.read(2.0).barcode == "FRESH-2"
    late.join()
    assert "no result within the read timeout" in (reader.last_error or "")  # not the late no-read
    assert reader.stale_dropped == 1


def test_an_answer_split_across_the_deadline_is_not_the_next_reads(
    tcp_pair: tuple[ReaderSimulator, LineReader],
) -> None:
    simulator, reader = tcp_pair
    simulator.silence()
    answer = frame(reader, b"LATE-1")
    gevent.spawn_later(0.1, simulator.send, answer[:3])
    with pytest.raises(ReaderTimeout):
        reader.read(0.2)
    gevent.spawn_later(0.15, simulator.send, answer[3:])  # the tail, after the next trigger
    simulator.behaviour.delay = 0.3
    simulator.queue("FRESH-2")
    assert reader.read(2.0).barcode == "FRESH-2"


def test_two_answers_in_one_segment_the_last_is_the_reads(
    tcp_pair: tuple[ReaderSimulator, LineReader],
) -> None:
    simulator, reader = tcp_pair
    simulator.silence(2)
    with pytest.raises(ReaderTimeout):
        reader.read(0.2)
    merged = frame(reader, b"LATE-1") + frame(reader, b"FRESH-2")
    # well after the driver's grace for the late answer (STALE_GRACE_S, 0.5 s here): the next
    # trigger has been sent, and both answers arrive together after it
    gevent.spawn_later(0.9, simulator.send, merged)
    assert reader.read(2.0).barcode == "FRESH-2"


def test_a_junk_line_does_not_end_the_read_and_a_split_answer_is_joined(
    tcp_pair: tuple[ReaderSimulator, LineReader],
) -> None:
    simulator, reader = tcp_pair
    simulator.silence()
    answer = frame(reader, b"GOOD-1")
    gevent.spawn_later(0.05, simulator.send, frame(reader, b"\x01\xfe\x7f"))
    gevent.spawn_later(0.1, simulator.send, answer[:2])
    gevent.spawn_later(0.2, simulator.send, answer[2:])
    assert reader.read(2.0).barcode == "GOOD-1"
    assert "not a barcode" in (reader.last_error or "")  # the junk is reported, not returned


def test_a_timeout_says_what_was_received_instead(tcp_pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = tcp_pair
    simulator.silence()
    gevent.spawn_later(0.05, simulator.send, frame(reader, b"\x01\xfe\x7f"))
    with pytest.raises(ReaderTimeout, match=r"sent instead.*not a barcode") as info:
        reader.read(0.3)
    assert repr(reader.dialect.trigger) in str(info.value)
