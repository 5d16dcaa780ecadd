"""Per-scan overhead of sample tagging: the same scan, same session, tracker on vs off.

Starts the test bed (beacon, Redis, the demo session), mounts a sample on the demo tracker and
runs the same saved ``loopscan`` with tagging on and off, interleaved (on, off, on, off...) so
that drifts of the machine hit both sides alike. Prints the median time of each and their ratio.
Target (issue 4): ratio <= 1.02.

Usage: .venv/bin/python benchmarks/tagging_overhead.py [--scans 50] [--points 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bliss_sampletrack.testbed.beacon import running_beacon
from bliss_sampletrack.testbed.config_tree import DEMO_SESSION
from bliss_sampletrack.testbed.session import open_session

TARGET = 1.02


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scans", type=int, default=50, help="scans on each side (default 50)")
    parser.add_argument("--points", type=int, default=10, help="points per loopscan (default 10)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sampletrack-bench-"))
    with running_beacon(work / "beacon") as server:
        session = open_session(server, DEMO_SESSION, work / "data")
        try:
            from bliss.common.scans import loopscan
            from bliss.config.static import get_config

            diode = session.env_dict["diode"]
            tracker = get_config().get("tracker")
            tracker.mount("LYS-0001")
            timings: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(3):  # warm-up: first scans open files, fill caches
                loopscan(args.points, 0, diode)
            for i in range(2 * args.scans):
                tagged = i % 2 == 0
                if tagged:
                    tracker.activate()
                else:
                    tracker.close()
                start = time.perf_counter()
                scan = loopscan(args.points, 0, diode)
                timings[tagged].append(time.perf_counter() - start)
                assert ("sample" in scan.scan_info) is tagged
            tracker.close()
        finally:
            session.close()

    on, off = statistics.median(timings[True]), statistics.median(timings[False])
    ratio = on / off
    figures = {
        "scans_each": args.scans,
        "points": args.points,
        "median_on_s": on,
        "median_off_s": off,
        "ratio": ratio,
        "target": TARGET,
    }
    print(f"tagging overhead: loopscan({args.points}, 0), {args.scans} scans each side, interleaved")
    print(f"  median with tracker    : {on * 1000:8.2f} ms")
    print(f"  median without tracker : {off * 1000:8.2f} ms")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"  ratio                  : {ratio:8.4f}  (target <= {TARGET})  {verdict}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
