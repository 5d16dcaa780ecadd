"""Gevent hub blocking and memory growth of the tracker over many mount/scan cycles.

Starts the test bed (beacon, Redis, the demo session) and, in this process (the BLISS session's):

1. N cycles (default 1,000; ``--quick`` 50) of ``tracker.mount(barcode)``, ``loopscan(1, 0, diode)``,
   ``tracker.unmount()``, while ``HubBlockProbe`` (a greenlet waking every millisecond) records the
   longest time the gevent hub was blocked. Target: < 5 ms. The same figure is also given for the
   mount/unmount calls alone (phase 2), to tell the tracker's share from BLISS's scan machinery.
2. M cycles (default 10,000; ``--quick`` 500) of mount/unmount without scans; the process RSS
   (``/proc/self/statm``) is read after a warm-up and at the end. Target: growth < 5 MB.

Usage: .venv/bin/python benchmarks/hub_block_cycles.py [--cycles 1000] [--mounts 10000] [--quick]
[--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_probe import HubBlockProbe

from bliss_sampletrack.testbed.beacon import running_beacon
from bliss_sampletrack.testbed.config_tree import DEMO_SESSION
from bliss_sampletrack.testbed.session import open_session

HUB_TARGET_MS = 5.0
RSS_TARGET_MB = 5.0
BARCODES = ("LYS-0001", "LYS-0002", "THA-0003")


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm`` (second field, in pages)."""
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def scan_cycles(tracker: Any, diode: Any, cycles: int) -> tuple[float, float, int]:
    """``cycles`` mount/loopscan/unmount rounds under the probe: (max block s, elapsed s, wakeups)."""
    from bliss.common.scans import loopscan

    start = time.perf_counter()
    with HubBlockProbe() as probe:
        for i in range(cycles):
            tracker.mount(BARCODES[i % len(BARCODES)])
            loopscan(1, 0, diode)
            tracker.unmount()
    return probe.max_block, time.perf_counter() - start, probe.wakeups


def mount_cycles(tracker: Any, cycles: int) -> tuple[int, int, float, float]:
    """``cycles`` mount/unmount rounds (after a warm-up): (RSS before, RSS after, max block s, elapsed s)."""
    warmup = max(cycles // 10, 50)
    for i in range(warmup):
        tracker.mount(BARCODES[i % len(BARCODES)])
        tracker.unmount()
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    with HubBlockProbe() as probe:
        for i in range(cycles):
            tracker.mount(BARCODES[i % len(BARCODES)])
            tracker.unmount()
    elapsed = time.perf_counter() - start
    gc.collect()
    return before, rss_bytes(), probe.max_block, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, help="mount/scan cycles (default 1,000; --quick 50)")
    parser.add_argument("--mounts", type=int, help="mount/unmount cycles (RSS; default 10,000; --quick 500)")
    parser.add_argument("--quick", action="store_true", help="50 scan cycles, 500 mount cycles")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    cycles = args.cycles or (50 if args.quick else 1000)
    mounts = args.mounts or (500 if args.quick else 10_000)

    work = Path(tempfile.mkdtemp(prefix="sampletrack-hub-"))
    try:
        with running_beacon(work / "beacon") as server:
            session = open_session(server, DEMO_SESSION, work / "data")
            try:
                from bliss.common.scans import loopscan
                from bliss.config.static import get_config

                diode = session.env_dict["diode"]
                tracker = get_config().get("tracker")
                if tracker.sample is not None:
                    tracker.unmount()
                for _ in range(3):  # warm-up: first scans open files, fill caches
                    loopscan(1, 0, diode)
                scan_block, scan_s, wakeups = scan_cycles(tracker, diode, cycles)
                rss_before, rss_after, mount_block, mount_s = mount_cycles(tracker, mounts)
            finally:
                session.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ms, mb = 1000.0, 1024.0 * 1024.0
    figures: dict[str, float | int] = {
        "scan_cycles": cycles,
        "mount_cycles": mounts,
        "hub_max_block_scan_cycles_ms": scan_block * ms,
        "hub_probe_wakeups": wakeups,
        "scan_cycle_ms": scan_s / cycles * ms,
        "hub_max_block_mount_only_ms": mount_block * ms,
        "mount_unmount_cycle_ms": mount_s / mounts * ms,
        "rss_before_mb": rss_before / mb,
        "rss_after_mb": rss_after / mb,
        "rss_growth_mb": (rss_after - rss_before) / mb,
        "hub_target_ms": HUB_TARGET_MS,
        "rss_target_mb": RSS_TARGET_MB,
    }
    hub_verdict = "PASS" if figures["hub_max_block_scan_cycles_ms"] < HUB_TARGET_MS else "FAIL"
    rss_verdict = "PASS" if figures["rss_growth_mb"] < RSS_TARGET_MB else "FAIL"
    print(f"hub block and memory over tracker cycles (demo session, {cycles} scan, {mounts} mount cycles)")
    print(
        f"  longest hub block, mount+loopscan(1,0)+unmount : "
        f"{figures['hub_max_block_scan_cycles_ms']:8.2f} ms"
        f"  target < {HUB_TARGET_MS:g} ms  {hub_verdict}  ({figures['scan_cycle_ms']:.1f} ms per cycle)"
    )
    print(
        f"  longest hub block, mount+unmount only          : {figures['hub_max_block_mount_only_ms']:8.2f} ms"
        f"  ({figures['mount_unmount_cycle_ms']:.2f} ms per cycle)"
    )
    print(
        f"  RSS growth over {mounts} mount/unmount cycles    : {figures['rss_growth_mb']:8.2f} MB"
        f"  target < {RSS_TARGET_MB:g} MB  {rss_verdict}"
        f"  ({figures['rss_before_mb']:.1f} -> {figures['rss_after_mb']:.1f} MB)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
