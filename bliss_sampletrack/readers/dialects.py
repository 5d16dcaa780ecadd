"""What each reader family says on the wire: trigger/stop commands, terminator, line meanings.

A dialect is pure: it classifies one received line (terminator removed). The engine in
:mod:`bliss_sampletrack.readers.line_reader` does the I/O.

- Keyence SR (SR-750/1000/2000/X): ``LON`` triggers, ``LOFF`` stops; no-read ``ERROR``; command
  errors ``ER,<cmd>,<code>``; some models acknowledge ``OK,<cmd>``. Header/terminator setting:
  none + CR (factory default, ``framing: cr``) or STX + ETX (``framing: stx_etx``); "responses
  are sent with the same header and terminator as the command", so commands are framed the same
  way. Each command is preceded by ESC, which clears what the reader received before it (a
  partial command left by a previous session or a power cut). (SR-750 Series User's Manual,
  8-1 "Details of Command Communication", "Command Communication Format", p. 71: header/terminator
  none+CR or STX+ETX, responses with those of the command, an LF may follow the command's
  terminator and is not in the response, ESC first clears the receive buffer.)
- Cognex DataMan, DMCC on the command port: ``||>TRIGGER ON\\r\\n``; in the default "silent"
  response mode the answer is the decoded data or the no-read string, CR LF terminated; in the
  "extended" mode answers carry a header: ``||[<status>]``, ``||<id>[<status>]``,
  ``||<checksum>:<id>[<status>]``, or with unused fields left as colons (firmware 6.1:
  ``||:::<n>[<status>]``); status >= 100 an error. Any line starting with ``||`` is a response,
  never read data.
- Microscan (serial): a delimited trigger character (``trigger_char``: space by default, the
  factory default of the current models; older MS-3 readers default to GS); data with the
  postamble CR LF (``framing: crlf``) or preamble STX and postamble ETX (``framing: stx_etx``);
  no-read ``NOREAD``.
- Generic line reader: configurable terminator and header (e.g. STX ... ETX), optional
  trigger/stop commands.
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
    header: bytes = b""  # what starts every line the reader sends (STX for STX/ETX framing)

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


#: the framings a reader family can be set to: name -> (header, terminator)
FRAMINGS = {"cr": (b"", b"\r"), "crlf": (b"", b"\r\n"), "stx_etx": (b"\x02", b"\x03")}
ESC = b"\x1b"


@dataclass(frozen=True)
class KeyenceDialect(Dialect):
    family: str = "Keyence SR"
    terminator: bytes = b"\r"
    trigger: bytes | None = ESC + b"LON\r"
    stop: bytes | None = ESC + b"LOFF\r"
    no_read: tuple[str, ...] = ("ERROR",)

    @classmethod
    def framed(cls, framing: str = "cr") -> KeyenceDialect:
        """The dialect for the reader's header/terminator setting (``cr`` or ``stx_etx``)."""
        header, terminator = FRAMINGS[framing]
        return cls(
            terminator=terminator,
            header=header,
            trigger=ESC + header + b"LON" + terminator,
            stop=ESC + header + b"LOFF" + terminator,
        )

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


# every documented header form: ||[s], ||id[s], ||checksum:id[s], ||:::n[s] (unused fields as colons)
_DMCC_HEADER = re.compile(rb"^\|\|([0-9:]*)\[(\d+)\](.*)$", re.DOTALL)
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
        if line.startswith(b"||"):  # a response in a form this driver does not know: never data
            return Classified(
                LineKind.COMMAND_ERROR, line, "a DMCC response whose header this driver cannot parse"
            )
        return Dialect.classify(self, line)


@dataclass(frozen=True)
class MicroscanDialect(Dialect):
    family: str = "Microscan"
    terminator: bytes = b"\r\n"
    trigger: bytes | None = b"< >"  # delimited serial trigger, factory default <SP> (MS-3: <GS>)
    stop: bytes | None = None
    no_read: tuple[str, ...] = ("NOREAD",)


@dataclass(frozen=True)
class GenericDialect(Dialect):
    family: str = "generic line reader"
    terminator: bytes = b"\r\n"
    trigger: bytes | None = None
    stop: bytes | None = None
