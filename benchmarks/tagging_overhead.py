"""Per-scan overhead of sample tagging: the same scan, same session, tracker on vs off.

Starts the test bed (beacon, Redis, the demo session), mounts a sample on the demo tracker and
runs the same saved ``loopscan`` with tagging on and off, interleaved (on, off, on, off...) so
that drifts of the machine hit both sides alike. Prints the median time of each and their ratio.
Target (issue 4): ratio <= 1.02.

Two scans are measured: ``loopscan(N, 0)`` (no counting time: the worst case, where the scan is
nothing but bookkeeping) and ``loopscan(N, 0.1)`` (a short counting scan, closer to real use).
Also printed: the time of the tag callable itself (the plugin's own code, without BLISS's writer).

``--writer nexus`` (default; the production path, judged against the target): scans are saved
by blisswriter's external NexusWriter (``testbed/nexus_writer.py``), as on a beamline;
``--writer hdf5``: by BLISS's in-process writer (its NXsample group written in this process).

Usage: .venv/bin/python benchmarks/tagging_overhead.py [--writer nexus|hdf5] [--scans 50] [--points 10]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from bliss_sampletrack.testbed.beacon import running_beacon
from bliss_sampletrack.testbed.config_tree import DEMO_SESSION
from bliss_sampletrack.testbed.nexus_writer import writer_for_session
from bliss_sampletrack.testbed.session import open_session

TARGET = 1.02


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scans", type=int, default=50, help="scans on each side (default 50)")
    parser.add_argument("--points", type=int, default=10, help="points per loopscan (default 10)")
    parser.add_argument("--writer", choices=("nexus", "hdf5"), default="nexus")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sampletrack-bench-"))
    with running_beacon(work / "beacon") as server, contextlib.ExitStack() as stack:
        if args.writer == "nexus":
            stack.enter_context(writer_for_session(server.host, DEMO_SESSION, work / "nexus_writer"))
        session = open_session(server, DEMO_SESSION, work / "data")
        session.scan_saving.writer = args.writer
        try:
            from bliss.common.scans import loopscan
            from bliss.config.static import get_config

            diode = session.env_dict["diode"]
            tracker = get_config().get("tracker")
            tracker.mount("LYS-0001")
            for _ in range(3):  # warm-up: first scans open files, fill caches
                loopscan(args.points, 0, diode)
            results = {}
            for count_time in (0.0, 0.1):
                timings: dict[bool, list[float]] = {True: [], False: []}
                for i in range(2 * args.scans):
                    tagged = i % 2 == 0
                    if tagged:
                        tracker.activate()
                    else:
                        tracker.close()
                    start = time.perf_counter()
                    scan = loopscan(args.points, count_time, diode)
                    timings[tagged].append(time.perf_counter() - start)
                    assert ("sample" in scan.scan_info) is tagged
                results[count_time] = timings
            tracker.activate()
            tagger = tracker._tagger
            calls = 10000
            start = time.perf_counter()
            for _ in range(calls):
                tagger.make_tag()
            callable_us = (time.perf_counter() - start) / calls * 1e6
            tracker.close()
        finally:
            session.close()

    figures: dict[str, object] = {
        "scans_each": args.scans,
        "points": args.points,
        "target": TARGET,
        "writer": args.writer,
    }
    figures["tag_callable_us"] = callable_us
    print(
        f"tagging overhead, writer {args.writer!r}: loopscan({args.points}, t), {args.scans} scans each "
        "side, interleaved"
    )
    for count_time, timings in results.items():
        on, off = statistics.median(timings[True]), statistics.median(timings[False])
        ratio = on / off
        figures[f"count_time_{count_time:g}"] = {"median_on_s": on, "median_off_s": off, "ratio": ratio}
        verdict = "PASS" if ratio <= TARGET else "FAIL"
        print(
            f"  count time {count_time:<4g} s: with {on * 1000:8.2f} ms, without {off * 1000:8.2f} ms, "
            f"ratio {ratio:6.4f} (target <= {TARGET}) {verdict}"
        )
    print(f"  the tag callable itself: {callable_us:.1f} us per call (twice per scan)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
