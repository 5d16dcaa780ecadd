"""Barcode validation, per the contract: a no-read or malformed input is never a sample.

Contract rule: a barcode is printable ASCII, 1 to 64 characters, with no leading or trailing
space; reader no-read strings (``ERROR``, ``NOREAD``, a configured one, empty) are never barcodes.

Caveats, on purpose:
- No-read strings are compared case-insensitively: refusing a real code spelled ``error`` is a
  visible, recoverable failure; tagging a scan with a no-read is a silent wrong tag.
- Nothing is stripped here: framing (CR, LF, STX/ETX) belongs to the reader's parser, which knows
  its protocol. A barcode with surrounding whitespace is rejected with a message saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bliss_sampletrack.errors import InvalidBarcodeError, NoReadError

#: what readers send when they read nothing: Keyence SR ``ERROR``, Microscan/DataMan ``NOREAD``
DEFAULT_NO_READ_STRINGS: frozenset[str] = frozenset({"ERROR", "NOREAD"})
BARCODE_MAX_LENGTH = 64
# the contract's JSON-schema pattern, kept verbatim so that both sides agree byte for byte
BARCODE_PATTERN = re.compile(r"^[!-~]([ -~]{0,62}[!-~])?$")


def no_read_strings(extra: Iterable[str] = ()) -> frozenset[str]:
    """The default no-read strings plus configured ones, upper-cased for comparison."""
    return frozenset(s.strip().upper() for s in (*DEFAULT_NO_READ_STRINGS, *extra))


def is_no_read(text: str, extra: Iterable[str] = ()) -> bool:
    """True when ``text`` is a reader's no-read answer (empty or blank included)."""
    stripped = text.strip()
    return not stripped or stripped.upper() in no_read_strings(extra)


def validate_barcode(raw: str | bytes, *, no_read: Iterable[str] = ()) -> str:
    """Return ``raw`` as a contract-valid barcode, or raise saying what is wrong.

    ``no_read`` adds configured no-read strings to the defaults (``ERROR``, ``NOREAD``).
    Bytes are decoded as ASCII. Raises :class:`NoReadError` for a no-read or empty input and
    :class:`InvalidBarcodeError` for anything else that is not a barcode.
    """
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidBarcodeError(
                f"barcode {bytes(raw)[:80]!r} is not ASCII (byte {exc.start} is "
                f"0x{bytes(raw)[exc.start]:02x}); check the reader's character set",
                raw=raw,
            ) from None
    elif isinstance(raw, str):
        text = raw
    else:
        raise InvalidBarcodeError(f"a barcode must be text, got {type(raw).__name__} {raw!r}", raw=raw)

    if is_no_read(text, no_read):
        shown = text.strip() or "an empty string"
        raise NoReadError(
            f"the reader reported a no-read ({shown!r}); no sample was identified: "
            "re-read the code or mount the sample manually",
            raw=raw,
        )
    if len(text) > BARCODE_MAX_LENGTH:
        raise InvalidBarcodeError(
            f"barcode {text[:40]!r}... is {len(text)} characters long; at most "
            f"{BARCODE_MAX_LENGTH} are allowed (is the reader sending several codes in one line?)",
            raw=raw,
        )
    if text != text.strip(" \t\r\n\v\f"):
        raise InvalidBarcodeError(
            f"barcode {text!r} has leading or trailing whitespace; the reader's line terminator "
            "should be stripped before validation",
            raw=raw,
        )
    bad = next((c for c in text if not " " <= c <= "~"), None)
    if bad is not None:
        raise InvalidBarcodeError(
            f"barcode {text!r} contains {bad!r} (code point {ord(bad)}), which is not printable "
            "ASCII; check the reader's output format",
            raw=raw,
        )
    if not BARCODE_PATTERN.fullmatch(text):  # pragma: no cover - the checks above are complete
        raise InvalidBarcodeError(f"barcode {text!r} does not match the contract", raw=raw)
    return text
