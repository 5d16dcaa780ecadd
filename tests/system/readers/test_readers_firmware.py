"""The drivers against readers configured as beamlines configure them (issue 17): each behaviour of
the simulators (modelled on the vendors' manuals, see ``readers/simulators/devices.py``) over a
real socket or pty. Every read returns the code of its own trigger, or an explicit no-read,
command error or timeout; never a header, a stale code or junk."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from bliss_sampletrack.errors import NoReadError, ReaderCommandError, ReaderTimeout
from bliss_sampletrack.readers import CognexDataMan, GenericLineReader, KeyenceSR, LineReader, Microscan
from bliss_sampletrack.readers.simulators.devices import LOST, CommandError, Late
from bliss_sampletrack.readers.simulators.server import ReaderSimulator, SerialSimulator

FAMILIES: dict[str, tuple[type[LineReader], dict[str, Any], dict[str, Any]]] = {
    # family: (driver, driver keys, simulator options)
    "keyence": (KeyenceSR, {}, {}),
    "keyence-stx_etx": (KeyenceSR, {"framing": "stx_etx"}, {"framing": "stx_etx"}),
    "dataman": (CognexDataMan, {}, {}),
    "dataman-extended": (CognexDataMan, {}, {"response_mode": "extended", "header": "colons"}),
    "generic-stx_etx": (
        GenericLineReader,
        {"header": "\x02", "terminator": "\x03", "trigger": "\x02T\x03", "stop": "\x02S\x03"},
        {"header": b"\x02", "terminator": b"\x03", "trigger": b"T", "stop": b"S"},
    ),
}


@pytest.fixture(params=sorted(FAMILIES))
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[ReaderSimulator, LineReader]]:
    cls, keys, options = FAMILIES[request.param]
    family = request.param.split("-")[0]
    simulator = ReaderSimulator(family, **options).start()
    reader = cls("bcr", {"tcp": {"url": simulator.url}, "timeout": 1.0, **keys})
    reader.backoff.initial = reader.backoff.next = 0.05
    yield simulator, reader
    reader.close()
    simulator.stop()


def test_codes_no_reads_and_framing_as_configured(pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = pair
    simulator.queue("LYS-0042")
    assert reader.read().barcode == "LYS-0042"
    simulator.no_read()
    with pytest.raises(NoReadError):
        reader.read()
    simulator.queue("LYS-0043")
    assert reader.read().barcode == "LYS-0043"


@pytest.mark.parametrize("form", ["full", "id", "bare", "colons"])
def test_every_dmcc_header_form_gives_the_code_never_the_header(form: str) -> None:
    with ReaderSimulator("dataman", response_mode="extended", header=form) as simulator:
        reader = CognexDataMan("dm", {"tcp": {"url": simulator.url}, "timeout": 1.0})
        try:
            simulator.queue("DM-1")
            read = reader.read()
            assert read.barcode == "DM-1" and not read.barcode.startswith("||")
            simulator.no_read()
            with pytest.raises(NoReadError):
                reader.read()
            simulator.queue(CommandError("102"))
            with pytest.raises(ReaderCommandError, match="DMCC status 102"):
                reader.read()
        finally:
            reader.close()


def test_the_stops_no_read_after_a_timeout_is_not_the_next_reads(
    pair: tuple[ReaderSimulator, LineReader],
) -> None:
    simulator, reader = pair
    simulator.behaviour.delay = 0.4  # the reader decodes slowly: the read times out, the stop
    simulator.queue("SLOW-1", "NEXT-2")  # makes it send its no-read for SLOW-1 at once
    with pytest.raises(ReaderTimeout):
        reader.read(0.2)
    timed_out = reader.last_error
    simulator.behaviour.delay = 0.0
    assert reader.read().barcode == "NEXT-2"
    assert reader.last_error == timed_out  # the stop's no-read did not overwrite the read's error


def test_a_late_answer_is_dropped(pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = pair
    simulator.behaviour.delay = 0.3
    simulator.queue(Late("LATE-1"))  # comes after the delay even though a stop was sent
    with pytest.raises(ReaderTimeout):
        reader.read(0.2)
    simulator.behaviour.delay = 0.05
    simulator.queue("OWN-2")
    assert reader.read().barcode == "OWN-2"


@pytest.mark.parametrize("gap", [0.02, 0.15])
def test_split_answers_are_joined_even_across_the_deadline(
    pair: tuple[ReaderSimulator, LineReader], gap: float
) -> None:
    simulator, reader = pair
    simulator.behaviour.split = 3
    simulator.behaviour.split_gap = gap
    simulator.queue("SPLIT-0001", "SPLIT-0002")
    try:
        first = reader.read(0.25)
    except ReaderTimeout:  # the answer straddled the deadline: it must not be the next read's
        first = None
    if first is not None:
        assert first.barcode == "SPLIT-0001"
    second = reader.read(3.0)
    assert second.barcode == "SPLIT-0002"


def test_merged_answers_the_last_is_the_reads(pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = pair
    simulator.behaviour.merge = True  # the first answer is held and sent with the next one
    simulator.queue("HELD-1", "OWN-2")
    with pytest.raises(ReaderTimeout):
        reader.read(0.2)
    assert reader.read().barcode == "OWN-2"


def test_a_junk_line_before_the_answer_is_skipped(pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = pair
    simulator.behaviour.junk = b"\x01\x02\xfe\xff"
    simulator.queue("AFTER-JUNK")
    assert reader.read().barcode == "AFTER-JUNK"


def test_a_lost_trigger_times_out_and_the_next_read_is_its_own(
    pair: tuple[ReaderSimulator, LineReader],
) -> None:
    simulator, reader = pair
    simulator.queue(LOST, "OWN-2")
    with pytest.raises(ReaderTimeout):
        reader.read(0.2)
    assert reader.read().barcode == "OWN-2"


def test_keyence_refusing_the_trigger_is_a_command_error() -> None:
    with ReaderSimulator("keyence", framing="stx_etx") as simulator:
        reader = KeyenceSR("bcr", {"tcp": {"url": simulator.url}, "framing": "stx_etx", "timeout": 1.0})
        try:
            simulator.queue(CommandError("11"))
            with pytest.raises(ReaderCommandError, match="LON refused with code 11"):
                reader.read()
        finally:
            reader.close()


@pytest.mark.parametrize("framing", ["crlf", "stx_etx"])
def test_microscan_on_a_pty_with_its_framing_late_answers_and_a_power_cycle(framing: str) -> None:
    simulator = SerialSimulator("microscan", framing=framing).start()
    reader = Microscan("ms", {"serial": {"url": simulator.port}, "framing": framing, "timeout": 1.0})
    reader.backoff.initial = reader.backoff.next = 0.05
    try:
        simulator.queue("MS-1")
        assert reader.read().barcode == "MS-1"
        simulator.behaviour.delay = 0.3  # no stop command: the answer comes after the timeout
        simulator.queue("LATE-2")
        with pytest.raises(ReaderTimeout, match="trigger_char"):
            reader.read(0.2)
        simulator.behaviour.delay = 0.0
        simulator.queue("OWN-3")
        assert reader.read().barcode == "OWN-3"
        cycle = simulator.power_cycle(0.3)
        with pytest.raises(ReaderTimeout):
            reader.read(0.2)  # off: everything sent is lost, the read times out cleanly
        cycle.join(2)
        simulator.queue("AFTER-4")
        assert reader.read(2.0).barcode == "AFTER-4"
    finally:
        reader.close()
        simulator.stop()


def test_a_microscan_timeout_names_the_trigger_character_and_its_key() -> None:
    simulator = SerialSimulator("microscan", trigger_char=b"\x1d").start()  # an MS-3
    reader = Microscan("ms", {"serial": {"url": simulator.port}, "timeout": 0.3})  # default: space
    try:
        simulator.queue("NEVER")
        with pytest.raises(ReaderTimeout, match=r"trigger character sent was b' '.*'trigger_char'"):
            reader.read()
    finally:
        reader.close()
        simulator.stop()


def test_reads_do_not_block_the_hub_while_segments_trickle(pair: tuple[ReaderSimulator, LineReader]) -> None:
    simulator, reader = pair
    simulator.behaviour.split = 1
    simulator.behaviour.split_gap = 0.005
    simulator.queue("TRICKLE-1")
    ticks: list[int] = []
    ticker = gevent.spawn(lambda: [ticks.append(i) or gevent.sleep(0.005) for i in range(20)])
    assert reader.read(3.0).barcode == "TRICKLE-1"
    ticker.join(2)
    assert len(ticks) == 20
