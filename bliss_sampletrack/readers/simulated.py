"""``SimulatedReader``: a simulated device on a real loopback socket plus the real driver for it.

For the demo, the tests and the benchmarks, configured in beacon YAML like any reader::

    - name: bcr
      plugin: bliss
      package: bliss_sampletrack.readers
      class: SimulatedReader
      family: keyence          # keyence | dataman | microscan | generic
      present: LYS-0042        # the code in front of the reader (omit: nothing, so no-reads)

The driver talks to the simulator over TCP with the family's real framing, so everything but
the hardware is exercised. Steer it with :meth:`present`, :meth:`remove` and ``simulator``.
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
from bliss_sampletrack.readers.line_reader import LineReader
from bliss_sampletrack.readers.simulators.devices import NO_READ, Behaviour
from bliss_sampletrack.readers.simulators.server import ReaderSimulator
from bliss_sampletrack.readers.transports import TcpTransport

DIALECTS: dict[str, Dialect] = {
    "keyence": KeyenceDialect(),
    "dataman": DataManDialect(),
    "microscan": MicroscanDialect(),
    "generic": GenericDialect(trigger=b"T\r\n"),
}
SIMULATOR_OPTIONS: dict[str, dict[str, object]] = {"generic": {"trigger": b"T"}}


class SimulatedReader(LineReader):
    """A reader family's simulator and its driver, in one BLISS object."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ReaderConfig(name, config)
        cfg.check_known({"family", "port", "present", "delay", "ack", "timeout"})
        family = cfg.get("family", str, "keyence")
        if family not in DIALECTS:
            raise cfg.error("family", f"must be one of {sorted(DIALECTS)}, got {family!r}")
        present = cfg.get("present", str, None)
        behaviour = Behaviour(
            default=present if present is not None else NO_READ,
            delay=cfg.get("delay", float, 0.0),
            ack=cfg.get("ack", bool, False),
        )
        self.simulator = ReaderSimulator(
            family, port=cfg.get("port", int, 0), behaviour=behaviour, **SIMULATOR_OPTIONS.get(family, {})
        ).start()
        super().__init__(
            name,
            TcpTransport(name, self.simulator.host, self.simulator.port),
            DIALECTS[family],
            timeout=cfg.positive("timeout", 3.0),
        )

    def present(self, code: str) -> None:
        """Put a sample with this code in front of the reader (answered until :meth:`remove`)."""
        self.simulator.behaviour.default = code

    def remove(self) -> None:
        """Nothing in front of the reader: triggers answer the family's no-read."""
        self.simulator.behaviour.default = NO_READ

    def close(self) -> None:
        super().close()
        self.simulator.stop()

    def __info__(self) -> str:
        default = self.simulator.behaviour.default
        shown = "nothing (no-read)" if default is NO_READ else repr(default)
        return super().__info__() + f"\n  simulating : {self.simulator.model.family}, presenting {shown}"
