"""The line-based reader drivers as BLISS objects (``plugin: bliss``, ``Class(name, config)``).

Each is a :class:`~bliss_sampletrack.readers.line_reader.LineReader` with its family's dialect and
the YAML keys below (common to all: ``tcp``/``serial``, ``timeout`` 3 s, ``connect_timeout`` 3 s,
``no_read`` extra strings, ``max_line`` 256 bytes). Examples: ``config_examples/readers/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bliss_sampletrack.readers.config import ReaderConfig
from bliss_sampletrack.readers.dialects import (
    FRAMINGS,
    DataManDialect,
    Dialect,
    GenericDialect,
    KeyenceDialect,
    MicroscanDialect,
)
from bliss_sampletrack.readers.framing import DEFAULT_MAX_LINE
from bliss_sampletrack.readers.line_reader import LineReader

COMMON_KEYS = {"tcp", "serial", "timeout", "connect_timeout", "no_read", "max_line"}


def _init(
    reader: LineReader, name: str, cfg: ReaderConfig, dialect: Dialect, default_port: int | None
) -> None:
    max_line = cfg.get("max_line", int, DEFAULT_MAX_LINE)
    if max_line <= 0:  # checked before the transport is made: nothing to close on this error
        # with 0 or less every line the device sends would be refused as over-long
        raise cfg.error(
            "max_line",
            f"must be a positive number of bytes, the longest line the reader may send "
            f"(default {DEFAULT_MAX_LINE}), got {max_line!r}",
        )
    LineReader.__init__(
        reader,
        name,
        cfg.transport(default_port),
        dialect,
        no_read=cfg.string_list("no_read"),
        timeout=cfg.positive("timeout", 3.0),
        connect_timeout=cfg.positive("connect_timeout", 3.0),
        max_line=max_line,
    )


def _framing(cfg: ReaderConfig, allowed: tuple[str, ...]) -> str:
    """The ``framing`` key: one of ``allowed``, the first being the factory default."""
    framing = cfg.get("framing", str, allowed[0])
    if framing not in allowed:
        raise cfg.error(
            "framing",
            f"must be one of {', '.join(allowed)} (the reader's header/terminator setting; "
            f"default {allowed[0]}), got {framing!r}",
        )
    return framing


class KeyenceSR(LineReader):
    """Keyence SR-750/1000/2000/X: TCP (port 9004 by default) or serial; ``LON``/``LOFF``;
    ``framing``: ``cr`` (factory default: no header, CR) or ``stx_etx`` (the header/terminator
    setting STX + ETX), applied to commands and answers."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known(COMMON_KEYS | {"framing"})
        self.framing = _framing(cfg, ("cr", "stx_etx"))
        _init(self, name, cfg, KeyenceDialect.framed(self.framing), 9004)

    def _trigger_hint(self) -> str:
        return (
            f"Check that the reader's header/terminator setting is the 'framing: {self.framing}' of "
            f"{self.name!r} (cr: none + CR, the factory default; stx_etx: STX + ETX) and that a code "
            "is in its field of view"
        )


class CognexDataMan(LineReader):
    """Cognex DataMan on its DMCC command port (23 by default): ``||>TRIGGER ON``."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known(COMMON_KEYS)
        _init(self, name, cfg, DataManDialect(), 23)


class Microscan(LineReader):
    """Microscan over serial: delimited trigger character (``trigger_char``, default space, the
    factory default of the current models: MS-4 help "Serial Trigger", Quadrus MINI manual p. 5-12,
    ``<K201,...>``; the MS-3 defaults to GS, "\\x1d", manual p. 4-11); ``framing``: ``crlf``
    (factory default postamble CR LF) or ``stx_etx`` (preamble STX, postamble ETX)."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known(COMMON_KEYS | {"trigger_char", "framing"})
        char = cfg.text_bytes("trigger_char", b" ")
        if char is None or len(char) != 1 or char in b"<>":
            raise cfg.error("trigger_char", f"must be one ASCII character other than < and >, got {char!r}")
        self.trigger_char = char
        header, terminator = FRAMINGS[_framing(cfg, ("crlf", "stx_etx"))]
        dialect = MicroscanDialect(trigger=b"<" + char + b">", header=header, terminator=terminator)
        _init(self, name, cfg, dialect, None)

    def _trigger_hint(self) -> str:
        return (
            f"The serial trigger character sent was {self.trigger_char!r} (key 'trigger_char' of "
            f"{self.name!r}): it must be the reader's own (<K201>; a space on current models, GS "
            "'\\x1d' on the MS-3), and the reader must be in a Serial Data trigger mode"
        )


class GenericLineReader(LineReader):
    """Any reader that sends one code per line: ``terminator`` (default CR LF), ``header`` (what
    starts each line, e.g. "\\x02" for STX ... ETX framing; default none), optional
    ``trigger``/``stop`` commands sent as given (YAML escapes such as "\\r\\n" apply)."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known(COMMON_KEYS | {"terminator", "header", "trigger", "stop"})
        dialect = GenericDialect(
            terminator=cfg.text_bytes("terminator", b"\r\n") or b"\r\n",
            header=cfg.text_bytes("header", b"") or b"",
            trigger=cfg.text_bytes("trigger", None),
            stop=cfg.text_bytes("stop", None),
        )
        _init(self, name, cfg, dialect, None)
