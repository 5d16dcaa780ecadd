"""Device models of the simulated readers: what each family answers to what, on the wire.

A model is pure I/O-wise: it parses received bytes into commands and says which bytes to send
back (it keeps the little state a real reader keeps: its settings, its response counter).
:mod:`~bliss_sampletrack.readers.simulators.server` puts a model behind a real TCP server or a
pseudo-terminal. Results come from a :class:`Behaviour` that tests and the demo steer.

Model options (keywords of ``ReaderSimulator(family, ...)`` / ``SerialSimulator(family, ...)``);
the defaults are the factory defaults, which is what the simulators always did:

- ``KeyenceModel(framing="cr" | "stx_etx")``: the SR series' header/terminator setting. ``"cr"``:
  no header, CR; ``"stx_etx"``: STX (0x02) header, ETX (0x03) terminator. Read data (codes, the
  ``ERROR`` no-read) is framed with the setting; commands are accepted in either form and every
  response to a command (``OK,LON``, ``ER,LON,14``...) has the header and terminator of that
  command. An LF after a command's terminator is ignored; an ESC (0x1b) clears what was received
  before it. ``LON`` may carry a bank number (``LON,02``).
- ``DataManModel(response_mode="silent" | "extended", header="full" | "id" | "bare" | "colons")``:
  DMCC ``COM.DMCC-RESPONSE`` and the response header form. Silent: bare data / no-read, no
  responses to commands. Extended: every command gets a response line
  ``<header>[<status>]<payload>\\r\\n`` (0 OK, 100-105 errors), a trigger's result is
  ``<header>[0]<data>\\r\\n`` (the no-read: ``<header>[0]NOREAD``), an unsolicited result (``push``)
  has status 1. Headers: ``full`` ``||<checksum>:<id>``, ``id`` ``||<id>``, ``bare`` ``||``,
  ``colons`` ``||:::<n>`` (n counts the response lines sent, from 1). ``<id>`` is the
  command-id the command carried, else the response count; ``<checksum>`` the command's
  checksum type (0 if none). A command sent with checksum type 1 is checked (103 when wrong) and
  answered with the XOR byte before the footer. ``SET COM.DMCC-RESPONSE 0|1`` switches the mode
  as on the device (the response to it is in the new mode); ``GET`` returns what ``SET`` stored.
- ``MicroscanModel(trigger_char=b" ", framing="crlf" | "stx_etx")`` (MS-3: GS, b"\\x1d"):
  preamble/postamble of the data: ``"crlf"`` no preamble, postamble CR LF; ``"stx_etx"``
  preamble STX, postamble ETX.
- ``GenericModel(terminator=b"\\r\\n", trigger=b"T", no_read=b"NOREAD", header=b"", stop=None)``:
  ``header`` starts every answer (and is stripped from a received command that starts with it);
  ``stop``: a stop command, which answers a pending read like the Keyence ``LOFF``.

Answers (``Behaviour.answers`` / ``default``, or ``queue()``): a code (str); raw ``bytes`` (sent as
given); :data:`NO_READ`; :data:`SILENCE` (the trigger is heard, acknowledged if the model
acknowledges, and never answered: a stop finds nothing pending); :data:`LOST` (the trigger never
reached the reader: no acknowledgement, no answer, a stop finds nothing pending);
:class:`CommandError` (alias :data:`KeyenceError`: the trigger is refused, Keyence
``ER,LON,<code>``, DataMan extended ``<header>[<code>]``, silent DataMan: nothing); :class:`Late`
(wraps an answer: it comes after ``delay`` even if a stop arrived); :class:`PowerCut`.

``Behaviour`` fields: ``delay`` (decoding time; the answer is *pending* meanwhile, and a stop
command (Keyence ``LOFF``, DataMan ``TRIGGER OFF``) answers a pending read with the no-read at
once and cancels it), ``ack`` (Keyence ``OK,<cmd>`` responses), ``late`` (every answer is late,
see :class:`Late`), ``split``/``split_gap`` (send each answer in chunks of ``split`` bytes,
``split_gap`` s apart), ``merge`` (hold an answer and send it with the next one, in one segment),
``junk`` (a line of these bytes, framed like data, sent just before the next answer; one-shot).
"""

from __future__ import annotations

import logging
import re
from collections import deque
from dataclasses import dataclass, field
from functools import reduce

log = logging.getLogger(__name__)

STX, ETX, CR, LF, ESC = b"\x02", b"\x03", b"\r", b"\n", b"\x1b"

#: a code to answer, or one of these markers
NO_READ = object()  # the family's no-read answer
SILENCE = object()  # heard, never answered (the read times out); a stop finds nothing pending
LOST = object()  # the trigger never reached the reader: no ack, no answer, nothing pending


@dataclass(frozen=True)
class PowerCut:
    """An answer that is a power cut: send ``partial`` (the start of a frame, no terminator), then
    the device dies on the spot (silent, see ``power_cut()``); ``vanish_after`` seconds later, if
    given, it vanishes altogether (``power_off()``: connections closed, tty unplugged)."""

    partial: bytes = b""
    vanish_after: float | None = None


@dataclass(frozen=True)
class CommandError:
    """The trigger refused with this error code, sent at once (it is the command's response, not
    a read result: no decoding delay, nothing pending). Keyence: ``ER,LON,<code>`` framed like
    the command (SR-750 Series User's Manual, 8-2 "Operation commands", p. 72: "Abnormal process
    ER, LON, ee  ee: Error code"); DataMan extended mode: the status ``<header>[<code>]``; silent
    DataMan: nothing ("Invalid commands are ignored without feedback", see :class:`DataManModel`).
    Microscan and generic readers have no such answer (``queue`` refuses it)."""

    code: str

    def __post_init__(self) -> None:
        if not self.code.isdigit():
            raise ValueError(f"a command error code is digits, got {self.code!r}")


KeyenceError = CommandError


@dataclass(frozen=True)
class Late:
    """An answer that comes after ``delay`` even if a stop command arrives first (the decode was
    over, the answer on its way): the stop finds nothing pending, so it sends no no-read."""

    answer: object


@dataclass
class Behaviour:
    """What the simulated device does at its next triggers (shared by all its connections)."""

    # str codes, NO_READ, SILENCE, LOST, CommandError, Late, PowerCut, or bytes (raw)
    answers: deque[object] = field(default_factory=deque)
    default: object = NO_READ  # when ``answers`` is empty: nothing in front of the reader
    delay: float = 0.0  # seconds between trigger and answer (decoding time): the read is pending
    ack: bool = False  # Keyence models that acknowledge: OK,LON
    late: bool = False  # every answer comes after ``delay`` even if a stop arrived (see Late)
    split: int | None = None  # send each answer in chunks of this many bytes...
    split_gap: float = 0.0  # ... this many seconds apart (an answer can straddle a timeout)
    merge: bool = False  # hold an answer, send it with the next one in one segment
    junk: bytes | None = None  # a line of these bytes, framed like data, just before the next answer

    def next_answer(self) -> object:
        return self.answers.popleft() if self.answers else self.default


class Command(bytes):
    """A received command: its body (header and terminator removed), how it was ``framed``, and
    ``raw``: the body as it came, with the ESC that preceded it (what ``commands`` records)."""

    framing: str
    raw: bytes

    def __new__(cls, body: bytes, framing: str = "", raw: bytes | None = None) -> Command:
        command = super().__new__(cls, body)
        command.framing = framing
        command.raw = body if raw is None else raw
        return command


def xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


class DeviceModel:
    """Base: commands are terminator-ended lines; answers are ``header + data + terminator``."""

    family = "generic"
    header = b""
    terminator = b"\r\n"
    no_read = b"NOREAD"
    triggers: tuple[bytes, ...] = ()
    stops: tuple[bytes, ...] = ()
    supports_command_error = False

    def split_commands(self, buffer: bytearray) -> list[bytes]:
        commands: list[bytes] = []
        while (end := buffer.find(self.terminator)) >= 0:
            body = bytes(buffer[:end])
            del buffer[: end + len(self.terminator)]
            if self.header and body.startswith(self.header):
                body = body[len(self.header) :]
            commands.append(Command(body))
        return commands

    def is_trigger(self, command: bytes) -> bool:
        return command in self.triggers

    def is_stop(self, command: bytes) -> bool:
        return command in self.stops

    def frame(self, payload: bytes) -> bytes:
        """``payload`` framed as the device frames its data (what junk lines are framed with)."""
        return self.header + payload + self.terminator

    def answer(self, result: object, command: bytes | None = None) -> bytes:
        """The bytes sent for a trigger's result (a code, NO_READ, CommandError or raw bytes);
        ``command``: the trigger it answers (None: an unsolicited result)."""
        if result is NO_READ:
            return self.frame(self.no_read)
        if isinstance(result, bytes):
            return result  # raw: garbage, partial lines... sent as given
        if isinstance(result, CommandError):
            return self.command_error(result.code, command)
        return self.frame(str(result).encode("ascii", "replace"))

    def command_error(self, code: str, command: bytes | None) -> bytes:
        raise ValueError(f"{self.family} readers have no command-error answer")

    def reply(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        """Immediate replies to a non-trigger command (acks, errors; for a stop, before its no-read)."""
        return []

    def trigger_ack(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        return []


# KEYENCE SR-750 Series User's Manual, 8-1 "Details of Command Communication" > "Command
# Communication Format" > "Header and Terminator" (p. 71): "There are two types of header and
# terminator [...] Use either of them": none + CR, or STX + ETX; "Responses are sent with the same
# header and terminator of the corresponding send command"; "LF is appended at the end of the
# command. However, LF will not be added to the response"; "If ESC is appended at the beginning of
# the command, the ESC will clear the receive buffer". (The SR-1000 manual itself is not in the
# searchable copies; the SR-750 one documents the same SR command set, LON/LOFF, OK/ER.)
_KEYENCE_FRAMINGS = {"cr": (b"", CR), "stx_etx": (STX, ETX)}


class KeyenceModel(DeviceModel):
    family = "keyence"
    terminator = CR
    no_read = b"ERROR"
    triggers = (b"LON",)
    stops = (b"LOFF",)
    supports_command_error = True
    _known = {b"LON", b"LOFF", b"BLOAD", b"TUNE", b"RESET"}

    def __init__(self, framing: str = "cr") -> None:
        if framing not in _KEYENCE_FRAMINGS:
            raise ValueError(f"Keyence framing must be one of {sorted(_KEYENCE_FRAMINGS)}, got {framing!r}")
        self.framing = framing
        self.header, self.terminator = _KEYENCE_FRAMINGS[framing]  # the data's framing

    def split_commands(self, buffer: bytearray) -> list[bytes]:
        """Commands in either form (none + CR, or STX + ETX); ESC clears what came before it."""
        commands: list[bytes] = []
        escaped = b""  # the ESC just before the command, kept in its ``raw``
        while buffer:
            while buffer[:1] == LF:  # the LF allowed after a command's terminator
                del buffer[:1]
            framing = "stx_etx" if buffer[:1] == STX else "cr"
            start = len(STX) if framing == "stx_etx" else 0
            end = buffer.find(_KEYENCE_FRAMINGS[framing][1], start)
            esc = buffer.find(ESC)
            if esc >= 0 and (end < 0 or esc < end):
                del buffer[: esc + 1]  # ESC: the receive buffer is cleared
                escaped = ESC
                continue
            if end < 0:
                break
            body = bytes(buffer[start:end])
            commands.append(Command(body, framing, escaped + body))
            escaped = b""
            del buffer[: end + 1]
        buffer[:0] = escaped  # a command still to come: keep its ESC (harmless: it clears nothing)
        return commands

    def _name(self, command: bytes | None) -> bytes:
        return (b"LON" if command is None else command).split(b",")[0]

    def is_trigger(self, command: bytes) -> bool:
        return self._name(command) in self.triggers  # LON or LON,<bank>

    def is_stop(self, command: bytes) -> bool:
        return self._name(command) in self.stops

    def _respond(self, command: bytes | None, text: bytes) -> bytes:
        framing = getattr(command, "framing", "") or self.framing
        header, terminator = _KEYENCE_FRAMINGS[framing]
        return header + text + terminator

    def command_error(self, code: str, command: bytes | None) -> bytes:
        return self._respond(command, b"ER," + self._name(command) + b"," + code.encode())

    def trigger_ack(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        # SR-750 manual p. 72: "Response is output upon receiving a send command" (OK,LON);
        # not sent when "Specify response character" is "SR-600 compatible": ``ack`` off
        return [self._respond(command, b"OK," + self._name(command))] if behaviour.ack else []

    def reply(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        # LOFF with nothing pending: the ack only, when acknowledging. (The SR-750 manual, p. 72,
        # says a LOFF after a successful single read gets "the response indicating the abnormal
        # process", ER,LOFF,ee, with no code given: not modelled.)
        name = self._name(command)
        if name not in self._known:
            return [self._respond(command, b"ER," + name[:16] + b",00")]  # 00: undefined command
        return [self._respond(command, b"OK," + name)] if behaviour.ack else []


# Cognex DataMan Communications and Programming Guide, "DataMan Application Development > DMCC
# Overview > Command Syntax" and "Reader Response" (manualslib "Cognex DataMan Communications And
# Programming Manual" pp. 18-19; docs.cognex.com dmst_2310 Comms_Prog_Manual CommandSyntax.htm):
# command header ``||checksum:command-id>``, footer CR LF, checksum 1 = "last byte before footer
# is XOR of bytes"; "Silent: (0, Default) No response will be sent from the reader. Invalid
# commands are ignored without feedback"; "Extended: (1) The reader responds with a header data
# footer block similar to the command format. ||checksum:command-id[status]", "The response uses
# the same checksum format as the command", "The command-id sent to the reader is returned in the
# response header"; status 0 no error, 1 reader initiated read-string, 100 unidentified error,
# 101 command invalid, 102 parameter invalid, 103 checksum incorrect, 104 parameter rejected/
# altered due to reader state, 105 reader unavailable.
# COM.DMCC-HEADER and its forms: no manual page found (only the setting's name, in third-party
# lists of DMCC settings); the forms "id", "bare" and "colons" are modelled as the issue describes
# them. NB: the Cognex DataMan SDK's DmccParser (a public decompiled copy) reads a response header
# as ``||[checksum][:[command-id][:[response-id]]][status]``: a response id after *two* colons
# (``||::1[0]``), and a lone number after ``||`` as the checksum type.
# TRIGGER OFF answering a pending read with the no-read: no manual page found; modelled as the
# issue describes it (as the Keyence LOFF does per its manual).
DATAMAN_HEADERS = ("full", "id", "bare", "colons")
_DATAMAN_ACTIONS = {b"BEEP", b"CONFIG.SAVE", b"CONFIG.RESTORE", b"CONFIG.DEFAULT", b"REBOOT", b"DMCC.SAVE"}


class DataManModel(DeviceModel):
    family = "dataman"
    terminator = b"\r\n"
    no_read = b"NOREAD"
    supports_command_error = True
    _command = re.compile(rb"^\|\|(\d*)(?::(\d*))?>(.*)$", re.DOTALL)

    def __init__(self, response_mode: str = "silent", header: str = "full") -> None:
        if response_mode not in ("silent", "extended"):
            raise ValueError(f"DataMan response_mode must be 'silent' or 'extended', got {response_mode!r}")
        if header not in DATAMAN_HEADERS:
            raise ValueError(f"DataMan header must be one of {DATAMAN_HEADERS}, got {header!r}")
        self.response_mode = response_mode
        self.header_form = header
        self.responses = 0  # response lines sent in extended mode (the "colons" form's counter)
        self.settings: dict[bytes, bytes] = {}

    @property
    def extended(self) -> bool:
        return self.response_mode == "extended"

    def _parse(self, command: bytes) -> tuple[bytes, bytes, bytes, bool] | None:
        """(checksum type, command-id, verb, checksum ok) of a DMCC command, None if not one."""
        match = self._command.match(command)
        if not match:
            return None
        checksum, command_id, rest = match.group(1), match.group(2) or b"", match.group(3)
        ok = True
        if checksum == b"1":  # the last byte before the footer is the XOR of the bytes before it
            ok = len(rest) > 0 and xor(command[:-1]) == command[-1]
            rest = rest[:-1]
        return checksum, command_id, rest.strip(), ok

    def _verb(self, command: bytes) -> bytes:
        parsed = self._parse(command)
        return parsed[2].upper() if parsed and parsed[3] else b""

    def is_trigger(self, command: bytes) -> bool:
        return self._verb(command) == b"TRIGGER ON"

    def is_stop(self, command: bytes) -> bool:
        return self._verb(command) == b"TRIGGER OFF"

    def _line(self, status: int, payload: bytes, command: bytes | None) -> bytes:
        """One extended-mode response line answering ``command`` (None: reader initiated)."""
        self.responses += 1
        parsed = self._parse(command) if command is not None else None
        checksum, command_id = (parsed[0], parsed[1]) if parsed else (b"", b"")
        command_id = command_id or str(self.responses).encode()
        heads = {
            "full": b"||" + (checksum or b"0") + b":" + command_id,
            "id": b"||" + command_id,
            "bare": b"||",
            "colons": b"||:::" + str(self.responses).encode(),
        }
        line = heads[self.header_form] + b"[%d]" % status + payload
        if checksum == b"1":
            line += bytes([xor(line)])
        return line + self.terminator

    def answer(self, result: object, command: bytes | None = None) -> bytes:
        if not self.extended or isinstance(result, bytes):
            if isinstance(result, CommandError):
                return b""  # silent: "Invalid commands are ignored without feedback"
            return super().answer(result, command)
        if result is NO_READ:
            return self._line(0, self.no_read, command)
        if isinstance(result, CommandError):
            return self._line(int(result.code), b"", command)
        # status 1 for an unsolicited result: "reader initiated read-string"
        return self._line(0 if command is not None else 1, str(result).encode("ascii", "replace"), command)

    def reply(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        parsed = self._parse(command)
        if parsed is None:
            return []  # not a DMCC command: ignored in both modes
        _checksum, _id, verb, checksum_ok = parsed
        if not checksum_ok:
            return [self._line(103, b"", command)] if self.extended else []
        if not self.extended and not verb.upper().startswith((b"SET", b"GET")):
            if verb.upper() == b"TRIGGER OFF" or verb.upper() in _DATAMAN_ACTIONS or not behaviour.ack:
                return []
            return [b"||[101]\r\n"]  # the former ``ack`` option of the silent model: "command invalid"
        status, payload = self._execute(verb)  # SET COM.DMCC-RESPONSE 0|1 may switch the mode...
        return [self._line(status, payload, command)] if self.extended else []  # ...answered in the new

    def _execute(self, verb: bytes) -> tuple[int, bytes]:
        """(status, payload) of a non-trigger command; SET/GET keep and return settings."""
        words = verb.split(maxsplit=2)
        name = words[0].upper() if words else b""
        if name == b"TRIGGER" and len(words) == 2 and words[1].upper() in (b"ON", b"OFF"):
            return 0, b""
        if name == b"GET":
            if len(words) != 2:
                return 102, b""
            key = words[1].upper()
            if key == b"COM.DMCC-RESPONSE":
                return 0, b"1" if self.extended else b"0"
            return 0, self.settings.get(key, b"")
        if name == b"SET":
            if len(words) != 3:
                return 102, b""
            key, value = words[1].upper(), words[2].strip()
            if key == b"COM.DMCC-RESPONSE":
                if value not in (b"0", b"1"):
                    return 102, b""
                self.response_mode = "extended" if value == b"1" else "silent"
            self.settings[key] = value
            return 0, b""
        if verb.upper() in _DATAMAN_ACTIONS:
            return 0, b""
        return 101, b""  # command invalid


# Microscan: preamble <K141,status,preamble> "Default: Disabled", characters "Default: ^M" (MS-1
# Scan Engine User Manual, "Preamble", p. 5-6); postamble <K142,status,postamble> "Default:
# Enabled", "^M^J" (MS-9 Scanner User's Manual, "Postamble", p. 3-16). Serial trigger character
# <K201>, delimited by < >: "Default: Space bar" on the current models (MS-4 Imager help file,
# "Serial Trigger"; Quadrus MINI Imager User's Manual, "Serial Trigger Character (Delimited)",
# p. 5-12; the same reader sold as Omron V430-F, manual Z392, p. 5-12), "Default: ^] (corresponds
# to <GS>)" on the older MS-3 (MS-3 Laser Scanner User's Manual, p. 4-11). Stop trigger character
# <K230> "Default: NUL (disabled)" (MS-1 manual, p. 6-12): no stop command by default, a
# trigger's answer always comes.
_MICROSCAN_FRAMINGS = {"crlf": (b"", b"\r\n"), "stx_etx": (STX, ETX)}


class MicroscanModel(DeviceModel):
    family = "microscan"
    terminator = b"\r\n"
    no_read = b"NOREAD"

    def __init__(self, trigger_char: bytes = b" ", framing: str = "crlf") -> None:
        if framing not in _MICROSCAN_FRAMINGS:
            raise ValueError(
                f"Microscan framing must be one of {sorted(_MICROSCAN_FRAMINGS)}, got {framing!r}"
            )
        self.trigger = b"<" + trigger_char + b">"
        self.framing = framing
        self.header, self.terminator = _MICROSCAN_FRAMINGS[framing]

    def split_commands(self, buffer: bytearray) -> list[bytes]:
        # host commands are delimited by < >, not by line terminators
        commands: list[bytes] = []
        while (start := buffer.find(b"<")) >= 0 and (end := buffer.find(b">", start)) >= 0:
            commands.append(Command(bytes(buffer[start : end + 1])))
            del buffer[: end + 1]
        if buffer.find(b"<") < 0:
            buffer.clear()
        return commands

    def is_trigger(self, command: bytes) -> bool:
        return command == self.trigger


class GenericModel(DeviceModel):
    """A configurable line device: no manual (it stands for any reader with a fixed ASCII line
    protocol); ``header`` starts every answer, ``stop`` answers a pending read like Keyence LOFF."""

    def __init__(
        self,
        terminator: bytes = b"\r\n",
        trigger: bytes | None = b"T",
        no_read: bytes = b"NOREAD",
        header: bytes = b"",
        stop: bytes | None = None,
    ) -> None:
        self.terminator = terminator
        self.no_read = no_read
        self.header = header
        self.triggers = (trigger,) if trigger else ()
        self.stops = (stop,) if stop else ()


def model_for(family: str, **options: object) -> DeviceModel:
    models: dict[str, type[DeviceModel]] = {
        "keyence": KeyenceModel,
        "dataman": DataManModel,
        "microscan": MicroscanModel,
        "generic": GenericModel,
    }
    if family not in models:
        raise ValueError(f"no simulator for reader family {family!r}; known: {sorted(models)}")
    return models[family](**options)  # type: ignore[arg-type]
