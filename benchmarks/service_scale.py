"""Service farm scaling: N ``sampletrack-service serve`` processes on one PostgreSQL database.

For each N in ``--processes`` (default 1, 2, 4), on a fresh database of a private PostgreSQL
cluster (``devdb``, ``fsync=True``):

1. start N service processes (``testbed.service_farm``: migrated once, then ``serve --no-migrate``,
   each on a kernel-chosen port), one write token per beamline and a read-only token;
2. fill 20 beamline outboxes (``--beamlines``; Redis streams in one ``redis-server``, pipelined)
   with ``--events`` events in all (default 100,000): mount/unmount pairs per beamline
   (``testbed.events.make_event``), samples shared between beamlines;
3. start one ``Deliverer`` per beamline (``RestClient``, batches of ``--batch`` = 200, the
   plugin's default), the beamlines' clients spread round-robin over the N processes, in
   ``--clients`` client processes (gevent-patched, as in a BLISS session or ``sampletrack
   deliver``), and a querying process (``--query-threads`` plain threads) that asks ``GET
   /beamlines/{b}/mounted`` and ``GET /samples/{barcode}/history`` ``--query-rate`` times a second
   in all, round-robin over the processes (a thread waits for its answer before asking again:
   slow answers mean fewer questions, which the query count shows);
4. measure from "go" until every outbox's cursor is at its last entry: ingest events/s; CPU
   seconds of the service processes (with their validation workers), of PostgreSQL (postmaster
   and backends), of the client processes, of the querier and of Redis (``/proc``); the query
   latencies p50/p99 (client side: they include Python ``requests``' own ~0.3 ms);
5. check the database: every event id of the outboxes stored (lost), none twice, nothing else
   stored, per beamline the database's arrival order (``seq``) equal to the outbox order
   (inversions), no dead letter.

Caveats, read before comparing: everything (clients, N services, PostgreSQL, Redis) shares this
machine's CPUs (``os.cpu_count()`` is printed; 2 here). When the machine is CPU-bound, more
processes cannot ingest faster: the "machine busy" column (all measured CPU / (wall time x
CPUs)) says whether it was. A client process busy most of the run would also cap the rate: the
table shows the busiest one. ``--quick``: 10,000 events, a smoke test with noisy figures.

Judged: 0 lost, 0 stored twice, per-beamline order kept, 0 dead letters. Reported without a
target (issue 20 sets none for a farm): events/s at each N and the ratio 4/1, with the CPU use
that bounds them, and query p99 *during* ingest. For reference, the single-process service's
targets (``service_benchmark.py``: batch ingest >= 5,000 events/s, p99 <= 10 ms on a quiet
service) are printed beside them. Twenty outboxes catching up at once is the worst case: GETs
queue behind the batch POSTs for the waitress threads (``--threads``: more threads shorten that
queue but slow ingest down, both fighting for the same CPUs).

Usage::

    python benchmarks/service_scale.py [--events N] [--quick] [--processes 1,2,4] [--beamlines 20]
                                       [--clients 2] [--batch 200] [--query-rate 40] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLIENT = "service"  # the delivery client's name (its outbox cursor)
REFERENCE_EVENTS_PER_S = 5000.0  # service_benchmark.py's target: one process, quiet, batches
REFERENCE_P99_MS = 10.0  # service_benchmark.py's target: queries on a quiet service
STARTUP_TIMEOUT_S = 120.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def cpu_self() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- client process: deliverers under gevent ------------------------------------------------------
def client_main(spec_path: str) -> int:
    """One client process: a Deliverer per beamline of the spec, until every outbox is drained."""
    from gevent import monkey

    monkey.patch_all(thread=False)  # as in a BLISS session: cooperative sockets for redis and requests

    import logging

    import gevent
    import redis

    from bliss_sampletrack.delivery.clients import RestClient
    from bliss_sampletrack.delivery.loop import Deliverer
    from bliss_sampletrack.delivery.outbox import RedisStreamOutbox

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    connection = redis.Redis(unix_socket_path=spec["redis_socket"], socket_timeout=30)
    items = spec["beamlines"]
    outboxes = [RedisStreamOutbox(connection, item["beamline"]) for item in items]
    deliverers = [
        Deliverer(outbox, RestClient(CLIENT, item["url"], item["token"], max_batch=spec["batch"]))
        for outbox, item in zip(outboxes, items, strict=True)
    ]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":  # nothing else runs yet: a blocking read is fine
        return 1
    cpu0, t0 = cpu_self(), time.monotonic()
    greenlets = [gevent.spawn(deliverer.run) for deliverer in deliverers]
    done: dict[str, float] = {}
    deadline = t0 + spec["timeout"]
    while len(done) < len(items) and time.monotonic() < deadline:
        for outbox, item in zip(outboxes, items, strict=True):
            if item["beamline"] not in done and outbox.cursor(CLIENT) == item["last_id"]:
                done[item["beamline"]] = time.monotonic() - t0
        gevent.sleep(0.02)
    cpu1, t1 = cpu_self(), time.monotonic()
    for deliverer in deliverers:
        deliverer.stop()
    gevent.joinall(greenlets, timeout=10)
    gevent.killall([g for g in greenlets if not g.dead], timeout=5)
    report = {
        "cpu_s": cpu1 - cpu0,
        "wall_s": t1 - t0,
        "drained": len(done) == len(items),
        "drain_s": done,
        "last_errors": {o.beamline: o.last_error(CLIENT) for o in outboxes if o.last_error(CLIENT)},
        "dead_letters": sum(len(o.dead_letters(CLIENT)) for o in outboxes),
    }
    print("result " + json.dumps(report), flush=True)
    return 0 if report["drained"] else 1


# --- query process: plain threads, paced GETs -----------------------------------------------------
def query_main(spec_path: str) -> int:
    """The querier: ``threads`` threads, each asking a GET every ``threads / rate`` seconds
    (mounted-now and history in turn, round-robin over the service processes) until "stop".

    Caveat: a thread waits for its answer before its next question, so when answers take longer
    than the interval fewer questions are asked (the count is reported with the latencies)."""
    import requests

    spec = json.loads(Path(spec_path).read_text())
    urls: list[str] = spec["urls"]
    threads: int = spec["threads"]
    latencies: dict[str, list[float]] = {"mounted": [], "history": []}
    errors: list[str] = []
    asked = [0] * threads
    stop = threading.Event()
    go = threading.Event()
    connected = threading.Barrier(threads + 1)
    lock = threading.Lock()

    def session_for(url: str) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {spec['token']}"
        session.get(url + "/healthz", timeout=10)  # connected before the clock starts
        return session

    def ask(t: int) -> None:
        sessions = [session_for(url) for url in urls]
        connected.wait(timeout=STARTUP_TIMEOUT_S)
        rng = random.Random(t)
        go.wait(timeout=STARTUP_TIMEOUT_S * 2)
        interval = threads / spec["rate"]
        next_at = time.monotonic() + interval * t / threads  # the threads' questions interleave
        i = t
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            next_at = max(next_at + interval, time.monotonic())  # behind after a slow answer: no burst
            kind = "mounted" if i % 2 == 0 else "history"
            k = (i // 2) % len(urls)
            if kind == "mounted":
                url = f"{urls[k]}/beamlines/{rng.choice(spec['beamlines'])}/mounted"
            else:
                url = f"{urls[k]}/samples/{rng.choice(spec['barcodes'])}/history"
            started = time.perf_counter()
            try:
                response = sessions[k].get(url, timeout=30)
                elapsed_ms = (time.perf_counter() - started) * 1000
                with lock:
                    if response.status_code == 200:
                        latencies[kind].append(elapsed_ms)
                    else:
                        errors.append(f"{url}: {response.status_code} {response.text[:200]}")
            except requests.RequestException as exc:
                with lock:
                    errors.append(f"{url}: {type(exc).__name__}: {exc}")
            asked[t] += 1
            i += threads

    workers = [threading.Thread(target=ask, args=(t,), daemon=True) for t in range(threads)]
    for worker in workers:
        worker.start()
    connected.wait(timeout=STARTUP_TIMEOUT_S)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    cpu0 = cpu_self()
    go.set()
    sys.stdin.readline()  # "stop", or end of file when the parent went away
    stop.set()
    for worker in workers:
        worker.join(timeout=40)
    report = {
        "cpu_s": cpu_self() - cpu0,
        "queries": sum(asked),
        "errors": len(errors),
        "first_errors": errors[:5],
        **{f"{kind}_count": len(values) for kind, values in latencies.items()},
        **{f"{kind}_p50_ms": percentile(values, 50) for kind, values in latencies.items()},
        **{f"{kind}_p99_ms": percentile(values, 99) for kind, values in latencies.items()},
    }
    print("result " + json.dumps(report), flush=True)
    return 0


# --- the parent: one run per N --------------------------------------------------------------------
class Child:
    """A helper process of this script speaking line by line on stdin/stdout; stderr to a log."""

    def __init__(self, role: str, spec: dict[str, Any], workdir: Path, name: str) -> None:
        self.name = name
        spec_path = workdir / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, role, str(spec_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"read-{name}").start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"{self.name}: no {prefix!r} line in {timeout:.0f} s; {self.tail()}"
                ) from None
            if line is None:
                raise RuntimeError(f"{self.name} ended without a {prefix!r} line; {self.tail()}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def result(self, timeout: float) -> dict[str, Any]:
        return dict(json.loads(self.expect("result", timeout)))

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"its log ({self.log_path}):\n" + "\n".join(text.splitlines()[-30:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def postmaster_pid(cluster: Any) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def check_database(db_url: str, order: dict[str, list[str]]) -> dict[str, int]:
    """Lost, stored twice, unexpected and per-beamline order inversions, from the database."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT beamline, event_id FROM events ORDER BY beamline, seq").fetchall()
    stored: dict[str, list[str]] = {}
    for beamline, event_id in rows:
        stored.setdefault(str(beamline), []).append(str(event_id))
    expected = {event_id for ids in order.values() for event_id in ids}
    seen = [event_id for ids in stored.values() for event_id in ids]
    inversions = 0
    for beamline, ids in order.items():
        rank = {event_id: index for index, event_id in enumerate(ids)}
        ranks = [rank[e] for e in stored.get(beamline, []) if e in rank]
        inversions += sum(1 for a, b in zip(ranks, ranks[1:], strict=False) if b < a)
    return {
        "stored": len(seen),
        "lost": len(expected - set(seen)),
        "duplicates": len(seen) - len(set(seen)),
        "unexpected": len(set(seen) - expected),
        "order_inversions": inversions,
    }


def run_one(n: int, ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from bliss_sampletrack.testbed.service_farm import (
        ServiceFarm,
        fill_outboxes,
        process_tree_cpu_seconds,
        undelivered,
    )

    cluster, redis_server, events = ctx["cluster"], ctx["redis"], ctx["events"]
    beamlines: list[str] = list(events)
    workdir: Path = ctx["workdir"] / f"n{n}"
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = cluster.create_database(f"scale_n{n}")
    print(f"\n== {n} service process(es), {args.events:,} events, {len(beamlines)} beamlines", flush=True)
    farm = ServiceFarm(db_url, n, workdir, threads=args.threads)
    children: list[Child] = []
    try:
        farm.start()
        settle = farm.wait_idle()  # validation workers import for a second or two after a start
        tokens = {b: farm.create_token([b], label=f"{b} deliverer") for b in beamlines}
        read_token = farm.create_token([], read_only=True, label="scale querier")
        redis_client = redis_server.client()
        redis_client.flushall()
        started = time.perf_counter()
        last_ids = fill_outboxes(redis_client, events)
        fill_s = time.perf_counter() - started
        print(
            f"farm idle {settle:.1f} s after its start; outboxes filled in {fill_s:.1f} s "
            f"({args.events / fill_s:,.0f} events/s, pipelined)",
            flush=True,
        )

        clients = max(1, min(args.clients, len(beamlines)))
        timeout = args.timeout
        for c in range(clients):
            spec = {
                "redis_socket": str(redis_server.socket_path),
                "batch": args.batch,
                "timeout": timeout,
                "beamlines": [
                    {"beamline": b, "url": farm.url_for(j), "token": tokens[b], "last_id": last_ids[b]}
                    for j, b in enumerate(beamlines)
                    if j % clients == c
                ],
            }
            children.append(Child("client", spec, workdir, f"client-{c}"))
        barcodes = sorted({e.sample.barcode for items in events.values() for e in items if e.sample})
        querier = Child(
            "query",
            {
                "urls": farm.urls,
                "token": read_token,
                "beamlines": beamlines,
                "barcodes": barcodes,
                "rate": args.query_rate,
                "threads": args.query_threads,
            },
            workdir,
            "querier",
        )
        children.append(querier)
        for child in children:
            child.expect("ready", STARTUP_TIMEOUT_S)

        pg_pid = postmaster_pid(cluster)
        before = {
            "service": farm.cpu_seconds(),
            "postgres": process_tree_cpu_seconds(pg_pid),
            "redis": redis_server.cpu_seconds(),
        }
        for child in children:
            child.send("go")
        t0 = time.monotonic()
        left = beamlines
        while left and time.monotonic() - t0 < timeout:
            time.sleep(0.05)  # this parent is a plain process (no gevent)
            left = undelivered(redis_client, last_ids, CLIENT)
        elapsed = time.monotonic() - t0
        after = {
            "service": farm.cpu_seconds(),
            "postgres": process_tree_cpu_seconds(pg_pid),
            "redis": redis_server.cpu_seconds(),
        }
        querier.send("stop")
        query = querier.result(60)
        client_reports = [child.result(60) for child in children[:-1]]
        if left:
            raise RuntimeError(
                f"{len(left)} outbox(es) not drained after {timeout:.0f} s ({', '.join(left[:5])}); "
                f"last errors: {[r['last_errors'] for r in client_reports]}"
            )
        order = {b: [str(e.event_id) for e in items] for b, items in events.items()}
        checks = check_database(db_url, order)
    finally:
        for child in children:
            child.close()
        farm.stop()

    cpu = {f"{k}_s": after[k] - before[k] for k in before}
    cpu["clients_s"] = sum(r["cpu_s"] for r in client_reports)
    cpu["querier_s"] = query["cpu_s"]
    cpu["total_s"] = sum(cpu.values())
    cpus = os.cpu_count() or 1
    result: dict[str, Any] = {
        "processes": n,
        "events": args.events,
        "seconds": elapsed,
        "events_per_s": args.events / elapsed,
        "fill_seconds": fill_s,
        "cpu": cpu,
        "machine_busy": cpu["total_s"] / (elapsed * cpus),
        "service_cpu_us_per_event": cpu["service_s"] / args.events * 1e6,
        "postgres_cpu_us_per_event": cpu["postgres_s"] / args.events * 1e6,
        "client_busiest": max(r["cpu_s"] / elapsed for r in client_reports),
        "dead_letters": sum(r["dead_letters"] for r in client_reports),
        **checks,
        "queries": query["queries"],
        "query_errors": query["errors"],
        **{k: query[k] for k in ("mounted_p50_ms", "mounted_p99_ms", "history_p50_ms", "history_p99_ms")},
    }
    if query["errors"]:
        print(f"query errors: {query['first_errors']}", flush=True)
    print(
        f"{result['events_per_s']:,.0f} events/s ({elapsed:.1f} s); CPU s: service {cpu['service_s']:.1f}, "
        f"PostgreSQL {cpu['postgres_s']:.1f}, clients {cpu['clients_s']:.1f}, "
        f"querier {cpu['querier_s']:.1f}, "
        f"Redis {cpu['redis_s']:.1f}; machine busy {result['machine_busy']:.0%} of {cpus} CPUs; "
        f"busiest client process {result['client_busiest']:.0%} of a CPU; {result['queries']:,} queries "
        f"({result['query_errors']} failed)",
        flush=True,
    )
    return result


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    from bliss_sampletrack.service.devdb import start_cluster
    from bliss_sampletrack.testbed.service_farm import mount_unmount_events, start_redis

    beamlines = [f"id{i:02d}" for i in range(1, args.beamlines + 1)]
    started = time.perf_counter()
    events = mount_unmount_events(beamlines, args.events, seed=20)
    print(f"{args.events:,} events made in {time.perf_counter() - started:.1f} s", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="sampletrack-scale-"))
    cluster = start_cluster(fsync=True)
    redis_server = start_redis()
    runs: dict[str, Any] = {}
    try:
        ctx = {"cluster": cluster, "redis": redis_server, "events": events, "workdir": workdir}
        for n in args.processes:
            runs[str(n)] = run_one(n, ctx, args)
    except BaseException:
        print(f"logs kept in {workdir}", flush=True)
        raise
    finally:
        redis_server.stop()
        cluster.stop()
    if not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, Any] = {
        "events": args.events,
        "beamlines": len(beamlines),
        "batch": args.batch,
        "client_processes": args.clients,
        "query_rate": args.query_rate,
        "query_threads": args.query_threads,
        "cpus": os.cpu_count(),
        "postgres_fsync": True,
        "workdir": str(workdir) if args.keep_logs else None,
        "runs": runs,
        "lost": sum(r["lost"] for r in runs.values()),
        "duplicates": sum(r["duplicates"] for r in runs.values()),
        "unexpected": sum(r["unexpected"] for r in runs.values()),
        "order_inversions": sum(r["order_inversions"] for r in runs.values()),
        "dead_letters": sum(r["dead_letters"] for r in runs.values()),
        "worst_mounted_p99_ms": max(r["mounted_p99_ms"] for r in runs.values()),
        "worst_history_p99_ms": max(r["history_p99_ms"] for r in runs.values()),
        "slowest_events_per_s": min(r["events_per_s"] for r in runs.values()),
    }
    if "1" in runs and "4" in runs:
        summary["ratio_4_1"] = runs["4"]["events_per_s"] / runs["1"]["events_per_s"]
    if "1" in runs and "2" in runs:
        summary["ratio_2_1"] = runs["2"]["events_per_s"] / runs["1"]["events_per_s"]
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"\nservice farm on one PostgreSQL (fsync on): {summary['events']:,} events, "
        f"{summary['beamlines']} beamlines, batches of {summary['batch']}, {summary['client_processes']} "
        f"client process(es), {summary['cpus']} CPUs shared by everything"
    )
    header = (
        f"{'N':>2} {'events/s':>9} {'s':>6} {'svc CPU':>8} {'PG CPU':>7} {'cli CPU':>8} {'busy':>5} "
        f"{'cli max':>7} {'mounted p50/p99':>16} {'history p50/p99':>16} {'lost':>4} {'dup':>4} {'inv':>4}"
    )
    print(header)
    for n, r in summary["runs"].items():
        cpu = r["cpu"]
        print(
            f"{n:>2} {r['events_per_s']:>9,.0f} {r['seconds']:>6.1f} {cpu['service_s']:>7.1f}s "
            f"{cpu['postgres_s']:>6.1f}s {cpu['clients_s']:>7.1f}s {r['machine_busy']:>5.0%} "
            f"{r['client_busiest']:>7.0%} {r['mounted_p50_ms']:>7.1f}/{r['mounted_p99_ms']:>5.1f}ms "
            f"{r['history_p50_ms']:>7.1f}/{r['history_p99_ms']:>5.1f}ms {r['lost']:>4} {r['duplicates']:>4} "
            f"{r['order_inversions']:>4}"
        )
    for key in ("ratio_2_1", "ratio_4_1"):
        if key in summary:
            print(f"ingest ratio {key[6]}/{key[8]} processes: {summary[key]:.2f}")
    print(
        f"  for reference (service_benchmark.py's targets on a quiet single process, not judged here): "
        f"ingest >= {REFERENCE_EVENTS_PER_S:,.0f} events/s (slowest N here: "
        f"{summary['slowest_events_per_s']:,.0f}); query p99 <= {REFERENCE_P99_MS:g} ms (worst here "
        f"during ingest: mounted {summary['worst_mounted_p99_ms']:.0f} ms, "
        f"history {summary['worst_history_p99_ms']:.0f} ms)"
    )
    verdicts: list[tuple[str, bool]] = [
        (
            "0 lost, 0 stored twice, 0 unexpected",
            summary["lost"] + summary["duplicates"] + summary["unexpected"] == 0,
        ),
        ("per-beamline order kept", summary["order_inversions"] == 0),
        ("0 dead letters", summary["dead_letters"] == 0),
    ]
    for text, ok in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    busy = max(r["machine_busy"] for r in summary["runs"].values())
    if busy > 0.85:
        print(
            f"  note: the machine's {summary['cpus']} CPUs were {busy:.0%} busy: the rate is bounded by the "
            "machine, not by the number of service processes"
        )
    client_max = max(r["client_busiest"] for r in summary["runs"].values())
    if client_max > 0.8:
        print(
            f"  note: a client process was {client_max:.0%} busy: the client side may limit the rate "
            "(try --clients)"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, help="events in all (default 100,000; --quick 10,000)")
    parser.add_argument("--quick", action="store_true", help="10,000 events: a smoke test")
    parser.add_argument("--processes", default="1,2,4", help="service process counts to run (default 1,2,4)")
    parser.add_argument("--beamlines", type=int, default=20, help="beamlines, each with its outbox (20)")
    parser.add_argument("--clients", type=int, default=2, help="client processes running deliverers (2)")
    parser.add_argument("--batch", type=int, default=200, help="the deliverers' max_batch (200)")
    parser.add_argument("--threads", type=int, help="threads per service process (service default: 8)")
    parser.add_argument("--query-rate", type=float, default=40.0, help="GETs per second in all (40)")
    parser.add_argument("--query-threads", type=int, default=4, help="querying threads (4)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to drain, per N (600)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (kept on failure)")
    args = parser.parse_args(argv)
    args.events = args.events or (10_000 if args.quick else 100_000)
    try:
        args.processes = [int(x) for x in args.processes.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--processes: comma-separated integers, got {args.processes!r}")
    if not args.processes or min(args.processes) < 1:
        parser.error("--processes: at least one count, each >= 1")
    if args.events < 2 * args.beamlines:
        parser.error("--events: at least one mount/unmount pair per beamline")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    roles: dict[str, Callable[[str], int]] = {"client": client_main, "query": query_main}
    if argv and argv[0] in roles:  # a helper process of the parent (see Child)
        return roles[argv[0]](argv[1])
    args = parse_args(argv)
    summary = run_all(args)
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
