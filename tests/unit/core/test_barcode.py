"""Barcode validation: contract rules, no-reads, and arbitrary input (hypothesis)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bliss_sampletrack.core.barcode import is_no_read, validate_barcode
from bliss_sampletrack.errors import InvalidBarcodeError, NoReadError, SampleTrackError

CONTRACT_PATTERN = re.compile(r"^[!-~]([ -~]{0,62}[!-~])?$")  # event.schema.json, sample.barcode


@pytest.mark.parametrize("code", ["A", "ABC-123", "SN 0042", "~!", "x" * 64, "3:05/puck#7"])
def test_valid_barcodes_are_returned_unchanged(code: str) -> None:
    assert validate_barcode(code) == code
    assert validate_barcode(code.encode()) == code


@pytest.mark.parametrize("raw", ["ERROR", "NOREAD", "error", " NOREAD ", "", "   ", "\r\n", b"ERROR", b""])
def test_no_reads_are_never_barcodes(raw: str | bytes) -> None:
    with pytest.raises(NoReadError, match="no-read"):
        validate_barcode(raw)


def test_configured_no_read_string_is_refused() -> None:
    assert validate_barcode("FAIL") == "FAIL"
    with pytest.raises(NoReadError, match="'FAIL'"):
        validate_barcode("FAIL", no_read=["FAIL"])
    assert is_no_read("fail", ["FAIL"])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x" * 65, "65 characters long; at most 64"),
        (" ABC", "leading or trailing whitespace"),
        ("ABC\r", "leading or trailing whitespace"),
        ("AB\tC", "not printable ASCII"),
        ("ÉCHANTILLON", "not printable ASCII"),
        (b"AB\xffC", "not ASCII"),
        (42, "must be text"),
    ],
)
def test_malformed_input_says_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(InvalidBarcodeError, match=re.escape(message)) as info:
        validate_barcode(raw)  # type: ignore[arg-type]
    assert not isinstance(info.value, NoReadError)
    assert info.value.raw == raw


@given(st.text(max_size=80))
def test_any_text_is_a_contract_barcode_or_a_clear_error(text: str) -> None:
    try:
        code = validate_barcode(text)
    except InvalidBarcodeError as exc:
        assert str(exc)  # a message, always
        assert not (CONTRACT_PATTERN.fullmatch(text) and not is_no_read(text)), (
            f"{text!r} is a contract barcode but was refused"
        )
    else:
        assert code == text
        assert CONTRACT_PATTERN.fullmatch(code)
        assert not is_no_read(code)


@given(st.binary(max_size=80))
def test_any_bytes_give_a_barcode_or_a_plugin_error(raw: bytes) -> None:
    try:
        code = validate_barcode(raw)
    except SampleTrackError:
        return
    assert CONTRACT_PATTERN.fullmatch(code)
    assert code.encode("ascii") == raw


@given(st.sampled_from(["ERROR", "NOREAD"]), st.text(alphabet=" \t\r\n", max_size=3), st.booleans())
def test_no_read_in_any_case_and_padding_is_refused(word: str, pad: str, lower: bool) -> None:
    raw = pad + (word.lower() if lower else word) + pad
    with pytest.raises(NoReadError):
        validate_barcode(raw)
