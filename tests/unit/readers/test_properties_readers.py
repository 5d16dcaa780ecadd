"""Property-based tests of every reader parser: framing, dialects, the engine's line outcome,
the keyboard-wedge decoder and barcode validation, on arbitrary bytes and key events.

What they prove, for any input:
- framing: splitting a byte stream into chunks anywhere gives the same lines and errors as one
  chunk; a line is kept across chunks until its terminator; an over-long line is one error, never
  a fragment;
- the engine's outcome of a line (dialect + validation) is a contract barcode or a plugin error,
  and never a no-read (``ERROR``, ``NOREAD``, configured strings, empty, blank, control
  characters) taken as a code; each error names the reader and the bytes received;
- the same for key events typed by a keyboard wedge.

A failure prints the falsifying example (hypothesis); run again with it to reproduce.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bliss_sampletrack.core.barcode import BARCODE_MAX_LENGTH, is_no_read, validate_barcode
from bliss_sampletrack.errors import (
    InvalidBarcodeError,
    NoReadError,
    ReaderCommandError,
    ReaderProtocolError,
    SampleTrackError,
)
from bliss_sampletrack.readers import keyboard_decoder as kd
from bliss_sampletrack.readers.dialects import (
    DataManDialect,
    Dialect,
    GenericDialect,
    KeyenceDialect,
    LineKind,
    MicroscanDialect,
)
from bliss_sampletrack.readers.framing import LineSplitter, decode_code
from bliss_sampletrack.readers.keyboard_decoder import EventUnpacker, InputEvent, KeyDecoder, pack_events
from bliss_sampletrack.readers.line_reader import LineReader
from bliss_sampletrack.readers.protocol import BarcodeRead, ReadOutcome
from bliss_sampletrack.readers.transports import TcpTransport

CONTRACT = re.compile(r"\A[!-~]([ -~]{0,62}[!-~])?\Z")  # event.schema.json, sample.barcode
BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIGURED_NO_READ = ("FAIL", "no code", "???")
DIALECTS = [KeyenceDialect(), DataManDialect(), MicroscanDialect(), GenericDialect(), GenericDialect(b"\x03")]

# --- strategies -------------------------------------------------------------------------------
terminators = st.sampled_from([b"\r", b"\r\n", b"\n", b"\x03", b"END", b"\r\r"])


@st.composite
def streams(draw: st.DrawFn, terminator: bytes) -> bytes:
    """Bytes rich in terminators, their halves, LFs and runs long enough to be over-long."""
    pieces = st.one_of(
        st.binary(max_size=12),
        st.just(terminator),
        st.sampled_from([terminator[:1], terminator[1:], b"\n", b"\r"]),
        st.integers(1, 30).map(lambda n: b"x" * n),
    )
    return b"".join(draw(st.lists(pieces, max_size=25)))


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def no_read_texts(extra: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """What a reader sends for "nothing read": a no-read word in any case, padded with white
    space or control characters, or only blanks/controls."""
    padding = st.text(alphabet=" \t\x0b\x0c\x1c\x1d\x1e\x1f", max_size=3)
    word = st.sampled_from(["ERROR", "NOREAD", *extra]).flatmap(
        lambda w: st.sampled_from([w, w.lower(), w.title(), w.swapcase()])
    )
    padded = st.tuples(padding, word, padding).map("".join)
    blank = st.text(alphabet=" \t\x0b\x0c\x1c\x1d\x1e\x1f", max_size=4)
    return padded | blank


def split_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes | str]:
    """Lines, with each error replaced by a marker (its message depends on the chunking)."""
    out: list[bytes | str] = []
    for chunk in chunks:
        out += ["<over-long>" if isinstance(i, ReaderProtocolError) else i for i in splitter.feed(chunk)]
    return out


def model_lines(data: bytes, terminator: bytes, max_length: int) -> list[bytes | str]:
    """What the documented rules say the complete lines of ``data`` are (the tail excluded)."""
    *complete, _tail = data.split(terminator)
    out: list[bytes | str] = []
    for line in complete:
        # an LF (or CR LF) a device adds after a terminator that has none is tolerated
        if b"\n" not in terminator and b"\r" not in terminator and line.startswith(b"\r\n"):
            line = line[2:]
        elif b"\n" not in terminator and line.startswith(b"\n"):
            line = line[1:]
        out.append("<over-long>" if len(line) > max_length else line)
    return out


# --- framing ----------------------------------------------------------------------------------
@BOUNDED
@given(st.data(), terminators, st.integers(1, 16))
def test_chunking_never_changes_lines_or_errors(
    data: st.DataObject, terminator: bytes, max_length: int
) -> None:
    stream = data.draw(streams(terminator))
    chunks = data.draw(splits(stream))
    whole = split_all(LineSplitter("bcr", terminator, max_length), [stream])
    pieces = split_all(LineSplitter("bcr", terminator, max_length), chunks)
    assert pieces == whole, (stream, chunks)
    # the complete lines are exactly the documented ones; only the unterminated tail may add
    # one more error (reported as soon as it is certainly over-long)
    expected = model_lines(stream, terminator, max_length)
    assert whole[: len(expected)] == expected
    assert whole[len(expected) :] in ([], ["<over-long>"])
    assert all(isinstance(i, str) or len(i) <= max_length for i in whole)


@BOUNDED
@given(
    st.lists(st.binary(max_size=16).filter(lambda b: b"\r" not in b and not b.startswith(b"\n")), max_size=8),
    st.data(),
)
def test_partial_lines_are_kept_until_their_terminator(lines: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(line + b"\r" for line in lines)
    splitter = LineSplitter("bcr", b"\r", max_length=16)
    out: list[bytes | ReaderProtocolError] = []
    for chunk in data.draw(splits(stream)):
        out += splitter.feed(chunk)
    assert out == lines


@BOUNDED
@given(terminators, st.integers(1, 16), st.integers(0, 40), st.binary(max_size=20))
# both quotes in the bytes shown: repr() then escapes the single one (a repr of fewer bytes, with
# only one kind of quote, is quoted differently and is no substring of the message)
@example(terminator=b"\r", max_length=1, extra=0, flood_tail=b"\x00" * 7 + b"'\"")
def test_a_flood_is_one_error_naming_reader_and_bytes_then_reading_resumes(
    terminator: bytes, max_length: int, extra: int, flood_tail: bytes
) -> None:
    flood = b"F" * (max_length + 1 + extra) + flood_tail.replace(terminator[:1], b"F")
    splitter = LineSplitter("bcr-7", terminator, max_length)
    out = splitter.feed(flood) + splitter.feed(terminator + b"K" + terminator)
    assert [type(i) for i in out] == [ReaderProtocolError, bytes] and out[1] == b"K"
    message = str(out[0])
    # the message names the reader, how many bytes came and the first 40 of them, as repr() shows
    # them (the flood holds no terminator byte: it is the whole over-long line)
    assert "'bcr-7'" in message and "terminator" in message
    assert f"sent {len(flood)}+ bytes" in message and f"starts with {flood[:40]!r}." in message


# --- dialects and the engine's outcome of a line -----------------------------------------------
def engine(dialect: Dialect, no_read: tuple[str, ...] = CONFIGURED_NO_READ) -> LineReader:
    """A reader as its driver builds it (never connected: only its line handling is used)."""
    return LineReader("bcr-7", TcpTransport("bcr-7", "127.0.0.1", 9), dialect, no_read=no_read)


READERS = [engine(d) for d in DIALECTS]


def names_bytes(message: str, *candidates: bytes) -> bool:
    """The message shows one of ``candidates`` (the line, or the data part of a DMCC answer)."""
    return any(repr(c)[2:-1][:30] in message for c in candidates)


def check_outcome(outcome: ReadOutcome | None, line: bytes, no_read: tuple[str, ...]) -> None:
    if outcome is None:  # an acknowledgement: no result at all
        return
    if isinstance(outcome, BarcodeRead):
        assert CONTRACT.fullmatch(outcome.barcode), outcome
        assert not is_no_read(outcome.barcode, no_read), outcome
        assert validate_barcode(outcome.barcode, no_read=no_read) == outcome.barcode
        assert outcome.barcode.encode("ascii") in line
        return
    assert isinstance(outcome, SampleTrackError), outcome
    message = str(outcome)
    assert "'bcr-7'" in message, message  # names the reader...
    data = DataManDialect().classify(line).payload  # (the data part of an extended DMCC answer)
    assert names_bytes(message, line, data), message  # ...and the bytes it sent


def dialect_lines(dialect: Dialect) -> st.SearchStrategy[bytes]:
    """Lines of that dialect's own shapes around arbitrary payloads, and arbitrary bytes."""
    payload = st.binary(max_size=80) | no_read_texts(CONFIGURED_NO_READ).map(str.encode)
    shaped = st.one_of(
        payload,
        st.tuples(st.sampled_from([b"ER,", b"OK,"]), st.from_regex(rb"\A[A-Z0-9]{0,6}(,\d{0,3})?\Z")).map(
            b"".join
        ),
        st.tuples(st.from_regex(rb"\A\|\|(\d{0,3}:)?\d{0,3}\[\d{1,4}\]\Z"), payload).map(b"".join),
    )
    return shaped.map(lambda line: line.replace(dialect.terminator, b""))


@BOUNDED
@given(st.sampled_from(READERS).flatmap(lambda r: st.tuples(st.just(r), dialect_lines(r.dialect))))
def test_any_line_is_a_contract_code_or_an_error_naming_reader_and_bytes(
    reader_and_line: tuple[LineReader, bytes],
) -> None:
    reader, line = reader_and_line
    check_outcome(reader._outcome(line), line, reader.dialect.no_read)


@BOUNDED
@given(
    st.sampled_from(READERS),
    no_read_texts(CONFIGURED_NO_READ),
    st.sampled_from([b"", b"||[0]", b"||12:3[1]"]),
)
def test_a_no_read_is_never_a_code(reader: LineReader, text: str, header: bytes) -> None:
    header = header if isinstance(reader.dialect, DataManDialect) else b""
    line = header + text.encode()
    outcome = reader._outcome(line)
    if header and not text:
        assert outcome is None  # an extended-mode answer without data: an acknowledgement
        return
    assert isinstance(outcome, NoReadError), (line, outcome)
    check_outcome(outcome, line, reader.dialect.no_read)


@BOUNDED
@given(st.sampled_from(DIALECTS), st.binary(max_size=300))
def test_classify_never_raises_and_no_read_lines_are_never_data(dialect: Dialect, line: bytes) -> None:
    classified = dialect.classify(line)
    assert classified.kind in LineKind
    if classified.kind is LineKind.DATA:
        text = classified.payload.decode("ascii", "replace")
        assert text.strip().upper() not in {s.upper() for s in dialect.no_read}
    if classified.kind is LineKind.COMMAND_ERROR:
        assert classified.detail  # says what was refused, for the error message


@settings(max_examples=50, deadline=None)
@given(st.integers(4, 6000), st.sampled_from([b"", b"12:", b"0:"]))
def test_dmcc_status_of_any_length_is_classified(digits: int, header: bytes) -> None:
    # lines up to max_line (configurable) reach classify: a long status must not crash the pump
    classified = DataManDialect().classify(b"||" + header + b"[" + b"1" * digits + b"]ABC")
    assert classified.kind is LineKind.COMMAND_ERROR and "DMCC status" in classified.detail


@BOUNDED
@given(st.sampled_from(READERS), st.data())
def test_a_byte_stream_through_the_whole_line_path_never_yields_a_no_read(
    reader: LineReader, data: st.DataObject
) -> None:
    dialect = reader.dialect
    words = no_read_texts(CONFIGURED_NO_READ).map(str.encode)
    line = st.one_of(words, st.binary(max_size=40), dialect_lines(dialect))
    stream = b"".join(one + dialect.terminator for one in data.draw(st.lists(line, max_size=8)))
    splitter = LineSplitter(reader.name, dialect.terminator, 64)
    for chunk in data.draw(splits(stream)):
        for item in splitter.feed(chunk):
            if isinstance(item, bytes):
                check_outcome(reader._outcome(item), item, dialect.no_read)
            else:
                assert "'bcr-7'" in str(item)


@BOUNDED
@given(st.binary(max_size=100), st.lists(st.text(max_size=6), max_size=3))
def test_decode_code_is_a_code_or_an_error_naming_reader_and_bytes(line: bytes, no_read: list[str]) -> None:
    try:
        read = decode_code("bcr-7", line, no_read)
    except InvalidBarcodeError as exc:
        assert "'bcr-7'" in str(exc) and names_bytes(str(exc), line) and exc.raw == line
        if isinstance(exc, NoReadError):
            assert is_no_read(line.decode("ascii", "replace"), no_read)
    else:
        assert read.raw == line and read.barcode == line.decode("ascii")
        assert CONTRACT.fullmatch(read.barcode) and not is_no_read(read.barcode, no_read)


@BOUNDED
@given(st.text(max_size=80), st.lists(st.text(max_size=6), max_size=3))
def test_validate_barcode_refuses_configured_no_reads_and_names_the_input(
    text: str, no_read: list[str]
) -> None:
    try:
        code = validate_barcode(text, no_read=no_read)
    except InvalidBarcodeError as exc:
        assert exc.raw == text
        shown = (text, text[:40], text.strip() or "an empty string")
        assert any(repr(c)[1:-1][:20] in str(exc) for c in shown), (text, str(exc))
        assert isinstance(exc, NoReadError) == is_no_read(text, no_read)
    else:
        assert code == text and CONTRACT.fullmatch(code) and not is_no_read(code, no_read)


# --- keyboard wedge ---------------------------------------------------------------------------
def type_text(text: str) -> list[InputEvent]:
    """``text`` as a US keyboard wedge types it; characters it cannot type become Tab (an error)."""
    events: list[InputEvent] = []
    for char in text:
        try:
            events += kd.text_to_events(char, enter=False)
        except ValueError:
            tab = kd._code("KEY_TAB")
            events += [InputEvent(kd.EV_KEY, tab, 1), InputEvent(kd.EV_KEY, tab, 0)]
    return events + kd.text_to_events("", enter=True)


def decode_all(decoder: KeyDecoder, events: list[InputEvent]) -> list[ReadOutcome]:
    return [o for o in (decoder.feed(e) for e in events) if o is not None]


@BOUNDED
@given(st.lists(no_read_texts(CONFIGURED_NO_READ) | st.text(max_size=10), min_size=1, max_size=5))
def test_a_typed_no_read_is_never_a_code(texts: list[str]) -> None:
    decoder = KeyDecoder("wedge", no_read=CONFIGURED_NO_READ)
    outcomes = decode_all(decoder, [e for text in texts for e in type_text(text)])
    assert len(outcomes) == len(texts)  # one outcome per Enter, whatever was typed
    for text, outcome in zip(texts, outcomes, strict=True):
        if isinstance(outcome, BarcodeRead):
            assert outcome.barcode == text and not is_no_read(text, CONFIGURED_NO_READ)
            assert CONTRACT.fullmatch(outcome.barcode)
        else:
            assert isinstance(outcome, SampleTrackError) and "'wedge'" in str(outcome)
            if is_no_read(text, CONFIGURED_NO_READ) and all(" " <= c <= "~" for c in text):
                assert isinstance(outcome, NoReadError)


@BOUNDED
@given(
    st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8), max_size=6),
    st.data(),
)
def test_event_bytes_split_anywhere_decode_the_same(texts: list[str], data: st.DataObject) -> None:
    events = [e for text in texts for e in kd.text_to_events(text)]
    stream = pack_events(events)
    unpacker = EventUnpacker()
    received = [e for chunk in data.draw(splits(stream)) for e in unpacker.feed(chunk)]
    assert received == events
    whole = decode_all(KeyDecoder("wedge"), events)
    assert [type(o) for o in whole] == [type(o) for o in decode_all(KeyDecoder("wedge"), received)]
    assert len(whole) == len(texts)


@BOUNDED
@given(
    st.lists(
        st.sampled_from(sorted({*kd.KEYMAP, kd.KEY_ENTER, kd.KEY_CAPSLOCK, 1, 14, 15, 103, 29, 56})),
        max_size=120,
    )
)
def test_any_key_presses_give_codes_or_errors_naming_the_key(codes: list[int]) -> None:
    decoder = KeyDecoder("wedge")
    events = [InputEvent(kd.EV_KEY, c, v) for c in codes for v in (1, 0)]
    for outcome in decode_all(decoder, events):
        if isinstance(outcome, BarcodeRead):
            assert CONTRACT.fullmatch(outcome.barcode) and not is_no_read(outcome.barcode)
            assert len(outcome.barcode) <= BARCODE_MAX_LENGTH
        elif isinstance(outcome, ReaderProtocolError) and "US keyboard" in str(outcome):
            assert re.search(r"KEY_\w+ \(code \d+\)|key code \d+", str(outcome))
        else:
            assert isinstance(outcome, InvalidBarcodeError | ReaderProtocolError | ReaderCommandError)
            assert "'wedge'" in str(outcome)
