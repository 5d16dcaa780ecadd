"""Device models of the simulated readers: what each family answers to what, on the wire.

A model is pure: it parses received bytes into commands and says which bytes to send back.
:mod:`~bliss_sampletrack.readers.simulators.server` puts a model behind a real TCP server or a
pseudo-terminal. Results come from a :class:`Behaviour` that tests and the demo steer.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

#: a code to answer, or one of these markers
NO_READ = object()  # the family's no-read answer
SILENCE = object()  # no answer at all (the read times out)


@dataclass(frozen=True)
class PowerCut:
    """An answer that is a power cut: send ``partial`` (the start of a frame, no terminator), then
    the device dies on the spot (silent, see ``power_cut()``); ``vanish_after`` seconds later, if
    given, it vanishes altogether (``power_off()``: connections closed, tty unplugged)."""

    partial: bytes = b""
    vanish_after: float | None = None


@dataclass
class Behaviour:
    """What the simulated device does at its next triggers (shared by all its connections)."""

    # str codes, NO_READ, SILENCE, PowerCut, or bytes (raw)
    answers: deque[object] = field(default_factory=deque)
    default: object = NO_READ  # when ``answers`` is empty: nothing in front of the reader
    delay: float = 0.0  # seconds between trigger and answer (decoding time)
    ack: bool = False  # Keyence models that acknowledge: OK,LON

    def next_answer(self) -> object:
        return self.answers.popleft() if self.answers else self.default


class DeviceModel:
    """Base: commands are terminator-ended lines."""

    family = "generic"
    terminator = b"\r\n"
    no_read = b"NOREAD"
    triggers: tuple[bytes, ...] = ()

    def split_commands(self, buffer: bytearray) -> list[bytes]:
        commands = []
        while (end := buffer.find(self.terminator)) >= 0:
            commands.append(bytes(buffer[:end]))
            del buffer[: end + len(self.terminator)]
        return commands

    def is_trigger(self, command: bytes) -> bool:
        return command in self.triggers

    def answer(self, result: object) -> bytes:
        """The bytes sent for a trigger's result (a code, NO_READ, or raw bytes)."""
        if result is NO_READ:
            return self.no_read + self.terminator
        if isinstance(result, bytes):
            return result  # raw: garbage, partial lines... sent as given
        return str(result).encode("ascii", "replace") + self.terminator

    def reply(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        """Immediate replies to a non-trigger command (acks, errors)."""
        return []

    def trigger_ack(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        return []


class KeyenceModel(DeviceModel):
    family = "keyence"
    terminator = b"\r"
    no_read = b"ERROR"
    triggers = (b"LON",)
    _known = {b"LON", b"LOFF", b"BLOAD", b"TUNE", b"RESET"}

    def trigger_ack(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        return [b"OK,LON\r"] if behaviour.ack else []

    def reply(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        name = command.split(b",")[0]
        if name not in self._known:
            return [b"ER," + name[:16] + b",00\r"]  # 00: undefined command
        return [b"OK," + name + b"\r"] if behaviour.ack else []


class DataManModel(DeviceModel):
    family = "dataman"
    terminator = b"\r\n"
    no_read = b"NOREAD"
    _command = re.compile(rb"^\|\|(?:(\d+):?(\d*))?>(.*)$")

    def is_trigger(self, command: bytes) -> bool:
        match = self._command.match(command)
        return bool(match) and match.group(3).strip().upper() == b"TRIGGER ON"

    def reply(self, command: bytes, behaviour: Behaviour) -> list[bytes]:
        match = self._command.match(command)
        if not match:
            return []  # silent response mode: invalid input is ignored
        verb = match.group(3).strip().upper()
        if verb == b"TRIGGER OFF":
            return []
        if verb.startswith((b"GET", b"SET")):
            return []
        return [] if not behaviour.ack else [b"||[101]\r\n"]  # extended mode: command invalid


class MicroscanModel(DeviceModel):
    family = "microscan"
    terminator = b"\r\n"
    no_read = b"NOREAD"

    def __init__(self, trigger_char: bytes = b"\x1d") -> None:
        self.trigger = b"<" + trigger_char + b">"

    def split_commands(self, buffer: bytearray) -> list[bytes]:
        # host commands are delimited by < >, not by line terminators
        commands = []
        while (start := buffer.find(b"<")) >= 0 and (end := buffer.find(b">", start)) >= 0:
            commands.append(bytes(buffer[start : end + 1]))
            del buffer[: end + 1]
        if buffer.find(b"<") < 0:
            buffer.clear()
        return commands

    def is_trigger(self, command: bytes) -> bool:
        return command == self.trigger


class GenericModel(DeviceModel):
    def __init__(
        self, terminator: bytes = b"\r\n", trigger: bytes | None = b"T", no_read: bytes = b"NOREAD"
    ) -> None:
        self.terminator = terminator
        self.no_read = no_read
        self.triggers = (trigger,) if trigger else ()


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
