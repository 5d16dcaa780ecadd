"""Barcode reader latency and gevent hub blocking, against the Keyence SR simulator on loopback.

Figures (targets from issue 3):
- push latency: from the simulator writing a code on its socket to the decoded ``BarcodeRead``
  reaching a ``stream()`` consumer in the driver; median and p99 over N codes (target p99 < 5 ms);
- triggered read: ``reader.read()`` round trip (LON sent, code back, decoded); median and p99;
- hub block: the longest time the gevent hub was blocked meanwhile (target < 5 ms), from a probe
  greenlet waking every millisecond.

Usage: .venv/bin/python benchmarks/reader_latency.py [--reads 1000] [--json FILE]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all(thread=False)  # as in a BLISS session

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_probe import HubBlockProbe  # noqa: E402

from bliss_sampletrack.readers import BarcodeRead, KeyenceSR  # noqa: E402
from bliss_sampletrack.readers.simulators.server import ReaderSimulator  # noqa: E402

TARGET_MS = 5.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def push_latencies(simulator: ReaderSimulator, reader: KeyenceSR, n: int) -> list[float]:
    arrived = gevent.event.AsyncResult()
    latencies: list[float] = []

    def follow() -> None:
        for outcome in reader.stream():
            if isinstance(outcome, BarcodeRead):
                arrived.set((outcome.barcode, time.perf_counter()))

    follower = gevent.spawn(follow)
    gevent.sleep(0.05)
    for i in range(n):
        code = f"BENCH-{i:05d}"
        arrived = gevent.event.AsyncResult()
        sent = time.perf_counter()
        simulator.push(code)
        barcode, received = arrived.get(timeout=5)
        assert barcode == code, (barcode, code)
        latencies.append(received - sent)
    follower.kill()
    return latencies


def read_latencies(simulator: ReaderSimulator, reader: KeyenceSR, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        simulator.queue(f"READ-{i:05d}")
        start = time.perf_counter()
        read = reader.read()
        latencies.append(time.perf_counter() - start)
        assert read.barcode == f"READ-{i:05d}"
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    simulator = ReaderSimulator("keyence").start()
    reader = KeyenceSR("bench", {"tcp": {"url": simulator.url}, "timeout": 5})
    reader.connect()
    with HubBlockProbe() as probe:
        pushes = push_latencies(simulator, reader, args.reads)
        reads = read_latencies(simulator, reader, args.reads)
    reader.close()
    simulator.stop()

    ms = 1000.0
    figures = {
        "reads": args.reads,
        "push_latency_median_ms": statistics.median(pushes) * ms,
        "push_latency_p99_ms": percentile(pushes, 0.99) * ms,
        "read_roundtrip_median_ms": statistics.median(reads) * ms,
        "read_roundtrip_p99_ms": percentile(reads, 0.99) * ms,
        "hub_max_block_ms": probe.max_block * ms,
        "hub_probe_wakeups": probe.wakeups,
    }
    rows = [
        ("push latency p99 (simulator write -> decoded)", figures["push_latency_p99_ms"], TARGET_MS),
        ("push latency median", figures["push_latency_median_ms"], None),
        ("triggered read round trip p99", figures["read_roundtrip_p99_ms"], None),
        ("triggered read round trip median", figures["read_roundtrip_median_ms"], None),
        ("longest gevent hub block", figures["hub_max_block_ms"], TARGET_MS),
    ]
    print(f"reader latency, Keyence SR simulator on loopback, {args.reads} codes each")
    print(f"{'figure':50} {'measured':>10} {'target':>10}  result")
    for label, value, target in rows:
        verdict = "" if target is None else ("PASS" if value < target else "FAIL")
        shown_target = "" if target is None else f"< {target:g} ms"
        print(f"{label:50} {value:8.3f} ms {shown_target:>10}  {verdict}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
