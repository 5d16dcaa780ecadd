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


class KeyenceSR(LineReader):
    """Keyence SR-750/1000/2000/X: TCP (port 9004 by default) or serial; ``LON``/``LOFF``."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known(COMMON_KEYS)
        _init(self, name, cfg, KeyenceDialect(), 9004)


class CognexDataMan(LineReader):
    """Cognex DataMan on its DMCC command port (23 by default): ``||>TRIGGER ON``."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known(COMMON_KEYS)
        _init(self, name, cfg, DataManDialect(), 23)


class Microscan(LineReader):
    """Microscan over serial: delimited trigger character (``trigger_char``, default GS 0x1d)."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known(COMMON_KEYS | {"trigger_char"})
        char = cfg.text_bytes("trigger_char", b"\x1d")
        if char is None or len(char) != 1 or char in b"<>":
            raise cfg.error("trigger_char", f"must be one ASCII character other than < and >, got {char!r}")
        _init(self, name, cfg, MicroscanDialect(trigger=b"<" + char + b">"), None)


class GenericLineReader(LineReader):
    """Any reader that sends one code per line: ``terminator`` (default CR LF), optional
    ``trigger``/``stop`` commands sent as given (YAML escapes such as "\\r\\n" apply)."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known(COMMON_KEYS | {"terminator", "trigger", "stop"})
        dialect = GenericDialect(
            terminator=cfg.text_bytes("terminator", b"\r\n") or b"\r\n",
            trigger=cfg.text_bytes("trigger", None),
            stop=cfg.text_bytes("stop", None),
        )
        _init(self, name, cfg, dialect, None)
