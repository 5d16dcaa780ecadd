"""Growth: how the delivery and service figures change from 1x to 10x and 100x the work.

Three series, each measured at three sizes in one run (the same machine, minutes apart):

1. stored events in the tracking service (SQLite; default 10,000 / 100,000 / 1,000,000): the
   database is bulk-loaded up to each size (``service_benchmark.generate``: 30 beamlines, two
   years of mount/unmount pairs), then, over HTTP against ``sampletrack-service serve``: batch
   ingest rate (batches of 1000), ``GET /beamlines/{b}/mounted`` and
   ``GET /samples/{barcode}/history`` p99 (random keys);
2. history length of one sample (10 / 100 / 1,000 events of one barcode among the stored ones):
   ``GET /samples/{barcode}/history`` p50 (the answer grows with the history: it is returned whole);
3. outbox backlog (default 1,000 / 10,000 / 100,000 events waiting in the beacon Redis stream):
   drain rate of one ``Deliverer`` (batches of 200) into the service.

The scan series (per-scan time after 10, 100 and 1,000 scans in one session) and the mount
series (mount/unmount time after 100, 1,000 and 10,000 mounts) come from
``hub_block_cycles.py``, which runs those cycles anyway.

``--quick``: sizes divided by 100 (10 times for the history lengths), fewer requests: a smoke test.

Usage: .venv/bin/python benchmarks/growth.py [--quick] [--json FILE] [--workdir DIR]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all(thread=False)  # as in a BLISS session (the deliverer runs there)

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import service_benchmark as service_bench  # noqa: E402
from delivery_drain import drain, fill  # noqa: E402

from bliss_sampletrack.delivery.clients import RestClient  # noqa: E402
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox  # noqa: E402
from bliss_sampletrack.service.auth import create_token  # noqa: E402
from bliss_sampletrack.service.storage import open_storage  # noqa: E402
from bliss_sampletrack.testbed.beacon import running_beacon  # noqa: E402

SCALES = ("1x", "10x", "100x")


def stored_events_series(
    sizes: list[int], queries: int, batches: int, workdir: Path
) -> dict[str, dict[str, float]]:
    """Service figures at each number of stored events (one database, loaded up step by step)."""
    db_url = f"sqlite:///{workdir / 'growth.db'}"
    series: dict[str, dict[str, float]] = {}
    history_lengths = {"1x": 10, "10x": 100, "100x": 1000}
    with open_storage(db_url) as storage:
        storage.migrate()
        _, token = create_token(storage, [*service_bench.BEAMLINES, "bench"], label="growth")
        # one barcode per history length, spread over the two years like the rest
        when = service_bench.START
        for scale, length in history_lengths.items():
            step = service_bench.SPAN / length
            storage.bulk_load(
                service_bench.stored(
                    service_bench.event_dict(
                        "mounted" if i % 2 == 0 else "unmounted", "id01", f"HIST-{scale}", when + step * i
                    )
                )
                for i in range(length)
            )
        loaded = 0
        barcodes: list[str] = []
        for scale, size in zip(SCALES, sizes, strict=True):
            started = time.perf_counter()
            events, new_barcodes = service_bench.generate(size - loaded, seed=size)
            loaded += storage.bulk_load(events)
            barcodes += new_barcodes
            print(f"  stored {loaded:,} events (+{time.perf_counter() - started:.1f} s load)", flush=True)
            series[scale] = measure_service(db_url, token, barcodes, queries, batches, workdir, scale, loaded)
            series[scale]["stored_events"] = loaded
    return series


def measure_service(
    db_url: str,
    token: str,
    barcodes: list[str],
    queries: int,
    batches: int,
    workdir: Path,
    scale: str,
    stored: int,
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    server = service_bench.start_server(db_url, workdir / f"growth-service-{scale}.log")
    figures: dict[str, float] = {}
    try:
        session = requests.Session()
        session.get(server.base_url + "/healthz", timeout=10)
        now = datetime.now(UTC)
        bodies = [
            json.dumps(
                {
                    "events": [
                        service_bench.event_dict(
                            "mounted", "bench", f"NEW-{scale}-{b}-{i}", now + timedelta(microseconds=i)
                        )
                        for i in range(1000)
                    ]
                }
            )
            for b in range(batches)
        ]
        started = time.perf_counter()
        for body in bodies:
            response = session.post(
                server.base_url + "/events/batch", data=body, headers=headers, timeout=120
            )
            if response.status_code != 200:
                raise RuntimeError(
                    f"batch ingest at {stored:,} stored: {response.status_code} {response.text[:200]}"
                )
        figures["batch_events_per_s"] = batches * 1000 / (time.perf_counter() - started)
        rng = random.Random(stored)
        mounted = [
            f"{server.base_url}/beamlines/{rng.choice(service_bench.BEAMLINES)}/mounted"
            for _ in range(queries)
        ]
        history = [f"{server.base_url}/samples/{rng.choice(barcodes)}/history" for _ in range(queries)]
        service_bench.timed_requests(session, mounted[:30] + history[:30], headers)  # warm-up
        figures["mounted_p99_ms"] = service_bench.percentile(
            service_bench.timed_requests(session, mounted, headers), 99
        )
        figures["history_p99_ms"] = service_bench.percentile(
            service_bench.timed_requests(session, history, headers), 99
        )
        one = [f"{server.base_url}/samples/HIST-{scale}/history"] * max(queries // 3, 20)
        latencies = service_bench.timed_requests(session, one, headers)
        figures["one_sample_history_p50_ms"] = statistics.median(latencies)
        figures["one_sample_history_events"] = len(
            session.get(one[0], headers=headers, timeout=30).json()["events"]
        )
    finally:
        server.stop()
    shown = ", ".join(f"{k} {v:,.2f}" for k, v in figures.items())
    print(f"  {scale}: {shown}", flush=True)
    return figures


def backlog_series(sizes: list[int], workdir: Path) -> dict[str, dict[str, float]]:
    """Drain rate of one deliverer with ``size`` events waiting in the outbox."""
    from bliss_sampletrack.demo.service_process import ServiceProcess
    from bliss_sampletrack.testbed.beacon import free_port

    series: dict[str, dict[str, float]] = {}
    with running_beacon(workdir / "beacon") as server:
        service = ServiceProcess(workdir / "drain.db", free_port(), workdir / "drain-service.log")
        tokens = {scale: service.create_token(f"growth-{scale}") for scale in SCALES}
        service.start()
        try:
            client = redis.Redis.from_url(server.redis_url)
            for scale, size in zip(SCALES, sizes, strict=True):
                outbox = RedisStreamOutbox(client, f"growth-{scale}")
                fill(outbox, size)
                rest = RestClient("service", service.api_url, tokens[scale], max_batch=200)
                elapsed = drain(outbox, rest)
                series[scale] = {"backlog": size, "drain_events_per_s": size / elapsed}
                print(f"  backlog {size:,}: {size / elapsed:,.0f} events/s ({elapsed:.1f} s)", flush=True)
        finally:
            service.stop()
    return series


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="sizes / 100: a smoke test")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, help="kept after the run (default: a temporary folder)")
    args = parser.parse_args()
    divisor = 100 if args.quick else 1
    stored_sizes = [s // divisor for s in (10_000, 100_000, 1_000_000)]
    backlog_sizes = [s // divisor for s in (1_000, 10_000, 100_000)]
    queries, batches = (60, 1) if args.quick else (1000, 5)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sampletrack-growth-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"stored events in the service (SQLite): {', '.join(f'{s:,}' for s in stored_sizes)}")
        stored = stored_events_series(stored_sizes, queries, batches, workdir)
        print(f"outbox backlog drained (batches of 200): {', '.join(f'{s:,}' for s in backlog_sizes)}")
        backlog = backlog_series(backlog_sizes, workdir)
    finally:
        if args.workdir is None:  # the SQLite file is about 1 GB per million events
            shutil.rmtree(workdir, ignore_errors=True)

    figures: dict[str, Any] = {"stored_events": stored, "backlog": backlog}
    print("\ngrowth (1x -> 10x -> 100x)")
    rows = [
        ("batch ingest, events/s, vs stored events", stored, "batch_events_per_s"),
        ("mounted-now p99, ms, vs stored events", stored, "mounted_p99_ms"),
        ("sample history p99, ms, vs stored events", stored, "history_p99_ms"),
        ("one sample's history p50, ms, vs its length", stored, "one_sample_history_p50_ms"),
        ("outbox drain, events/s, vs backlog", backlog, "drain_events_per_s"),
    ]
    for label, series, key in rows:
        values = [series[scale][key] for scale in SCALES]
        print(
            f"  {label:<48} " + " -> ".join(f"{v:,.2f}" for v in values) + f"  ({values[2] / values[0]:.2f}x)"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
