"""Decode Linux input events from a USB keyboard-wedge barcode scanner into barcodes.

Pure code, no I/O: :class:`EventUnpacker` turns the bytes read from an evdev node (or a pipe of
recorded events) into :class:`InputEvent` tuples, and :class:`KeyDecoder` turns key events into
outcomes: a :class:`BarcodeRead` per code ended by Enter, or an error instance saying what was
wrong (no-read, malformed code, unknown key, over-long input, dropped events).

Caveats, on purpose:
- The keymap is the US layout. A scanner set to another keyboard country types other key codes
  for the same characters; configure it for "USA" (or decoding is wrong, or fails visibly).
- Keypad keys always type digits and operators, whatever the Num Lock LED: scanners use the
  keypad to type digits, never to move a cursor.
- Autorepeat events (value 2) are ignored: a scanner presses each character on its own; a repeat
  means a key was held down, and typing it again would change the code.
- A character typed with Ctrl, Alt or Meta held (e.g. a scanner in "Alt+keypad" mode) is an
  unknown key: such codes are not printable ASCII anyway.
- Caps Lock is tracked from the scanner's own Caps Lock presses and from LED events of the device;
  the reader seeds it from the device's LED state when it connects.
- Codes come from the kernel's ``linux/input-event-codes.h``; ``evdev.ecodes`` is used when
  installed, this module's own copy otherwise, so the plugin imports without evdev.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from bliss_sampletrack.core.barcode import BARCODE_MAX_LENGTH, validate_barcode
from bliss_sampletrack.errors import InvalidBarcodeError, NoReadError, ReaderProtocolError
from bliss_sampletrack.readers.protocol import BarcodeRead, ReadOutcome

try:
    from evdev import ecodes as _ecodes
except ImportError:  # the plugin must import on machines without evdev
    _ecodes = None

#: ``struct input_event`` on 64-bit Linux: timeval (sec, usec), type, code, value (24 bytes)
EVENT_STRUCT = struct.Struct("llHHi")

# Event types and codes from linux/input-event-codes.h (a stable kernel ABI)
_FALLBACK_CODES: dict[str, int] = {
    "EV_SYN": 0, "EV_KEY": 1, "EV_MSC": 4, "EV_LED": 17, "SYN_REPORT": 0, "SYN_DROPPED": 3,
    "LED_CAPSL": 1, "KEY_ENTER": 28, "KEY_KPENTER": 96,
    "KEY_LEFTSHIFT": 42, "KEY_RIGHTSHIFT": 54, "KEY_CAPSLOCK": 58, "KEY_NUMLOCK": 69,
    "KEY_SCROLLLOCK": 70, "KEY_LEFTCTRL": 29, "KEY_RIGHTCTRL": 97, "KEY_LEFTALT": 56,
    "KEY_RIGHTALT": 100, "KEY_LEFTMETA": 125, "KEY_RIGHTMETA": 126,
    **{f"KEY_{c}": i + 2 for i, c in enumerate("1234567890")},
    **{f"KEY_{c}": i + 16 for i, c in enumerate("QWERTYUIOP")},
    **{f"KEY_{c}": i + 30 for i, c in enumerate("ASDFGHJKL")},
    **{f"KEY_{c}": i + 44 for i, c in enumerate("ZXCVBNM")},
    "KEY_MINUS": 12, "KEY_EQUAL": 13, "KEY_LEFTBRACE": 26, "KEY_RIGHTBRACE": 27,
    "KEY_SEMICOLON": 39, "KEY_APOSTROPHE": 40, "KEY_GRAVE": 41, "KEY_BACKSLASH": 43,
    "KEY_COMMA": 51, "KEY_DOT": 52, "KEY_SLASH": 53, "KEY_SPACE": 57,
    "KEY_KP7": 71, "KEY_KP8": 72, "KEY_KP9": 73, "KEY_KPMINUS": 74, "KEY_KP4": 75, "KEY_KP5": 76,
    "KEY_KP6": 77, "KEY_KPPLUS": 78, "KEY_KP1": 79, "KEY_KP2": 80, "KEY_KP3": 81, "KEY_KP0": 82,
    "KEY_KPDOT": 83, "KEY_KPASTERISK": 55, "KEY_KPSLASH": 98, "KEY_KPEQUAL": 117, "KEY_KPCOMMA": 121,
    # not typed by the decoder; named in its error messages (scanner suffixes set to Tab, Esc...)
    "KEY_ESC": 1, "KEY_BACKSPACE": 14, "KEY_TAB": 15, "KEY_102ND": 86, "KEY_HOME": 102, "KEY_UP": 103,
    "KEY_LEFT": 105, "KEY_RIGHT": 106, "KEY_END": 107, "KEY_DOWN": 108, "KEY_INSERT": 110, "KEY_DELETE": 111,
    **{f"KEY_F{n}": 58 + n for n in range(1, 11)}, "KEY_F11": 87, "KEY_F12": 88,
}  # fmt: skip


def _code(name: str) -> int:
    return int(getattr(_ecodes, name, _FALLBACK_CODES[name]))


EV_SYN, EV_KEY, EV_LED = _code("EV_SYN"), _code("EV_KEY"), _code("EV_LED")
SYN_REPORT, SYN_DROPPED, LED_CAPSL = _code("SYN_REPORT"), _code("SYN_DROPPED"), _code("LED_CAPSL")
KEY_ENTER, KEY_KPENTER, KEY_CAPSLOCK = _code("KEY_ENTER"), _code("KEY_KPENTER"), _code("KEY_CAPSLOCK")
KEY_LEFTSHIFT, KEY_RIGHTSHIFT = _code("KEY_LEFTSHIFT"), _code("KEY_RIGHTSHIFT")
SHIFT_KEYS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})
ENTER_KEYS = frozenset({KEY_ENTER, KEY_KPENTER})
#: modifiers under which a character key is not plain text (Ctrl+M, Alt+keypad codes...)
OTHER_MODIFIERS = frozenset(
    _code(n)
    for n in ("KEY_LEFTCTRL", "KEY_RIGHTCTRL", "KEY_LEFTALT", "KEY_RIGHTALT", "KEY_LEFTMETA", "KEY_RIGHTMETA")
)
#: lock keys that change no character we decode: pressing them is not an error
IGNORED_KEYS = frozenset({_code("KEY_NUMLOCK"), _code("KEY_SCROLLLOCK")})

_PUNCTUATION = {
    "KEY_MINUS": "-_", "KEY_EQUAL": "=+", "KEY_LEFTBRACE": "[{", "KEY_RIGHTBRACE": "]}",
    "KEY_SEMICOLON": ";:", "KEY_APOSTROPHE": "'\"", "KEY_GRAVE": "`~", "KEY_BACKSLASH": "\\|",
    "KEY_COMMA": ",<", "KEY_DOT": ".>", "KEY_SLASH": "/?", "KEY_SPACE": "  ",
    **{f"KEY_{d}": d + s for d, s in zip("1234567890", "!@#$%^&*()", strict=True)},
}  # fmt: skip
_KEYPAD = {
    **{f"KEY_KP{d}": d for d in "0123456789"},
    "KEY_KPDOT": ".", "KEY_KPMINUS": "-", "KEY_KPPLUS": "+", "KEY_KPASTERISK": "*",
    "KEY_KPSLASH": "/", "KEY_KPEQUAL": "=", "KEY_KPCOMMA": ",",
}  # fmt: skip

#: key code -> (character without shift, character with shift)
KEYMAP: dict[int, tuple[str, str]] = {
    **{_code(f"KEY_{c}"): (c.lower(), c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **{_code(name): (chars[0], chars[1]) for name, chars in _PUNCTUATION.items()},
    **{_code(name): (char, char) for name, char in _KEYPAD.items()},
}
LETTER_KEYS = frozenset(_code(f"KEY_{c}") for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_FALLBACK_NAMES = {code: name for name, code in _FALLBACK_CODES.items() if name.startswith("KEY_")}


class InputEvent(NamedTuple):
    """One ``struct input_event``."""

    type: int
    code: int
    value: int
    sec: int = 0
    usec: int = 0

    def pack(self) -> bytes:
        return EVENT_STRUCT.pack(self.sec, self.usec, self.type, self.code, self.value)


def key_name(code: int) -> str:
    """``KEY_A (code 30)``: evdev's name when installed, for messages."""
    name = _ecodes.KEY.get(code) if _ecodes is not None else _FALLBACK_NAMES.get(code)
    if isinstance(name, tuple | list):  # evdev lists aliases, e.g. ('KEY_MIN_INTERESTING', 'KEY_MUTE')
        name = name[-1]
    return f"{name} (code {code})" if name else f"key code {code}"


def text_to_events(text: str, *, enter: bool = True) -> list[InputEvent]:
    """The events a US keyboard wedge sends to type ``text`` (for tests and simulators)."""
    reverse: dict[str, tuple[int, bool]] = {}
    for code, (plain, shifted) in sorted(KEYMAP.items(), reverse=True):  # main keys win over keypad
        reverse[shifted] = (code, shifted != plain)
        reverse[plain] = (code, False)
    events: list[InputEvent] = []
    for char in text:
        if char not in reverse:
            raise ValueError(f"{char!r} cannot be typed on a US keyboard")
        code, shift = reverse[char]
        keys = [KEY_LEFTSHIFT, code] if shift else [code]
        events += [e for key in keys for e in (InputEvent(EV_KEY, key, 1), InputEvent(EV_SYN, SYN_REPORT, 0))]
        events += [
            e for key in reversed(keys) for e in (InputEvent(EV_KEY, key, 0), InputEvent(EV_SYN, 0, 0))
        ]
    if enter:
        events += [InputEvent(EV_KEY, KEY_ENTER, v) for v in (1, 0)] + [InputEvent(EV_SYN, SYN_REPORT, 0)]
    return events


def pack_events(events: Iterable[InputEvent]) -> bytes:
    return b"".join(event.pack() for event in events)


class EventUnpacker:
    """Bytes -> events; keeps a partial ``input_event`` until its other bytes arrive (pipes)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[InputEvent]:
        self._buffer += data
        whole = len(self._buffer) - len(self._buffer) % EVENT_STRUCT.size
        raw = bytes(self._buffer[:whole])
        del self._buffer[:whole]
        return [InputEvent(t, c, v, s, u) for s, u, t, c, v in EVENT_STRUCT.iter_unpack(raw)]

    def clear(self) -> None:
        self._buffer.clear()


class KeyDecoder:
    """Key events -> outcomes: :meth:`feed` returns an outcome when a code ends, else None.

    After an error (unknown key, over-long input) the rest of that code is discarded up to the
    next Enter, so one bad scan costs one error, never a fragment taken for a code.
    """

    def __init__(
        self, reader: str, *, no_read: Iterable[str] = (), max_length: int = BARCODE_MAX_LENGTH
    ) -> None:
        self.reader = reader
        self.no_read = tuple(no_read)
        self.max_length = max_length
        self.caps_lock = False
        self._chars: list[str] = []
        self._discarding = False
        self._dropping = False  # after SYN_DROPPED, until the next SYN_REPORT
        self._held: set[int] = set()  # shift and other modifiers currently down

    @property
    def pending(self) -> str:
        """The characters typed since the last Enter (empty when discarding)."""
        return "".join(self._chars)

    @property
    def idle(self) -> bool:
        """True when no code is in progress (nothing typed, nothing being discarded)."""
        return not self._chars and not self._discarding

    def reset(self) -> None:
        """Forget the code in progress and the held keys (new connection)."""
        self._chars.clear()
        self._discarding = self._dropping = False
        self._held.clear()

    def feed(self, event: InputEvent) -> ReadOutcome | None:
        if event.type == EV_SYN:
            return self._syn(event.code)
        if self._dropping:
            return None
        if event.type == EV_LED and event.code == LED_CAPSL:
            self.caps_lock = bool(event.value)
        if event.type != EV_KEY:  # EV_MSC scan codes, other LEDs...: nothing typed
            return None
        if event.code in SHIFT_KEYS or event.code in OTHER_MODIFIERS:
            self._track_modifier(event.code, event.value)
            return None
        if event.value != 1:  # release, or autorepeat of a held key (see module docstring)
            return None
        return self._press(event.code)

    def abandon(self, why: str) -> ReaderProtocolError | None:
        """Drop a code that was never ended by Enter; the error says so (None if nothing pending)."""
        text, was_discarding = self.pending, self._discarding
        self._chars.clear()
        self._discarding = False
        if was_discarding or not text:
            return None  # its error was already reported
        return ReaderProtocolError(
            f"reader {self.reader!r} typed {text!r} but {why}; discarded. "
            "Is the scanner's suffix set to Enter?"
        )

    def _syn(self, code: int) -> ReadOutcome | None:
        if code == SYN_REPORT:
            self._dropping = False
            return None
        if code != SYN_DROPPED:
            return None
        # the kernel's buffer overflowed: keys were lost, the held-key state is unknown
        # and what follows may be the tail of a code: discard up to the next Enter
        text = self.pending
        self.reset()
        self._dropping = self._discarding = True
        return ReaderProtocolError(
            f"reader {self.reader!r}: the kernel dropped input events (buffer overrun) while "
            f"{text!r} was being typed; that code is discarded. Scan it again"
        )

    def _track_modifier(self, code: int, value: int) -> None:
        if value == 0:
            self._held.discard(code)
        else:
            self._held.add(code)

    def _press(self, code: int) -> ReadOutcome | None:
        if code in ENTER_KEYS:
            return self._end_code()
        if code == KEY_CAPSLOCK:
            self.caps_lock = not self.caps_lock
            return None
        if code in IGNORED_KEYS or self._discarding:
            return None
        chars = KEYMAP.get(code)
        modifiers = self._held & OTHER_MODIFIERS
        if chars is None or modifiers:
            held = "".join(f"{key_name(m)}+" for m in sorted(modifiers))
            return self._fail(
                f"reader {self.reader!r} sent {held}{key_name(code)}, which is not a character of a "
                f"US keyboard wedge, after {self.pending!r}; the code is discarded up to the next Enter. "
                "Configure the scanner for a US keyboard, without control characters or Alt mode"
            )
        shifted = bool(self._held & SHIFT_KEYS)
        if code in LETTER_KEYS:
            shifted ^= self.caps_lock
        if len(self._chars) >= self.max_length:
            return self._fail(
                f"reader {self.reader!r} typed more than {self.max_length} characters without Enter "
                f"(starts with {self.pending[:40]!r}); discarded up to the next Enter. "
                "Is the scanner's suffix set to Enter?"
            )
        self._chars.append(chars[1] if shifted else chars[0])
        return None

    def _fail(self, message: str) -> ReaderProtocolError:
        self._chars.clear()
        self._discarding = True
        return ReaderProtocolError(message)

    def _end_code(self) -> ReadOutcome | None:
        text, was_discarding = self.pending, self._discarding
        self._chars.clear()
        self._discarding = False
        if was_discarding:
            return None  # the error for this code was already returned
        raw = text.encode("ascii")  # the keymap types ASCII only
        try:
            code = validate_barcode(text, no_read=self.no_read)
        except NoReadError as exc:
            return NoReadError(f"reader {self.reader!r} typed a no-read ({text!r}): {exc}", raw=raw)
        except InvalidBarcodeError as exc:
            return InvalidBarcodeError(
                f"reader {self.reader!r} typed {text!r}, not a barcode: {exc}", raw=raw
            )
        return BarcodeRead(reader=self.reader, barcode=code, raw=raw, received_at=datetime.now(UTC))
