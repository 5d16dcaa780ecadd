"""Reader parsers (framing, dialects, code decoding) on known and arbitrary bytes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bliss_sampletrack.core.barcode import is_no_read
from bliss_sampletrack.errors import InvalidBarcodeError, NoReadError, ReaderProtocolError, SampleTrackError
from bliss_sampletrack.readers.dialects import (
    DataManDialect,
    GenericDialect,
    KeyenceDialect,
    LineKind,
    MicroscanDialect,
)
from bliss_sampletrack.readers.framing import LineSplitter, decode_code
from bliss_sampletrack.readers.protocol import BarcodeRead

CONTRACT = re.compile(r"^[!-~]([ -~]{0,62}[!-~])?$")
DIALECTS = [KeyenceDialect(), DataManDialect(), MicroscanDialect(), GenericDialect()]


def test_splitter_joins_fragments_and_strips_terminators() -> None:
    splitter = LineSplitter("bcr", b"\r")
    assert splitter.feed(b"AB") == []
    assert splitter.feed(b"C\rDE") == [b"ABC"]
    assert splitter.feed(b"F\r\nGH\r") == [b"DEF", b"GH"]  # a stray LF after CR is tolerated


def test_flood_without_terminator_is_one_error_then_reading_resumes() -> None:
    splitter = LineSplitter("bcr", b"\r\n", max_length=16)
    out = splitter.feed(b"x" * 40)
    assert len(out) == 1 and isinstance(out[0], ReaderProtocolError)
    assert "'bcr'" in str(out[0]) and "xxxx" in str(out[0])
    assert splitter.feed(b"y" * 40) == []  # still the same flood: no second error, no fragment
    assert splitter.feed(b"zz\r\nGOOD\r\n") == [b"GOOD"]


def test_overlong_complete_line_is_an_error() -> None:
    out = LineSplitter("bcr", b"\r", max_length=8).feed(b"123456789\rOK\r")
    assert isinstance(out[0], ReaderProtocolError) and out[1] == b"OK"


@pytest.mark.parametrize(
    ("dialect", "line", "kind"),
    [
        (KeyenceDialect(), b"LYS-1", LineKind.DATA),
        (KeyenceDialect(), b"ERROR", LineKind.NOREAD),
        (KeyenceDialect(), b"OK,LON", LineKind.ACK),
        (KeyenceDialect(), b"ER,LON,11", LineKind.COMMAND_ERROR),
        (DataManDialect(), b"NOREAD", LineKind.NOREAD),
        (DataManDialect(), b"||0:7[0]", LineKind.ACK),
        (DataManDialect(), b"||[101]", LineKind.COMMAND_ERROR),
        (DataManDialect(), b"||[1]LYS-2", LineKind.DATA),
        (MicroscanDialect(), b"NOREAD", LineKind.NOREAD),
        (GenericDialect(no_read=("FAIL",)), b"fail", LineKind.NOREAD),
    ],
)
def test_dialects_classify_lines(dialect: object, line: bytes, kind: LineKind) -> None:
    assert dialect.classify(line).kind is kind  # type: ignore[attr-defined]


def test_keyence_error_names_the_command_and_its_meaning() -> None:
    detail = KeyenceDialect().classify(b"ER,LON,11").detail
    assert "LON" in detail and "11" in detail and "another read" in detail


def test_decode_code_names_reader_and_bytes() -> None:
    assert decode_code("bcr", b"LYS-1").barcode == "LYS-1"
    with pytest.raises(NoReadError, match=r"'bcr'.*b'NOREAD'"):
        decode_code("bcr", b"NOREAD")
    with pytest.raises(InvalidBarcodeError, match=r"'bcr' sent b'LY\\x00S'"):
        decode_code("bcr", b"LY\x00S")
    with pytest.raises(NoReadError):
        decode_code("bcr", b"FAIL", no_read=["FAIL"])


def _parse_all(dialect: object, chunks: list[bytes]) -> list[BarcodeRead | SampleTrackError]:
    """What a reader would make of these bytes: the same steps as the engine, minus I/O."""
    splitter = LineSplitter("fuzz", dialect.terminator, max_length=64)  # type: ignore[attr-defined]
    outcomes: list[BarcodeRead | SampleTrackError] = []
    for chunk in chunks:
        for item in splitter.feed(chunk):
            if isinstance(item, SampleTrackError):
                outcomes.append(item)
                continue
            classified = dialect.classify(item)  # type: ignore[attr-defined]
            if classified.kind is LineKind.DATA:
                try:
                    outcomes.append(decode_code("fuzz", classified.payload, dialect.no_read))  # type: ignore[attr-defined]
                except SampleTrackError as exc:
                    outcomes.append(exc)
    return outcomes


noisy = st.lists(
    st.one_of(
        st.binary(max_size=90), st.sampled_from([b"\r", b"\r\n", b"ERROR", b"NOREAD", b"||[1]", b"OK,LON"])
    ),
    max_size=20,
)


@given(st.sampled_from(DIALECTS), noisy)
def test_arbitrary_bytes_never_crash_and_never_yield_a_bad_barcode(
    dialect: object, chunks: list[bytes]
) -> None:
    for outcome in _parse_all(dialect, chunks):
        if isinstance(outcome, BarcodeRead):
            assert CONTRACT.fullmatch(outcome.barcode), outcome
            assert not is_no_read(outcome.barcode, dialect.no_read)  # type: ignore[attr-defined]
        else:
            assert str(outcome)


# -- firmware as beamlines configure it (issue 17) -----------------------------------------------
@pytest.mark.parametrize(
    ("line", "kind", "payload"),
    [
        (b"||[0]", LineKind.ACK, None),
        (b"||7[0]", LineKind.ACK, None),
        (b"||12:7[0]", LineKind.ACK, None),
        (b"||:::1[0]", LineKind.ACK, None),  # firmware 6.1: unused header fields left as colons
        (b"||:::2[0]LYS-0042", LineKind.DATA, b"LYS-0042"),
        (b"||:::3[0]NOREAD", LineKind.NOREAD, None),
        (b"||:::4[102]", LineKind.COMMAND_ERROR, None),
        (b"||?garbled", LineKind.COMMAND_ERROR, None),  # a response all the same: never data
    ],
)
def test_every_dmcc_header_form_is_a_response_never_a_code(
    line: bytes, kind: LineKind, payload: bytes | None
) -> None:
    classified = DataManDialect().classify(line)
    assert classified.kind is kind
    if payload is not None:
        assert classified.payload == payload


def test_stx_etx_frames_and_noise_between_them() -> None:
    splitter = LineSplitter("bcr", b"\x03", header=b"\x02")
    assert splitter.feed(b"\x02LYS-1\x03\n\x02LY") == [b"LYS-1"]  # an LF after ETX is ignored
    assert splitter.feed(b"S-2\x03") == [b"LYS-2"]
    (noise,) = splitter.feed(b"LYS-3\x03")  # no STX: framing noise, not a code
    assert isinstance(noise, ReaderProtocolError) and "frame header" in str(noise)


def test_lines_know_when_they_began() -> None:
    splitter = LineSplitter("bcr", b"\r")
    assert splitter.feed_timed(b"OLD-", now=1.0) == []
    assert splitter.feed_timed(b"1\rNEW", now=2.0) == [(b"OLD-1", 1.0)]  # begun before t=2
    assert splitter.feed_timed(b"-2\r", now=3.0) == [(b"NEW-2", 2.0)]


def test_an_lf_after_any_terminator_without_one_is_tolerated() -> None:
    assert LineSplitter("bcr", b"\r").feed(b"A\r\nB\r") == [b"A", b"B"]
    assert LineSplitter("bcr", b"\x03").feed(b"A\x03\r\nB\x03") == [b"A", b"B"]
    assert LineSplitter("bcr", b"\r\n").feed(b"A\r\n\nB\r\n") == [b"A", b"\nB"]  # LF is data here
