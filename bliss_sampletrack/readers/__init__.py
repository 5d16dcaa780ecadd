"""Barcode readers behind one protocol (:class:`BarcodeReader`).

BLISS objects (``plugin: bliss``, ``package: bliss_sampletrack.readers``): ``KeyenceSR``,
``CognexDataMan``, ``Microscan``, ``GenericLineReader``, ``SimulatedReader``; the USB keyboard
wedge is ``bliss_sampletrack.readers.keyboard_wedge.KeyboardWedgeReader``.

May import: ``core``, ``config_node``, ``errors``; changers and the tracker import it.
"""

from bliss_sampletrack.readers.drivers import CognexDataMan, GenericLineReader, KeyenceSR, Microscan
from bliss_sampletrack.readers.line_reader import LineReader
from bliss_sampletrack.readers.protocol import BarcodeRead, BarcodeReader, ConnectionState, ReadOutcome
from bliss_sampletrack.readers.simulated import SimulatedReader

__all__ = [
    "BarcodeRead",
    "BarcodeReader",
    "CognexDataMan",
    "ConnectionState",
    "GenericLineReader",
    "KeyenceSR",
    "LineReader",
    "Microscan",
    "ReadOutcome",
    "SimulatedReader",
]
