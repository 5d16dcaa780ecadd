"""Gevent hub blocking and memory growth of the tracker over many mount/scan cycles.

Starts the test bed (beacon, Redis, the demo session) and, in this process (the BLISS session's):

1. N cycles (default 1,000; ``--quick`` 50) of ``tracker.mount(barcode)``, ``loopscan(1, 0, diode)``,
   ``tracker.unmount()``, while ``HubBlockProbe`` (a greenlet waking every millisecond) records the
   longest time the gevent hub was blocked. Target: < 5 ms. Each block is also charged to what was
   running (the tracker's mount/unmount calls, or the scan), and the same ``loopscan`` is run N/10
   times with the tracker off (``tracker.close()``): BLISS's own share, without the plugin.
2. M cycles (default 10,000; ``--quick`` 500) of mount/unmount without scans; the process RSS
   (``/proc/self/statm``) is read after a warm-up and at the end. Target: growth < 5 MB.

Growth: the mean time of a scan cycle after 1x, 10x and 100x the first window's scans (windows of
N/100 cycles ending at N/100, N/10 and N), and of a mount/unmount cycle after M/100, M/10 and M
cycles. Nothing delivers the events here, so the outbox backlog grows with the cycles too.

Writer: ``--writer nexus`` (default, as on a beamline): blisswriter's external NexusWriter
writes the files in its own process (``testbed/nexus_writer.py``), so this process's hub blocks
are BLISS's scan machinery and the plugin, without HDF5 writing; ``--writer hdf5``: BLISS's
in-process writer, whose HDF5 writes block this hub too. Runs are also timed in CPU time
(``hub_probe.py``: the wall clock counts the VM's own pauses, 5-20 ms here for an idle process).

Usage: .venv/bin/python benchmarks/hub_block_cycles.py [--writer nexus|hdf5] [--cycles 1000]
[--mounts 10000] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_probe import HubBlockProbe

from bliss_sampletrack.testbed.beacon import running_beacon
from bliss_sampletrack.testbed.config_tree import DEMO_SESSION
from bliss_sampletrack.testbed.nexus_writer import writer_for_session
from bliss_sampletrack.testbed.session import open_session

HUB_TARGET_MS = 5.0
RSS_TARGET_MB = 5.0
BARCODES = ("LYS-0001", "LYS-0002", "THA-0003")


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm`` (second field, in pages)."""
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def scan_cycles(tracker: Any, diode: Any, cycles: int) -> tuple[HubBlockProbe, list[float]]:
    """``cycles`` mount/loopscan/unmount rounds under the probe: (the probe, each cycle's seconds)."""
    from bliss.common.scans import loopscan

    durations = []
    with HubBlockProbe(trace=True) as probe:
        for i in range(cycles):
            start = time.perf_counter()
            probe.phase = "tracker"
            tracker.mount(BARCODES[i % len(BARCODES)])
            probe.phase = "scan"
            loopscan(1, 0, diode)
            probe.phase = "tracker"
            tracker.unmount()
            durations.append(time.perf_counter() - start)
    return probe, durations


def scans_without_tracker(tracker: Any, diode: Any, scans: int) -> float:
    """The longest hub block (s) over ``scans`` plain loopscans with the tracker off."""
    from bliss.common.scans import loopscan

    tracker.close()
    try:
        with HubBlockProbe() as probe:
            for _ in range(scans):
                loopscan(1, 0, diode)
    finally:
        tracker.activate()
    return probe.max_block


def mount_cycles(tracker: Any, cycles: int) -> tuple[int, int, float, list[float]]:
    """``cycles`` mount/unmount rounds (after a warm-up): (RSS before, after, max block s, durations)."""
    warmup = max(cycles // 10, 50)
    for i in range(warmup):
        tracker.mount(BARCODES[i % len(BARCODES)])
        tracker.unmount()
    gc.collect()
    before = rss_bytes()
    durations = []
    with HubBlockProbe() as probe:
        for i in range(cycles):
            start = time.perf_counter()
            tracker.mount(BARCODES[i % len(BARCODES)])
            tracker.unmount()
            durations.append(time.perf_counter() - start)
    gc.collect()
    return before, rss_bytes(), probe.max_block, durations


def growth(durations: list[float]) -> dict[str, float]:
    """Mean cycle time (ms) in windows of len/100 cycles ending at len/100, len/10 and len."""
    n = len(durations)
    window = max(n // 100, 1)
    ends = {"1x": max(n // 100, 1), "10x": max(n // 10, 1), "100x": n}
    return {scale: statistics.mean(durations[end - window : end]) * 1000.0 for scale, end in ends.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, help="mount/scan cycles (default 1,000; --quick 50)")
    parser.add_argument("--mounts", type=int, help="mount/unmount cycles (RSS; default 10,000; --quick 500)")
    parser.add_argument("--quick", action="store_true", help="50 scan cycles, 500 mount cycles")
    parser.add_argument("--writer", choices=("nexus", "hdf5"), default="nexus")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    cycles = args.cycles or (50 if args.quick else 1000)
    mounts = args.mounts or (500 if args.quick else 10_000)

    work = Path(tempfile.mkdtemp(prefix="sampletrack-hub-"))
    try:
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
                if tracker.sample is not None:
                    tracker.unmount()
                for _ in range(3):  # warm-up: first scans open files, fill caches
                    loopscan(1, 0, diode)
                probe, scan_durations = scan_cycles(tracker, diode, cycles)
                baseline_block = scans_without_tracker(tracker, diode, max(cycles // 10, 5))
                rss_before, rss_after, mount_block, mount_durations = mount_cycles(tracker, mounts)
            finally:
                session.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ms, mb = 1000.0, 1024.0 * 1024.0
    figures: dict[str, Any] = {
        "writer": args.writer,
        "scan_cycles": cycles,
        "mount_cycles": mounts,
        "hub_max_block_scan_cycles_ms": probe.max_block * ms,
        "hub_max_block_tracker_calls_ms": probe.max_by_phase.get("tracker", 0.0) * ms,
        "hub_max_block_scans_ms": probe.max_by_phase.get("scan", 0.0) * ms,
        "longest_run_tracker_code_ms": probe.longest_run.get("main:tracker", 0.0) * ms,
        "longest_run_tracker_code_without_gc_ms": probe.longest_run_without_gc.get("main:tracker", 0.0) * ms,
        # the tracker's calls and the greenlets its records run in (core/shield.complete)
        "longest_cpu_run_tracker_code_ms": max(
            (run for who, run in probe.longest_cpu_run.items() if who == "main:tracker" or "Tracker" in who),
            default=0.0,
        )
        * ms,
        "longest_cpu_run_any_ms": max(probe.longest_cpu_run.values(), default=0.0) * ms,
        "longest_run_scan_code_without_gc_ms": probe.longest_run_without_gc.get("main:scan", 0.0) * ms,
        "longest_runs_ms": {
            who: seconds * ms
            for who, seconds in sorted(probe.longest_run.items(), key=lambda item: -item[1])[:8]
        },
        "longest_gc_ms": {str(gen): seconds * ms for gen, seconds in sorted(probe.longest_gc.items())},
        "hub_max_block_scans_without_tracker_ms": baseline_block * ms,
        "hub_probe_wakeups": probe.wakeups,
        "scan_cycle_ms": sum(scan_durations) / cycles * ms,
        "hub_max_block_mount_only_ms": mount_block * ms,
        "mount_unmount_cycle_ms": sum(mount_durations) / mounts * ms,
        "rss_before_mb": rss_before / mb,
        "rss_after_mb": rss_after / mb,
        "rss_growth_mb": (rss_after - rss_before) / mb,
        "hub_target_ms": HUB_TARGET_MS,
        "rss_target_mb": RSS_TARGET_MB,
        "growth_scan_cycle_ms": growth(scan_durations),
        "growth_mount_cycle_ms": growth(mount_durations),
    }
    hub_verdict = "PASS" if figures["hub_max_block_scan_cycles_ms"] < HUB_TARGET_MS else "FAIL"
    rss_verdict = "PASS" if figures["rss_growth_mb"] < RSS_TARGET_MB else "FAIL"
    print(
        f"hub block and memory over tracker cycles (demo session, writer {args.writer!r}, {cycles} scan, "
        f"{mounts} mount cycles)"
    )
    print(
        f"  longest hub block, mount+loopscan(1,0)+unmount : "
        f"{figures['hub_max_block_scan_cycles_ms']:8.2f} ms"
        f"  target < {HUB_TARGET_MS:g} ms  {hub_verdict}  ({figures['scan_cycle_ms']:.1f} ms per cycle)"
    )
    print(
        "    of which during the tracker's calls          : "
        f"{figures['hub_max_block_tracker_calls_ms']:8.2f} ms"
        f"  target < {HUB_TARGET_MS:g} ms"
    )
    print(
        f"    of which during loopscan                     : {figures['hub_max_block_scans_ms']:8.2f} ms"
        f"  (the same loopscan, tracker off: {figures['hub_max_block_scans_without_tracker_ms']:.2f} ms)"
    )
    print(
        "    longest run of the tracker's own code        : "
        f"{figures['longest_run_tracker_code_ms']:8.2f} ms  target < {HUB_TARGET_MS:g} ms"
    )
    print(
        "      without garbage-collection pauses          : "
        f"{figures['longest_run_tracker_code_without_gc_ms']:8.2f} ms"
        f"  (the scan's main greenlet: {figures['longest_run_scan_code_without_gc_ms']:.2f} ms)"
    )
    print(
        "      in CPU time (preemption excluded)          : "
        f"{figures['longest_cpu_run_tracker_code_ms']:8.2f} ms"
        f"  (any greenlet, BLISS's included: {figures['longest_cpu_run_any_ms']:.2f} ms)"
    )
    longest = ", ".join(f"{who} {value:.1f}" for who, value in list(figures["longest_runs_ms"].items())[:5])
    print(f"    longest uninterrupted runs (ms)              : {longest}")
    collections = ", ".join(f"gen {gen} {value:.1f}" for gen, value in figures["longest_gc_ms"].items())
    print(f"    longest garbage collection (ms)              : {collections}")
    print(
        f"  longest hub block, mount+unmount only          : {figures['hub_max_block_mount_only_ms']:8.2f} ms"
        f"  ({figures['mount_unmount_cycle_ms']:.2f} ms per cycle)"
    )
    print(
        f"  RSS growth over {mounts} mount/unmount cycles    : {figures['rss_growth_mb']:8.2f} MB"
        f"  target < {RSS_TARGET_MB:g} MB  {rss_verdict}"
        f"  ({figures['rss_before_mb']:.1f} -> {figures['rss_after_mb']:.1f} MB)"
    )
    for label, key in (("scan cycle", "growth_scan_cycle_ms"), ("mount cycle", "growth_mount_cycle_ms")):
        values = figures[key]
        shown = " -> ".join(f"{values[scale]:.2f}" for scale in ("1x", "10x", "100x"))
        print(f"  {label} time after 1x -> 10x -> 100x cycles (ms)  : {shown}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
