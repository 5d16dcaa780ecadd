"""Stand-in for ``blisswriter.mapping.publish``: the writer's metadata generators.

``bliss.scanning.writer.nexus`` registers them on the user scan meta; they fill the NEXUSWRITER
category of ``scan_info`` that the "hdf5" writer and ``Scan`` read (``["nexuswriter"]["devices"]``).
blisswriter 2.0.0's own ``blisswriter.nexus.publish`` cannot be imported with BLISS 2.4.0: it
names Mosca counter classes that no longer exist, and its auto-filter import pulls in ``gi``.
This copy keeps what a test bed needs: instrument name, master files, and device info for
sampling counters; every other counter is published as a generic detector.
"""

from __future__ import annotations

from typing import Any

from blisswriter.utils import config_utils, scan_utils, session_utils

CATEGORIES = ["NEXUSWRITER"]


def register_metadata_generators(user_scan_meta: Any) -> None:
    """Same registration as blisswriter's (``user_scan_meta``: ``bliss.scanning.scan_meta.ScanMeta``)."""
    user_scan_meta.add_categories(CATEGORIES)
    nexuswriter = user_scan_meta.nexuswriter
    nexuswriter.set("instrument_info", fill_instrument_info)
    nexuswriter.set("device_info", fill_device_info)
    nexuswriter.set("masterfiles", fill_masterfiles)


def fill_instrument_info(scan: Any) -> dict[str, Any]:
    short_name = config_utils.beamline(default="")
    short_name = session_utils.scan_saving_get("beamline", scan_saving=scan.scan_saving, default=short_name)
    name = config_utils.instrument(default=short_name)
    return {"instrument_info": {"name": name, "name@short_name": short_name}}


def fill_masterfiles(scan: Any) -> dict[str, Any]:
    if scan.scan_info["save"]:
        return {"masterfiles": scan_utils.session_master_filenames()}
    return {}


def fill_device_info(scan: Any) -> dict[str, Any]:
    from bliss import global_map  # imported when a scan runs, as blisswriter does

    devices: dict[str, dict[str, Any]] = {}
    for ctr in global_map.get_counters_iter():
        fullname = getattr(ctr, "fullname", None)
        if fullname is None:
            continue  # not a channel
        _add_counter(devices, fullname.replace(".", ":"), ctr, global_map.aliases.get_alias(ctr))
    return {"devices": devices}


def _add_counter(devices: dict[str, dict[str, Any]], fullname: str, ctr: Any, alias: str | None) -> None:
    from bliss.common.counter import SamplingCounter, SamplingMode

    if not isinstance(ctr, SamplingCounter):
        devices[fullname] = {"alias": alias} if alias else {}
        return
    # as blisswriter 2.0.0: the counter's value is the signal, extra channels per sampling mode
    info = {"type": "samplingcounter", "mode": ctr.mode.name}
    devices[fullname] = {"device_info": info, "device_type": "samplingcounter", "data_type": "signal"}
    suffixes = {
        SamplingMode.SAMPLES: ["samples"],
        SamplingMode.STATS: ["N", "std", "var", "min", "max", "p2v"],
    }
    for suffix in suffixes.get(ctr.mode, []):
        devices[f"{fullname}_{suffix}"] = {"device_info": info, "device_type": "samplingcounter"}
        if alias:
            devices[f"{fullname}_{suffix}"]["alias"] = f"{alias}_{suffix}"
    if alias:
        devices[fullname]["alias"] = alias
