"""Stand-in for ``blisswriter.mapping.devices`` and ``blisswriter.mapping.h5map``.

BLISS 2.4.0 imports these from an unreleased blisswriter; blisswriter 2.0.0 (PyPI) has the same
device functions under ``blisswriter.nexus``. Loaded lazily, when ``bliss.scanning.scan`` imports it.
"""

from __future__ import annotations

from typing import Any, NoReturn

# bliss.scanning.scan: per-channel HDF5 path published in each stream's definition
from blisswriter.nexus.devices import device_info as all_devices_info
from blisswriter.nexus.mapping import get_primary_dataset_path

__all__ = ["all_devices_info", "get_primary_dataset_path", "scan_info_to_h5map"]


def scan_info_to_h5map(scan_info: dict[str, Any], **options: Any) -> NoReturn:
    """The "mapping" writer's HDF5 layout, absent from blisswriter 2.0.0.

    ``Scan._generate_h5maps`` logs and ignores this error for every writer except "mapping"
    (the default "hdf5" writer lays out the file itself), so only ``writer = "mapping"`` fails.
    """
    raise NotImplementedError("blisswriter 2.0.0 has no scan_info_to_h5map: use the 'hdf5' writer")
