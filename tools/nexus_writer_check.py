#!/usr/bin/env python
"""Check the production writer on the test bed: one scan written by blisswriter's NexusWriter.

Starts beacon (with its Redis) and :class:`~bliss_sampletrack.testbed.nexus_writer.NexusWriterBed`
for the session (a Tango database, the NexusWriter device server), opens the BLISS session in
this process, sets ``SCAN_SAVING.writer = "nexus"``, runs ``loopscan(5, 0.01, <counter>)``,
waits until the writer marks the scan SUCCEEDED and closed the file, and reads ``/<n>.1`` back
with h5py. Prints the seconds each piece took to start and what the scan's entry holds (a
``sample`` group appears only when a sample tracker tags the scan), then checks that no process
it started is left. Exit code 0 when the scan was written, 1 when not, 2 when this stack has no
external writer (the reason is printed).

    .venv/bin/python tools/nexus_writer_check.py [--workdir DIR] [--session NAME] [--counter NAME]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("nexus_writer_check")

STARTUP_PIECES = ("tango_db", "registered", "writer_on")


def _say(message: str) -> None:
    print(f"[nexus-check] {message}", flush=True)


def _describe_entry(filename: str, scan_number: int) -> dict[str, Any]:
    import h5py

    entry_name = f"/{scan_number}.1"
    with h5py.File(filename, "r") as h5:  # the writer has closed it: a normal (locking) open is fine
        entry = h5[entry_name]
        groups = sorted(name for name, item in entry.items() if isinstance(item, h5py.Group))
        measurement = sorted(entry["measurement"]) if "measurement" in entry else []
        npoints = {name: len(entry["measurement"][name]) for name in measurement}
        status = entry["writer/status"][()]
        return {
            "entry": entry_name,
            "groups": groups,
            "measurement": npoints,
            "status": status.decode() if isinstance(status, bytes) else str(status),
            "title": str(entry["title"].asstr()[()]) if "title" in entry else None,
            "has_sample": "sample" in entry,
        }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(workdir: Path, session_name: str, counter_name: str, timeout: float) -> int:
    from bliss_sampletrack.testbed.session import import_bliss

    import_bliss()  # gevent monkey-patching first (and the BLISS 2.4 layer), see session.py

    from bliss_sampletrack.testbed.beacon import running_beacon
    from bliss_sampletrack.testbed.nexus_writer import NexusWriterBed, external_writer_unavailable_reason
    from bliss_sampletrack.testbed.session import open_session

    t0 = time.monotonic()
    reason = external_writer_unavailable_reason()
    _say(f"import check of the writer service: {time.monotonic() - t0:.2f} s")
    if reason:
        _say(f"no external writer on this stack: {reason}")
        return 2

    started: dict[str, int] = {}
    code = 1
    t0 = time.monotonic()
    with running_beacon(workdir / "beacon") as server:
        started["beacon-server"] = server.process.pid
        _say(f"beacon on {server.host}: {time.monotonic() - t0:.2f} s")
        with NexusWriterBed(server.host, session_name, workdir / "nexus-writer") as bed:
            started.update(bed.pids)
            for piece in STARTUP_PIECES:
                _say(f"{piece}: {bed.timings[piece]:.2f} s")
            total = sum(bed.timings[piece] for piece in STARTUP_PIECES)
            _say(f"total writer start-up: {total:.2f} s (TANGO_HOST={bed.tango_host})")
            os.environ.update(bed.client_env)  # BLISS finds the writer through the Tango database

            t0 = time.monotonic()
            session = open_session(server, session_name, workdir / "data")
            _say(f"session {session_name!r} set up: {time.monotonic() - t0:.2f} s")
            try:
                from bliss.common.scans import loopscan

                session.scan_saving.writer = "nexus"
                counter = session.env_dict[counter_name]
                t0 = time.monotonic()
                scan = loopscan(5, 0.01, counter)
                _say(f"loopscan(5, 0.01, {counter_name}) ran: {time.monotonic() - t0:.2f} s")
                info = scan.scan_info
                filename, scan_number = info["filename"], int(info["scan_nb"])
                waited = bed.wait_scan_written(filename, scan_number, timeout, scan_name=scan.identifier)
                state, why = bed.scan_state(scan.identifier)
                _say(f"writer SUCCEEDED and closed the file {waited:.2f} s after the scan ended")
                _say(f"writer's state of scan {scan.identifier!r}: {state} ({why})")
                entry = _describe_entry(filename, scan_number)
                _say(f"file {filename}, entry {entry['entry']} (title {entry['title']!r})")
                _say(f"  groups: {', '.join(entry['groups'])}")
                _say(f"  measurement: {entry['measurement']}")
                _say(f"  writer/status: {entry['status']}")
                _say(
                    f"  sample group: {'present' if entry['has_sample'] else 'absent'}"
                    + ("" if entry["has_sample"] else " (no sample tracker tags this session's scans)")
                )
                code = (
                    0
                    if entry["status"] == "SUCCEEDED" and all(n == 5 for n in entry["measurement"].values())
                    else 1
                )
            finally:
                session.close()
        _say(f"writer and Tango database stopped: {bed.timings['stopped']:.2f} s")
    left = {name: pid for name, pid in started.items() if _alive(pid)}
    if left:
        _say(f"LEFT RUNNING: {left}")
        code = 1
    else:
        _say(f"stopped; no process left (checked pids {sorted(started.values())})")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workdir", type=Path, help="folder for the servers' files, logs and data (default: new)"
    )
    parser.add_argument(
        "--session", default=None, help="BLISS session (default: the test bed's demo_session)"
    )
    parser.add_argument("--counter", default="diode", help="counter of the session to scan (default: diode)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the writer (default 60)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log the test bed at INFO level")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from bliss_sampletrack.testbed.config_tree import DEMO_SESSION

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nexus-writer-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    _say(f"working folder {workdir}")
    t0 = time.monotonic()
    code = run(workdir, args.session or DEMO_SESSION, args.counter, args.timeout)
    _say(f"{'OK' if code == 0 else 'FAILED'} in {time.monotonic() - t0:.2f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
