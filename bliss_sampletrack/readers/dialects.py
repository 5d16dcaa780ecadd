"""What each reader family says on the wire: trigger/stop commands, terminator, line meanings.

A dialect is pure: it classifies one received line (terminator removed). The engine in
:mod:`bliss_sampletrack.readers.line_reader` does the I/O.

- Keyence SR (SR-750/1000/2000/X): ``LON\\r`` triggers, ``LOFF\\r`` stops; data ends in CR;
  no-read ``ERROR``; command errors ``ER,<cmd>,<code>``; some models acknowledge ``OK,<cmd>``.
- Cognex DataMan, DMCC on the command port: ``||>TRIGGER ON\\r\\n``; in the default "silent"
  response mode the answer is the decoded data or the no-read string, CR LF terminated; in the
  "extended" mode answers carry a ``||<checksum>:<id>[<status>]`` header, status >= 100 an error.
- Microscan (serial): a delimited trigger character, ``<GS>`` by default (``<\\x1d>``); data
  with the default postamble CR LF; no-read ``NOREAD``.
- Generic line reader: configurable terminator, optional trigger/stop commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class LineKind(Enum):
    DATA = "data"  # a code (still to be validated)
    NOREAD = "noread"  # the reader says it read nothing
    ACK = "ack"  # acknowledgement of a command: not a result
    COMMAND_ERROR = "command_error"


@dataclass(frozen=True, slots=True)
class Classified:
    kind: LineKind
    payload: bytes  # the code for DATA; the line otherwise
    detail: str = ""


@dataclass(frozen=True)
class Dialect:
    """Line-based reader protocol. ``no_read`` lines are compared exactly after stripping."""

    family: str
    terminator: bytes
    trigger: bytes | None
    stop: bytes | None = None
    no_read: tuple[str, ...] = ("ERROR", "NOREAD")

    def classify(self, line: bytes) -> Classified:
        if line.strip().decode("ascii", "replace").upper() in {s.upper() for s in self.no_read}:
            return Classified(LineKind.NOREAD, line)
        return Classified(LineKind.DATA, line)


_KEYENCE_ERROR = re.compile(rb"^ER,([A-Z0-9]+),(\d+)$")
_KEYENCE_OK = re.compile(rb"^OK,([A-Z0-9]+)$")
KEYENCE_ERROR_CODES = {
    b"00": "undefined command",
    b"01": "command format mismatch",
    b"02": "parameter 1 out of range",
    b"03": "parameter 2 out of range",
    b"05": "bank/parameter out of range",
    b"11": "reading is not possible in this state (e.g. another read in progress)",
    b"14": "time-out of the read",
    b"99": "busy",
}


@dataclass(frozen=True)
class KeyenceDialect(Dialect):
    family: str = "Keyence SR"
    terminator: bytes = b"\r"
    trigger: bytes | None = b"LON\r"
    stop: bytes | None = b"LOFF\r"
    no_read: tuple[str, ...] = ("ERROR",)

    def classify(self, line: bytes) -> Classified:
        if match := _KEYENCE_ERROR.match(line):
            command, code = match.groups()
            meaning = KEYENCE_ERROR_CODES.get(code, "see the reader's manual")
            return Classified(
                LineKind.COMMAND_ERROR,
                line,
                f"{command.decode()} refused with code {code.decode()} ({meaning})",
            )
        if _KEYENCE_OK.match(line):
            return Classified(LineKind.ACK, line)
        return Dialect.classify(self, line)


_DMCC_HEADER = re.compile(rb"^\|\|(?:\d+:)?(\d*)\[(\d+)\](.*)$", re.DOTALL)
DMCC_STATUS = {
    b"100": "unidentified error",
    b"101": "command invalid",
    b"102": "parameter invalid",
    b"103": "checksum incorrect",
    b"104": "parameter rejected or altered due to reader state",
    b"105": "reader unavailable",
}


@dataclass(frozen=True)
class DataManDialect(Dialect):
    family: str = "Cognex DataMan"
    terminator: bytes = b"\r\n"
    trigger: bytes | None = b"||>TRIGGER ON\r\n"
    stop: bytes | None = b"||>TRIGGER OFF\r\n"
    no_read: tuple[str, ...] = ("NOREAD", "ERROR")

    def classify(self, line: bytes) -> Classified:
        if match := _DMCC_HEADER.match(line):  # extended response mode
            _id, status, data = match.groups()
            # compared as text: int() refuses over 4300 digits, and a line may be that long
            if len(status.lstrip(b"0")) >= 3:
                meaning = DMCC_STATUS.get(status, "see the DMCC reference")
                return Classified(LineKind.COMMAND_ERROR, line, f"DMCC status {status.decode()} ({meaning})")
            if not data:
                return Classified(LineKind.ACK, line)
            return Dialect.classify(self, data)
        return Dialect.classify(self, line)


@dataclass(frozen=True)
class MicroscanDialect(Dialect):
    family: str = "Microscan"
    terminator: bytes = b"\r\n"
    trigger: bytes | None = b"<\x1d>"  # delimited serial trigger, factory default <GS>
    stop: bytes | None = None
    no_read: tuple[str, ...] = ("NOREAD",)


@dataclass(frozen=True)
class GenericDialect(Dialect):
    family: str = "generic line reader"
    terminator: bytes = b"\r\n"
    trigger: bytes | None = None
    stop: bytes | None = None
