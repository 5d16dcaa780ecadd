"""Drain rate of the outbox into the tracking service (SQLite), one event per request vs batches.

Starts a beacon (for its Redis, where the outbox lives) and the tracking service on loopback,
fills the outbox with N contract events, and times one deliverer draining it: once with
``max_batch=1`` (``POST /events``), once batched (``POST /events/batch``). Target (issue 6):
>= 5,000 events/s batched.

Usage: .venv/bin/python benchmarks/delivery_drain.py [--events 10000] [--batch 200] [--json FILE]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all(thread=False)  # as in a BLISS session

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import redis  # noqa: E402

from bliss_sampletrack.core import Event, Sample, Source  # noqa: E402
from bliss_sampletrack.delivery.clients import RestClient  # noqa: E402
from bliss_sampletrack.delivery.loop import Deliverer  # noqa: E402
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox  # noqa: E402
from bliss_sampletrack.demo.service_process import ServiceProcess  # noqa: E402
from bliss_sampletrack.testbed.beacon import free_port, running_beacon  # noqa: E402

TARGET = 5000.0


def fill(outbox: RedisStreamOutbox, n: int) -> None:
    t0 = datetime(2026, 11, 24, tzinfo=UTC)
    pipeline = outbox.redis.pipeline(transaction=False)
    for i in range(n):
        event = Event.mounted(
            Sample(barcode=f"B-{i:06d}", name=f"bench sample {i}"),
            beamline=outbox.beamline,
            session="bench",
            source=Source.SAMPLE_CHANGER,
            occurred_at=t0 + timedelta(milliseconds=i),
        )
        outbox.add(pipeline, [event])
    pipeline.execute()


def drain(outbox: RedisStreamOutbox, client: RestClient) -> float:
    deliverer = Deliverer(outbox, client)
    start = time.perf_counter()
    while deliverer.step():
        pass
    elapsed = time.perf_counter() - start
    assert outbox.pending(client.name) == 0, outbox.last_error(client.name)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sampletrack-drain-"))
    figures: dict[str, float | int] = {
        "events": args.events,
        "batch": args.batch,
        "target_batched_per_s": TARGET,
    }
    with running_beacon(work / "beacon") as server:
        service = ServiceProcess(work / "service.db", free_port(), work / "service.log")
        tokens = {mode: service.create_token(f"bench-{mode}") for mode in ("single", "batch")}
        service.start()
        try:
            client = redis.Redis.from_url(server.redis_url)
            for mode, max_batch in (("single", 1), ("batch", args.batch)):
                outbox = RedisStreamOutbox(client, f"bench-{mode}")
                fill(outbox, args.events)
                rest = RestClient("service", service.api_url, tokens[mode], max_batch=max_batch)
                elapsed = drain(outbox, rest)
                figures[f"{mode}_seconds"] = elapsed
                figures[f"{mode}_per_s"] = args.events / elapsed
        finally:
            service.stop()
    print(f"outbox drain into the tracking service (SQLite, loopback), {args.events} events")
    single, batch = figures["single_per_s"], figures["batch_per_s"]
    print(f"  one event per request : {single:9.0f} events/s ({figures['single_seconds']:.1f} s)")
    verdict = "PASS" if figures["batch_per_s"] >= TARGET else "FAIL"
    print(
        f"  batches of {args.batch:<4}      : {batch:9.0f} events/s ({figures['batch_seconds']:.1f} s)"
        f"  target >= {TARGET:.0f}  {verdict}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
