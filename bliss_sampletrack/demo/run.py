"""``sampletrack demo``: start beacon and Redis, open a real BLISS session headless, run a scan,
and say where its data is.

Everything runs on loopback from embedded defaults (``config_examples/demo_beamline``); the
servers stop when the demo ends or is interrupted, and the data folder is kept.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from bliss_sampletrack.testbed.beacon import running_beacon
from bliss_sampletrack.testbed.config_tree import DEMO_SESSION
from bliss_sampletrack.testbed.session import open_session

log = logging.getLogger(__name__)


def _progress(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def run_demo(workdir: Path | None = None, npoints: int = 10) -> Path:
    """Run the demo; returns the HDF5 file of its scan."""
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sampletrack-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    _progress(f"working folder {workdir}")
    _progress("starting beacon-server and its Redis on free loopback ports ...")
    with running_beacon(workdir / "beacon") as server:
        _progress(f"beacon ready at {server.host}; setting up BLISS session {DEMO_SESSION!r} ...")
        session = open_session(server, DEMO_SESSION, workdir / "data")
        try:
            from bliss.common.scans import loopscan

            env = session.env_dict
            _progress(f"running loopscan({npoints}, 0.01, diode, sim_gauss) ...")
            scan = loopscan(npoints, 0.01, env["diode"], env["sim_gauss"], save=True)
            filename = Path(scan.scan_info["filename"])
            scan_nb = scan.scan_info["scan_nb"]
        finally:
            session.close()
        _progress("stopping beacon-server and Redis ...")
    _summary(filename, scan_nb)
    return filename


def _summary(filename: Path, scan_nb: int) -> None:
    import h5py

    with h5py.File(filename, "r") as h5:
        entry = h5[f"{scan_nb}.1"]
        title = entry["title"][()].decode() if isinstance(entry["title"][()], bytes) else entry["title"][()]
        counters = sorted(entry["measurement"])
        npoints = len(entry["measurement/diode"])
    print()
    print(f"scan {scan_nb} ({title}): {npoints} points of {', '.join(counters)}")
    print(f"data file: {filename}")
    print(f"HDF5 entry: {filename}::/{scan_nb}.1")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="sampletrack demo", description=__doc__)
    parser.add_argument(
        "--workdir",
        type=Path,
        help="folder for the servers' files and the data (default: a new temporary folder)",
    )
    parser.add_argument("--npoints", type=int, default=10, help="points of the demo scan (default 10)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    run_demo(args.workdir, args.npoints)
    return 0
