"""USB keyboard-wedge scanners: the pure key decoder, and the reader end to end through real pipes.

The reader tests play packed ``struct input_event`` records into an ``os.pipe()`` from a gevent
greenlet (:class:`RecordedEventSource`), which the reader reads exactly as it reads an evdev node.
The uinput test drives the real evdev path and needs a writable ``/dev/uinput``. (The example YAML
through a real BLISS ``ConfigNode``: tests/system/readers/test_keyboard_wedge_bliss.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bliss_sampletrack.core.barcode import BARCODE_MAX_LENGTH, is_no_read, validate_barcode
from bliss_sampletrack.errors import (
    ConfigurationError,
    InvalidBarcodeError,
    NoReadError,
    ReaderConnectionError,
    ReaderError,
    ReaderProtocolError,
    ReaderTimeout,
    SampleTrackError,
)
from bliss_sampletrack.readers import keyboard_decoder as kd
from bliss_sampletrack.readers import keyboard_wedge as kw
from bliss_sampletrack.readers.keyboard_decoder import (
    EV_KEY,
    EV_SYN,
    EventUnpacker,
    InputEvent,
    KeyDecoder,
    pack_events,
    text_to_events,
)
from bliss_sampletrack.readers.keyboard_wedge import KeyboardWedgeReader, RecordedEventSource
from bliss_sampletrack.readers.protocol import BarcodeRead, BarcodeReader, ConnectionState, ReadOutcome

REPO = Path(__file__).resolve().parents[3]
DEVICE = "/dev/input/by-id/usb-Test_Scanner-event-kbd"
K = kd._code  # key code by name, e.g. K("KEY_A")


# --- helpers -----------------------------------------------------------------------------------


def press(name: str) -> list[InputEvent]:
    """Press and release one key, as a keyboard reports it (with SYN_REPORTs)."""
    code = K(name)
    return [
        InputEvent(EV_KEY, code, 1),
        InputEvent(EV_SYN, 0, 0),
        InputEvent(EV_KEY, code, 0),
        InputEvent(EV_SYN, 0, 0),
    ]


def hold(name: str, value: int) -> list[InputEvent]:
    return [InputEvent(EV_KEY, K(name), value), InputEvent(EV_SYN, 0, 0)]


def decode(events: list[InputEvent], decoder: KeyDecoder | None = None) -> list[ReadOutcome]:
    decoder = decoder or KeyDecoder("wedge")
    return [out for event in events if (out := decoder.feed(event)) is not None]


def codes(outcomes: list[ReadOutcome]) -> list[str | type]:
    """Barcodes as text, errors as their type: easy to compare."""
    return [o.barcode if isinstance(o, BarcodeRead) else type(o) for o in outcomes]


class YamlConfig(dict[str, Any]):
    """A beacon config node stand-in: a dict that knows its YAML file."""

    def __init__(self, *args: Any, filename: str | None = "readers/wedge.yml", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filename = filename


class PipeFactory:
    """Source factory: a new pipe per (re)connection; greenlets wait for it with :meth:`next`."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sources: list[RecordedEventSource] = []
        self.attempts: list[float] = []
        self.fail_first = fail_first
        self._created = gevent.event.Event()

    def __call__(self) -> RecordedEventSource:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.fail_first:
            raise ReaderConnectionError(f"reader 'wedge': cannot open {DEVICE}: no such device")
        source = RecordedEventSource(f"pipe {len(self.sources)}")
        self.sources.append(source)
        self._created.set()
        return source

    def next(self, index: int, timeout: float = 3.0) -> RecordedEventSource:
        deadline = time.monotonic() + timeout
        while len(self.sources) <= index:
            self._created.clear()
            assert self._created.wait(max(0.0, deadline - time.monotonic())), f"no source #{index}"
        return self.sources[index]

    def close(self) -> None:
        for source in self.sources:
            source.close()


@pytest.fixture
def factory() -> Iterator[PipeFactory]:
    pipes = PipeFactory()
    yield pipes
    pipes.close()


def make_reader(factory: PipeFactory, **config: Any) -> KeyboardWedgeReader:
    return KeyboardWedgeReader("wedge", YamlConfig({"device": DEVICE, **config}), source_factory=factory)


def type_later(factory: PipeFactory, *texts: str, index: int = 0, delay: float = 0.05) -> gevent.Greenlet:
    """A greenlet typing ``texts`` into the ``index``-th pipe once the reader opened it."""

    def typist() -> None:
        source = factory.next(index)
        for text in texts:
            gevent.sleep(delay)
            source.send(text_to_events(text))

    return gevent.spawn(typist)


# --- the decoder -------------------------------------------------------------------------------


def test_fallback_key_codes_match_evdev() -> None:
    ecodes = pytest.importorskip("evdev.ecodes")
    for name, code in kd._FALLBACK_CODES.items():
        assert getattr(ecodes, name) == code, name


def test_plugin_imports_and_decodes_without_evdev() -> None:
    script = (
        "import sys; sys.modules['evdev'] = None\n"
        "from bliss_sampletrack.readers import keyboard_decoder as kd, keyboard_wedge as kw\n"
        "from bliss_sampletrack.errors import ReaderConnectionError\n"
        "d = kd.KeyDecoder('w')\n"
        "print([o.barcode for e in kd.text_to_events('Ab#1') if (o := d.feed(e))][0])\n"
        "print(kd.key_name(15))\n"
        "try:\n"
        "    kw.EvdevDeviceSource('w', '/dev/input/event0')\n"
        "except ReaderConnectionError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Ab#1",
        "KEY_TAB (code 15)",
        "reader 'w': the 'evdev' Python package is needed to read a keyboard wedge; pip install evdev",
    ]


def test_every_printable_character_round_trips() -> None:
    text = "".join(chr(c) for c in range(0x21, 0x7F))  # all of printable ASCII but space
    for chunk in (text[:64], text[64:], "with space"):
        assert codes(decode(text_to_events(chunk))) == [chunk]


def test_shifted_symbols_with_either_shift() -> None:
    events = [
        *hold("KEY_RIGHTSHIFT", 1),
        *press("KEY_1"),
        *press("KEY_A"),
        *press("KEY_SLASH"),
        *hold("KEY_RIGHTSHIFT", 0),
        *hold("KEY_LEFTSHIFT", 1),
        *press("KEY_APOSTROPHE"),
        *press("KEY_GRAVE"),
        *hold("KEY_LEFTSHIFT", 0),
        *press("KEY_APOSTROPHE"),
        *press("KEY_ENTER"),
    ]
    assert codes(decode(events)) == ["!A?\"~'"]


def test_shift_held_by_both_keys_until_both_released() -> None:
    events = [*hold("KEY_LEFTSHIFT", 1), *hold("KEY_RIGHTSHIFT", 1), *hold("KEY_LEFTSHIFT", 0)]
    events += [*press("KEY_B"), *hold("KEY_RIGHTSHIFT", 0), *press("KEY_B"), *press("KEY_ENTER")]
    assert codes(decode(events)) == ["Bb"]


def test_caps_lock_toggles_letters_only() -> None:
    events = [*press("KEY_CAPSLOCK"), *press("KEY_A"), *press("KEY_1"), *hold("KEY_LEFTSHIFT", 1)]
    events += [*press("KEY_B"), *press("KEY_2"), *hold("KEY_LEFTSHIFT", 0), *press("KEY_CAPSLOCK")]
    events += [*press("KEY_C"), *press("KEY_ENTER")]
    assert codes(decode(events)) == ["A1b@c"]


def test_caps_lock_follows_the_led_and_the_seed() -> None:
    decoder = KeyDecoder("wedge")
    decoder.caps_lock = True  # as seeded from the device's LED when the reader connects
    led_off = [InputEvent(kd.EV_LED, kd.LED_CAPSL, 0), InputEvent(EV_SYN, 0, 0)]
    assert codes(decode(press("KEY_X") + led_off + press("KEY_X") + press("KEY_ENTER"), decoder)) == ["Xx"]


def test_autorepeat_and_scan_code_events_are_ignored() -> None:
    events = [InputEvent(kd._code("EV_MSC"), 4, 0x70004), InputEvent(EV_KEY, K("KEY_A"), 1)]
    events += [
        InputEvent(EV_KEY, K("KEY_A"), 2),
        InputEvent(EV_KEY, K("KEY_A"), 2),
        InputEvent(EV_KEY, K("KEY_A"), 0),
    ]
    events += [InputEvent(EV_KEY, K("KEY_ENTER"), 1), InputEvent(EV_KEY, K("KEY_ENTER"), 2)]
    assert codes(decode(events)) == ["a"]


def test_keypad_digits_and_keypad_enter() -> None:
    names = [
        "KEY_KP1",
        "KEY_KP2",
        "KEY_KPDOT",
        "KEY_KP0",
        "KEY_KPMINUS",
        "KEY_KP9",
        "KEY_KPSLASH",
        "KEY_KPASTERISK",
    ]
    events = press("KEY_NUMLOCK") + [e for name in names for e in press(name)] + press("KEY_KPENTER")
    assert codes(decode(events)) == ["12.0-9/*"]


def test_enter_ends_each_code() -> None:
    assert codes(decode(text_to_events("S-001") + text_to_events("S-002"))) == ["S-001", "S-002"]


def test_unknown_key_is_an_error_naming_it_and_discards_the_rest_of_the_code() -> None:
    events = (
        text_to_events("AB", enter=False) + press("KEY_TAB") + text_to_events("CD") + text_to_events("OK")
    )
    outcomes = decode(events)
    assert codes(outcomes) == [ReaderProtocolError, "OK"]
    message = str(outcomes[0])
    assert "'wedge'" in message and "KEY_TAB (code 15)" in message and "'AB'" in message


def test_character_typed_with_ctrl_or_alt_is_an_error() -> None:
    events = hold("KEY_LEFTCTRL", 1) + press("KEY_M") + hold("KEY_LEFTCTRL", 0) + text_to_events("X")
    outcomes = decode(events)
    assert codes(outcomes) == [ReaderProtocolError]
    assert "KEY_LEFTCTRL (code 29)+KEY_M (code 50)" in str(outcomes[0])
    assert codes(
        decode(hold("KEY_LEFTALT", 1) + press("KEY_KP6") + hold("KEY_LEFTALT", 0) + press("KEY_ENTER"))
    ) == [ReaderProtocolError]


@pytest.mark.parametrize("typed", ["NOREAD", "ERROR", "noread", "FAIL", ""])
def test_no_read_typed_by_the_scanner_is_a_no_read_error(typed: str) -> None:
    outcomes = decode(text_to_events(typed), KeyDecoder("wedge", no_read=["FAIL"]))
    assert codes(outcomes) == [NoReadError]
    assert "'wedge'" in str(outcomes[0]) and repr(typed) in str(outcomes[0])
    assert outcomes[0].raw == typed.encode()  # type: ignore[union-attr]


def test_malformed_code_is_an_invalid_barcode_error() -> None:
    outcomes = decode(text_to_events(" S-001"))
    assert codes(outcomes) == [InvalidBarcodeError]
    assert "'wedge'" in str(outcomes[0]) and "' S-001'" in str(outcomes[0])


@pytest.mark.parametrize("max_length", [BARCODE_MAX_LENGTH, 10])
def test_over_long_input_is_one_error_then_discarded_until_enter(max_length: int) -> None:
    decoder = KeyDecoder("wedge", max_length=max_length)
    assert codes(decode(text_to_events("x" * max_length), decoder)) == ["x" * max_length]
    outcomes = decode(text_to_events("y" * (3 * max_length)) + text_to_events("NEXT"), decoder)
    assert codes(outcomes) == [ReaderProtocolError, "NEXT"]
    assert f"more than {max_length} characters" in str(outcomes[0])


def test_dropped_events_discard_the_code_in_progress() -> None:
    dropped = [InputEvent(EV_SYN, kd.SYN_DROPPED, 0), InputEvent(EV_KEY, K("KEY_Z"), 1)]
    events = text_to_events("AB", enter=False) + dropped + [InputEvent(EV_SYN, 0, 0)]
    outcomes = decode(events + text_to_events("CD") + text_to_events("OK"))
    assert codes(outcomes) == [ReaderProtocolError, "OK"]
    assert "dropped" in str(outcomes[0]) and "'AB'" in str(outcomes[0])


def test_abandon_reports_a_code_without_enter_once() -> None:
    decoder = KeyDecoder("wedge")
    decode(text_to_events("ABC", enter=False), decoder)
    error = decoder.abandon("no Enter followed")
    assert isinstance(error, ReaderProtocolError) and "'ABC'" in str(error)
    assert decoder.idle and decoder.abandon("again") is None
    decode(press("KEY_TAB") + text_to_events("X", enter=False), decoder)  # error already reported
    assert decoder.abandon("no Enter") is None and decoder.idle


def test_unpacker_keeps_partial_events() -> None:
    data = pack_events(text_to_events("A"))
    unpacker = EventUnpacker()
    first = unpacker.feed(data[:30])
    rest = unpacker.feed(data[30:])
    assert first + rest == text_to_events("A") and len(first) == 1


KEY_CODES = sorted({*kd.KEYMAP, *kd.SHIFT_KEYS, *kd.ENTER_KEYS, *kd.OTHER_MODIFIERS, kd.KEY_CAPSLOCK, 15, 14})
events_strategy = st.lists(
    st.builds(
        InputEvent,
        type=st.sampled_from([EV_KEY, EV_KEY, EV_KEY, EV_SYN, kd.EV_LED, 4]) | st.integers(0, 0xFFFF),
        code=st.sampled_from(KEY_CODES) | st.integers(0, 0xFFFF),
        value=st.sampled_from([0, 1, 1, 2]) | st.integers(-(2**31), 2**31 - 1),
    ),
    max_size=300,
)


def check_outcomes(outcomes: list[ReadOutcome], max_length: int, no_read: tuple[str, ...]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, BarcodeRead):
            assert not is_no_read(outcome.barcode, no_read)
            assert validate_barcode(outcome.barcode, no_read=no_read) == outcome.barcode
            assert len(outcome.barcode) <= max_length and outcome.raw == outcome.barcode.encode()
        else:
            assert isinstance(outcome, SampleTrackError) and "'wedge'" in str(outcome)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy, max_length=st.integers(1, BARCODE_MAX_LENGTH))
def test_arbitrary_events_never_crash_nor_yield_a_no_read(events: list[InputEvent], max_length: int) -> None:
    no_read = ("FAIL", "X")
    decoder = KeyDecoder("wedge", no_read=no_read, max_length=max_length)
    check_outcomes(decode(events, decoder), max_length, no_read)
    decoder.abandon("test")


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=100), max_size=20))
def test_arbitrary_bytes_never_crash_nor_yield_a_no_read(chunks: list[bytes]) -> None:
    unpacker, decoder = EventUnpacker(), KeyDecoder("wedge")
    for chunk in chunks:
        check_outcomes(decode(unpacker.feed(chunk), decoder), BARCODE_MAX_LENGTH, ())


@given(text=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
def test_typed_text_is_a_barcode_exactly_when_valid(text: str) -> None:
    outcomes = decode(text_to_events(text))
    assert len(outcomes) == 1
    try:
        expected: str | type = validate_barcode(text)
    except NoReadError:
        expected = NoReadError
    except InvalidBarcodeError:
        expected = InvalidBarcodeError
    if len(text) > BARCODE_MAX_LENGTH:
        expected = ReaderProtocolError  # caught while typing, before Enter
    assert codes(outcomes) == [expected]


# --- the reader, end to end through pipes -----------------------------------------------------


def test_reader_implements_the_protocol(factory: PipeFactory) -> None:
    reader = make_reader(factory)
    assert isinstance(reader, BarcodeReader)
    assert reader.state is ConnectionState.DISCONNECTED and reader.last_error is None


def test_read_returns_the_next_scan(factory: PipeFactory) -> None:
    reader = make_reader(factory)
    typist = type_later(factory, "S-001")
    read = reader.read(timeout=3)
    typist.join(timeout=1)
    assert (read.reader, read.barcode, read.raw) == ("wedge", "S-001", b"S-001")
    assert read.received_at.tzinfo is not None
    assert reader.state is ConnectionState.CONNECTED and reader.last_code == read
    reader.close()
    assert reader.state is ConnectionState.DISCONNECTED


def test_read_discards_codes_scanned_before_it_was_called(factory: PipeFactory) -> None:
    reader = make_reader(factory)
    type_later(factory, "FIRST")
    assert reader.read(timeout=3).barcode == "FIRST"
    factory.sources[0].send(text_to_events("STALE"))
    gevent.sleep(0.05)
    typist = type_later(factory, "FRESH")
    assert reader.read(timeout=3).barcode == "FRESH"
    typist.join(timeout=1)
    reader.close()


def test_read_raises_no_read_and_remembers_it(factory: PipeFactory) -> None:
    reader = make_reader(factory, no_read=["FAIL"])
    type_later(factory, "FAIL")
    with pytest.raises(NoReadError, match=r"reader 'wedge' typed a no-read \('FAIL'\)"):
        reader.read(timeout=3)
    assert reader.last_error is not None and "FAIL" in reader.last_error
    reader.close()


def test_read_times_out_naming_reader_and_device(factory: PipeFactory) -> None:
    reader = make_reader(factory, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ReaderTimeout, match=f"reader 'wedge': no code scanned on {DEVICE} within 0.2 s"):
        reader.read()
    assert 0.15 < time.monotonic() - started < 1.0
    reader.close()


def test_stream_yields_codes_and_errors_in_order_then_ends(factory: PipeFactory) -> None:
    reader = make_reader(factory)
    typist = type_later(factory, "A-1", "NOREAD", " bad", "B-2")
    outcomes = []
    for outcome in reader.stream(timeout=1.0):
        outcomes.append(outcome)
    typist.join(timeout=1)
    assert codes(outcomes) == ["A-1", NoReadError, InvalidBarcodeError, "B-2"]
    assert reader.last_code is not None and reader.last_code.barcode == "B-2"
    reader.close()


def test_stream_handles_events_split_across_writes(factory: PipeFactory) -> None:
    reader = make_reader(factory)
    data = pack_events(text_to_events("SPLIT"))

    def typist() -> None:
        source = factory.next(0)
        for i in range(0, len(data), 7):  # 7 does not divide 24: every event is cut
            source.send(data[i : i + 7])
            gevent.sleep(0.001)

    gevent.spawn(typist)
    assert codes(list(reader.stream(timeout=0.8))) == ["SPLIT"]
    reader.close()


def test_code_without_enter_is_reported_after_a_pause(
    factory: PipeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kw, "CODE_GAP_S", 0.1)
    reader = make_reader(factory)

    def typist() -> None:
        factory.next(0).send(text_to_events("HALF", enter=False))
        gevent.sleep(0.3)
        factory.next(0).send(text_to_events("WHOLE"))

    gevent.spawn(typist)
    outcomes = list(reader.stream(timeout=0.8))
    assert codes(outcomes) == [ReaderProtocolError, "WHOLE"]
    assert "'HALF'" in str(outcomes[0]) and "no Enter" in str(outcomes[0])
    reader.close()


def test_stream_reports_a_lost_device_and_reconnects(factory: PipeFactory) -> None:
    reader = make_reader(factory)
    states: list[ConnectionState] = []

    def typist() -> None:
        first = factory.next(0)
        first.send(text_to_events("BEFORE"))
        gevent.sleep(0.05)
        first.end()  # end of file, as when the scanner is unplugged
        factory.next(1).send(text_to_events("AFTER"))

    gevent.spawn(typist)
    outcomes = []
    for outcome in reader.stream(timeout=2.0):
        outcomes.append(outcome)
        states.append(reader.state)
        if len(outcomes) == 3:
            break
    assert codes(outcomes) == ["BEFORE", ReaderConnectionError, "AFTER"]
    assert states == [ConnectionState.CONNECTED, ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    assert "reader 'wedge'" in str(outcomes[1]) and DEVICE in str(outcomes[1])
    assert "end of file" in str(outcomes[1])
    assert factory.attempts[1] - factory.attempts[0] >= kw.BACKOFF_MIN_S * 0.9
    reader.close()


def test_read_raises_on_a_lost_device_then_reconnects(factory: PipeFactory) -> None:
    reader = make_reader(factory)

    def unplug() -> None:
        gevent.sleep(0.05)
        factory.next(0).end()

    gevent.spawn(unplug)
    with pytest.raises(ReaderConnectionError, match=f"reader 'wedge': lost {DEVICE}"):
        reader.read(timeout=2)
    assert reader.state is ConnectionState.CONNECTING
    assert reader.last_error is not None and DEVICE in reader.last_error
    type_later(factory, "BACK", index=1)
    assert reader.read(timeout=3).barcode == "BACK"
    assert reader.state is ConnectionState.CONNECTED
    reader.close()


def test_failed_connections_back_off_and_are_reported_once() -> None:
    factory = PipeFactory(fail_first=3)
    reader = make_reader(factory)
    type_later(factory, "LATE")
    try:
        outcomes = []
        for outcome in reader.stream(timeout=3.0):
            outcomes.append(outcome)
            if isinstance(outcome, BarcodeRead):
                break
    finally:
        reader.close()
        factory.close()
    assert codes(outcomes) == [ReaderConnectionError, "LATE"]
    gaps = [b - a for a, b in zip(factory.attempts, factory.attempts[1:], strict=False)]
    assert len(gaps) == 3
    for gap, expected in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert expected * 0.9 <= gap < expected + 0.3


def test_read_of_an_absent_device_raises_a_connection_error() -> None:
    reader = make_reader(PipeFactory(fail_first=100))
    with pytest.raises(ReaderConnectionError, match="no such device"):
        reader.read(timeout=0.1)
    # the next attempt is only due after the backoff: read() says the device is still missing
    with pytest.raises(ReaderConnectionError, match=f"{DEVICE} still not connected after 0.05 s"):
        reader.read(timeout=0.05)
    assert reader.state is ConnectionState.CONNECTING


def test_real_evdev_source_for_a_missing_node_names_the_path() -> None:
    pytest.importorskip("evdev")
    reader = KeyboardWedgeReader("wedge", YamlConfig(device="/dev/input/by-id/no-such-scanner-event-kbd"))
    with pytest.raises(ReaderConnectionError, match="cannot open /dev/input/by-id/no-such-scanner-event-kbd"):
        reader.read(timeout=0.5)
    assert reader.state is ConnectionState.CONNECTING


class GrabbablePipe(RecordedEventSource):
    def __init__(self, busy: bool = False) -> None:
        super().__init__("grabbable pipe")
        self.busy, self.grabbed = busy, False

    def grab(self) -> None:
        if self.busy:
            raise OSError(16, "Device or resource busy")
        self.grabbed = True


@pytest.mark.parametrize("grab", [True, False])
def test_grab_is_requested_when_configured(grab: bool) -> None:
    sources: list[GrabbablePipe] = []

    def open_pipe() -> GrabbablePipe:
        sources.append(GrabbablePipe())
        return sources[-1]

    reader = KeyboardWedgeReader("wedge", YamlConfig(device=DEVICE, grab=grab), source_factory=open_pipe)
    with pytest.raises(ReaderTimeout):
        reader.read(timeout=0.05)
    assert sources[0].grabbed is grab
    reader.close()
    assert sources[0].fileno() == -1


def test_a_file_that_is_not_an_input_device_is_a_connection_error() -> None:
    pytest.importorskip("evdev")
    reader = KeyboardWedgeReader("wedge", YamlConfig(device="/dev/null"))
    with pytest.raises(ReaderConnectionError, match="reader 'wedge': cannot open /dev/null"):
        reader.read(timeout=0.5)


def test_a_device_grabbed_elsewhere_is_a_connection_error() -> None:
    source = GrabbablePipe(busy=True)
    reader = KeyboardWedgeReader("wedge", YamlConfig(device=DEVICE), source_factory=lambda: source)
    with pytest.raises(ReaderConnectionError, match="cannot grab .*grab: false"):
        reader.read(timeout=0.5)
    assert source.fileno() == -1  # closed by the reader


def test_caps_lock_is_seeded_from_the_source(factory: PipeFactory) -> None:
    def caps_on() -> RecordedEventSource:
        source = factory()
        source.caps_lock = True  # type: ignore[attr-defined]
        return source

    reader = KeyboardWedgeReader("wedge", YamlConfig(device=DEVICE), source_factory=caps_on)
    type_later(factory, "abc")
    assert reader.read(timeout=3).barcode == "ABC"
    reader.close()


def test_close_from_another_greenlet_ends_a_stream_and_releases_the_pipe(factory: PipeFactory) -> None:
    reader = make_reader(factory)
    follower = gevent.spawn(lambda: list(reader.stream()))
    source = factory.next(0)
    gevent.sleep(0.05)
    with pytest.raises(ReaderError, match="already being read"):
        reader.read(timeout=0.1)
    reader.close()
    assert follower.join(timeout=2) is None and follower.dead and follower.successful()
    assert reader.state is ConnectionState.DISCONNECTED and source.fileno() == -1
    type_later(factory, "AGAIN", index=1)  # a later read() reconnects
    assert reader.read(timeout=3).barcode == "AGAIN"
    reader.close()


def test_info_shows_type_device_grab_state_last_code_and_error(factory: PipeFactory) -> None:
    reader = make_reader(factory, no_read=["FAIL"])
    info = reader.__info__()
    for text in ("KeyboardWedgeReader 'wedge'", DEVICE, "grab:       True", "state:      disconnected"):
        assert text in info
    assert "last code:  none" in info and "last error: none" in info
    type_later(factory, "S-9", "FAIL")
    list(reader.stream(timeout=0.5))
    info = reader.__info__()
    assert "state:      connected" in info and "last code:  'S-9' at " in info and "(pipe 0)" in info
    assert "last error: reader 'wedge' typed a no-read ('FAIL')" in info and "FAIL" in info
    reader.close()


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "key", "problem"),
    [
        ({}, "device", "is missing"),
        ({"device": ""}, "device", "must be a device path"),
        ({"device": DEVICE, "grab": "yes"}, "grab", "true or false"),
        ({"device": DEVICE, "no_read": "FAIL"}, "no_read", "list of strings"),
        ({"device": DEVICE, "no_read": ["FAIL", 3]}, "no_read", "non-empty strings"),
        ({"device": DEVICE, "timeout": 0}, "timeout", "positive number"),
        ({"device": DEVICE, "timeout": "5"}, "timeout", "positive number"),
        ({"device": DEVICE, "max_length": 65}, "max_length", "from 1 to 64"),
        ({"device": DEVICE, "max_length": True}, "max_length", "from 1 to 64"),
        ({"device": DEVICE, "no-read": ["FAIL"]}, "no-read", "did you mean 'no_read'"),
    ],
)
def test_configuration_errors_name_the_key_and_the_file(
    config: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyboardWedgeReader("wedge", YamlConfig(config, filename="readers/wedge.yml"))
    message = str(info.value)
    assert f"key {key!r}" in message and problem in message
    assert "keyboard wedge 'wedge' (readers/wedge.yml)" in message


def test_configuration_error_without_a_file_name() -> None:
    with pytest.raises(ConfigurationError, match="configuration without a file name.*'device' is missing"):
        KeyboardWedgeReader("wedge", {"plugin": "bliss"})


def test_defaults() -> None:
    reader = KeyboardWedgeReader(
        "wedge", {"device": DEVICE, "class": "KeyboardWedgeReader", "plugin": "bliss"}
    )
    assert reader.settings == kw.KeyboardWedgeConfig(DEVICE, True, (), 5.0, 64)
    assert reader.timeout == 5.0 and reader.device == DEVICE


# --- the real evdev path, through a virtual keyboard -----------------------------------------


def uinput_unavailable() -> str | None:
    if not os.path.exists("/dev/uinput"):
        return "/dev/uinput does not exist (uinput kernel module not loaded, or a container without it)"
    if not os.access("/dev/uinput", os.W_OK):
        return "/dev/uinput is not writable by this user (needs root or a udev rule)"
    try:
        import evdev  # noqa: F401
    except ImportError:
        return "the evdev package is not installed"
    return None


@pytest.mark.skipif(uinput_unavailable() is not None, reason=str(uinput_unavailable()))
def test_virtual_keyboard_through_the_real_evdev_path() -> None:
    import evdev

    keys = sorted({*kd.KEYMAP, *kd.SHIFT_KEYS, *kd.ENTER_KEYS, kd.KEY_CAPSLOCK})
    with evdev.UInput({evdev.ecodes.EV_KEY: keys}, name="sampletrack-test-wedge") as keyboard:
        reader = KeyboardWedgeReader("wedge", {"device": keyboard.device.path, "grab": True})

        def typist() -> None:
            deadline = time.monotonic() + 3
            while reader.state is not ConnectionState.CONNECTED and time.monotonic() < deadline:
                gevent.sleep(0.01)
            for event in text_to_events("UINPUT-42#a"):
                keyboard.write(event.type, event.code, event.value)
            keyboard.syn()

        typist_greenlet = gevent.spawn(typist)
        try:
            read = reader.read(timeout=5)
            info = reader.__info__()
        finally:
            reader.close()
            typist_greenlet.kill()
        assert read.barcode == "UINPUT-42#a"
        assert "(sampletrack-test-wedge)" in info and "grab:       True" in info
