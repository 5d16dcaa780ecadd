"""Tracking-service benchmark: ingest throughput and query latency with many stored events.

For each database (SQLite file, and PostgreSQL: a private cluster with fsync on, or --pg-url):

1. bulk-load ``--events`` events (default 1,000,000) directly through the storage layer: 30
   beamlines, mount/unmount pairs, each sample mounted a few times over two years;
2. start ``sampletrack-service serve`` (a real process, waitress, 8 threads) on that database;
3. over HTTP (one keep-alive client; and 4 clients for single events): ingest single events
   (``POST /events``) and batches of 1000 (``POST /events/batch``), then time ``GET
   /beamlines/{b}/mounted`` (random beamline) and ``GET /samples/{barcode}/history`` (random
   stored barcode) and report p50/p99.

Targets (the issue's): batch ingest >= 5,000 events/s; mounted-now and history p99 <= 10 ms.
Latencies are measured by the client (Python requests, same machine): they include the client's
own overhead of roughly 0.3 ms. ``--quick``: 100,000 events and fewer requests.

Usage::

    python benchmarks/service_benchmark.py [--events N] [--quick] [--backend sqlite|postgresql|both]
                                           [--pg-url postgresql://...] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bliss_sampletrack.core.contract import format_timestamp
from bliss_sampletrack.service.auth import create_token
from bliss_sampletrack.service.events import canonical_json, to_micros
from bliss_sampletrack.service.storage import NewEvent, SqlStorage, open_storage
from bliss_sampletrack.testbed.events import make_event

BEAMLINES = [f"id{n:02d}" for n in range(1, 31)]
START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=730)


def event_dict(
    kind: str, beamline: str, barcode: str, when: datetime, mount_id: str | None = None
) -> dict[str, Any]:
    return make_event(
        type=kind,
        occurred_at=format_timestamp(when),
        beamline=beamline,
        session=f"{beamline}_session",
        sample={"barcode": barcode, "name": f"sample-{barcode}"},
        mount_event_id=mount_id,
        producer={"host": f"{beamline}-ctl"},
    )


def stored(data: dict[str, Any]) -> NewEvent:
    """A storable event without the HTTP path's validation (the bulk load's speed)."""
    return NewEvent(
        event_id=data["event_id"],
        beamline=data["beamline"],
        barcode=data["sample"]["barcode"],
        occurred_us=to_micros(
            datetime.strptime(data["occurred_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        ),
        type=data["type"],
        body=canonical_json(data),
    )


def generate(count: int, seed: int = 1) -> tuple[Iterator[NewEvent], list[str]]:
    """``count`` events (mount/unmount pairs per beamline, in time order) and the barcodes used."""
    rng = random.Random(seed)
    samples = max(count // 10, 1)  # each sample about 5 mounts, on random beamlines
    barcodes = [f"BC{n:07d}" for n in range(samples)]
    pairs_per_beamline = count // 2 // len(BEAMLINES) + 1
    step = SPAN / pairs_per_beamline

    def events() -> Iterator[NewEvent]:
        made = 0
        for index in range(pairs_per_beamline):
            for beamline in BEAMLINES:
                if made >= count:
                    return
                barcode = rng.choice(barcodes)
                mounted_at = START + step * index + timedelta(seconds=rng.randint(0, 600))
                mount = event_dict("mounted", beamline, barcode, mounted_at)
                yield stored(mount)
                made += 1
                if made < count:
                    unmount = event_dict(
                        "unmounted", beamline, barcode, mounted_at + step / 2, mount_id=mount["event_id"]
                    )
                    yield stored(unmount)
                    made += 1

    return events(), barcodes


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def start_server(db_url: str, log_path: Path) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLETRACK_")}
    cmd = [sys.executable, "-m", "bliss_sampletrack.service", "serve", "--db", db_url, "--port", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*cmd, "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if "serving on " in text:
            url = text.split("serving on ", 1)[1].split()[0].rstrip("/")
            return Server(process, url)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the service did not start:\n{log_path.read_text(errors='replace')}")


def timed_requests(session: requests.Session, urls: list[str], headers: dict[str, str]) -> list[float]:
    latencies = []
    for url in urls:
        started = time.perf_counter()
        response = session.get(url, headers=headers, timeout=30)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")
    return latencies


def bench_backend(
    name: str, storage: SqlStorage, db_url: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    print(f"\n== {name}: {storage.describe()}", flush=True)
    storage.migrate()
    events, barcodes = generate(args.events)
    started = time.perf_counter()
    loaded = storage.bulk_load(events)
    load_s = time.perf_counter() - started
    print(f"bulk load: {loaded:,} events in {load_s:.1f} s ({loaded / load_s:,.0f} events/s)", flush=True)
    _, token = create_token(storage, [*BEAMLINES, "bench"], label="benchmark")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    server = start_server(db_url, workdir / f"{name}-service.log")
    result: dict[str, Any] = {
        "backend": name,
        "stored_events": loaded,
        "bulk_load_events_per_s": loaded / load_s,
    }
    try:
        session = requests.Session()
        session.get(server.base_url + "/healthz", timeout=10)
        now = datetime.now(UTC)

        def fresh(i: int) -> dict[str, Any]:
            return event_dict("mounted", "bench", f"NEW{i:07d}", now + timedelta(microseconds=i))

        # single events, one client
        bodies = [json.dumps(fresh(i)) for i in range(args.single)]
        latencies = []
        started = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            response = session.post(server.base_url + "/events", data=body, headers=headers, timeout=30)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 201, response.text
        elapsed = time.perf_counter() - started
        result["single_events_per_s"] = args.single / elapsed
        result["single_p99_ms"] = percentile(latencies, 99)

        # single events, 4 clients
        bodies = [json.dumps(fresh(args.single + i)) for i in range(args.single)]

        def post_all(chunk: list[str]) -> None:
            own = requests.Session()
            for body in chunk:
                response = own.post(server.base_url + "/events", data=body, headers=headers, timeout=30)
                assert response.status_code == 201, response.text

        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post_all, [bodies[i::4] for i in range(4)]))
        result["single_4_clients_events_per_s"] = args.single / (time.perf_counter() - started)

        # batches of 1000, one client
        offset = 2 * args.single
        batches = [
            json.dumps({"events": [fresh(offset + b * 1000 + i) for i in range(1000)]})
            for b in range(args.batches)
        ]
        batch_ms = []
        started = time.perf_counter()
        for body in batches:
            t0 = time.perf_counter()
            response = session.post(
                server.base_url + "/events/batch", data=body, headers=headers, timeout=120
            )
            batch_ms.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, response.text
            assert {r["status"] for r in response.json()["results"]} == {201}
        elapsed = time.perf_counter() - started
        result["batch_events_per_s"] = args.batches * 1000 / elapsed
        result["batch_1000_p50_ms"] = statistics.median(batch_ms)

        # queries
        rng = random.Random(7)
        mounted_urls = [
            f"{server.base_url}/beamlines/{rng.choice(BEAMLINES)}/mounted" for _ in range(args.queries)
        ]
        history_urls = [
            f"{server.base_url}/samples/{rng.choice(barcodes)}/history" for _ in range(args.queries)
        ]
        timed_requests(session, mounted_urls[:50] + history_urls[:50], headers)  # warm-up
        for label, urls in (("mounted", mounted_urls), ("history", history_urls)):
            latencies = timed_requests(session, urls, headers)
            result[f"{label}_p50_ms"] = statistics.median(latencies)
            result[f"{label}_p99_ms"] = percentile(latencies, 99)
        sizes = [
            len(session.get(u, headers=headers, timeout=30).json()["events"]) for u in history_urls[:200]
        ]
        result["history_mean_events"] = statistics.mean(sizes)
    finally:
        server.stop()
    for key, value in result.items():
        shown = (
            f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        )
        print(f"  {key:<32} {shown}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, help="events to bulk-load (default 1,000,000; --quick 100,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 events and fewer requests")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database (default: a private cluster)")
    parser.add_argument(
        "--workdir", type=Path, help="where the SQLite file and logs go (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    args.events = args.events or (100_000 if args.quick else 1_000_000)
    args.single = 300 if args.quick else 2000
    args.batches = 5 if args.quick else 20
    args.queries = 500 if args.quick else 3000

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sampletrack-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run_all(args, workdir)
    finally:
        if args.workdir is None:  # a temporary folder: the SQLite file is about 1 GB per million events
            shutil.rmtree(workdir, ignore_errors=True)
    print_summary(results)
    return 0


def run_all(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    results = []
    if args.backend in ("sqlite", "both"):
        db_url = f"sqlite:///{workdir / 'bench.db'}"
        for leftover in workdir.glob("bench.db*"):
            leftover.unlink()
        with open_storage(db_url) as storage:
            results.append(bench_backend("sqlite", storage, db_url, args, workdir))
    if args.backend in ("postgresql", "both"):
        cluster = None
        db_url = args.pg_url
        if db_url is None:
            from bliss_sampletrack.service.devdb import start_cluster

            cluster = start_cluster(fsync=True)
            db_url = cluster.create_database("bench")
        try:
            with open_storage(db_url) as storage:
                results.append(bench_backend("postgresql", storage, db_url, args, workdir))
        finally:
            if cluster is not None:
                cluster.stop()
    return results


def print_summary(results: list[dict[str, Any]]) -> None:
    print("\nsummary (targets: batch >= 5,000 events/s; mounted and history p99 <= 10 ms)")
    print(
        f"{'backend':<11} {'events':>10} {'single/s':>9} {'4x single/s':>11} {'batch/s':>9} "
        f"{'mounted p99':>11} {'history p99':>11}"
    )
    for r in results:
        print(
            f"{r['backend']:<11} {r['stored_events']:>10,} {r['single_events_per_s']:>9,.0f} "
            f"{r['single_4_clients_events_per_s']:>11,.0f} {r['batch_events_per_s']:>9,.0f} "
            f"{r['mounted_p99_ms']:>9.2f}ms {r['history_p99_ms']:>9.2f}ms"
        )


if __name__ == "__main__":
    sys.exit(main())
