"""How fast delivery resumes after an outage of the tracking service, and after a deliverer dies.

Measured from the outside, with the real processes on loopback, so that the figures hold whatever
the delivery loop does inside: a beacon (its settings Redis holds the outbox), the tracking service
(``sampletrack-service serve`` on SQLite, not PostgreSQL), a :class:`FaultyProxy` in front of it, and
``sampletrack deliver`` processes of a tracker whose one REST client points at the proxy (the
client's defaults: timeout 10 s, batches of up to 200; the deliverer's default lock TTL:
``--lock-ttl`` is never passed). This script appends the events to the tracker's outbox itself, one
MULTI/EXEC per event as the tracker does (no BLISS session). Every "stored at" time is the
service's own ``received_at`` of the event, read from its database: the ground truth is what the
service stored, not what the deliverer believes.

- ``recovery_after_outage_s`` (``--outages N`` times): the proxy goes down (connection refused)
  for a seeded random ``--outage-range`` seconds while an event is queued every 0.5 s; at T it
  forwards again. Recovery = ``received_at`` of the last event queued during the outage - T.
  Target <= 1 s.
- ``takeover_after_kill_s`` (``--kills N`` times): two deliverers run for the tracker (one holds
  the lock and delivers, the other stands by), an event is queued every 0.1 s. At a seeded random
  moment the one that delivers is killed with SIGKILL at K; one event is queued right after.
  Takeover = the earliest ``received_at`` of an event queued after K - K (only the survivor can
  have sent it). The killed one is then started again, to stand by. Target <= 2 s. The deliverer
  is found by the pid in its lock's value (any Redis key of the outbox named ``*lock*`` or
  ``*lease*`` whose value names exactly one of the two pids); when that does not tell, by the
  proxy's view: the process owning the client socket of the last ``POST`` (from ``/proc``). The
  proxy also checks that the first ``POST`` after the kill came from the survivor.
- ``restart_to_first_send_s`` (``--restarts N`` times, one deliverer only): the only deliverer is
  killed at K, a new ``sampletrack deliver`` is started at once; the same measure as the takeover.
  It includes the new process' Python and BLISS imports and its reading of beacon's configuration
  (``restart_ready_s``: K to its ready line, as this script sees it in its log, polled every
  50 ms), and whatever remains of the killed one's lock.
- ``steady_latency_s``: queued -> stored with no fault (events every 0.1 s for ``--warmup`` s),
  for scale.

Caveats: ``received_at`` is taken by the service when its insert transaction starts (the commit is
a few ms later) and compared with this process' ``time.time()``: same machine, same clock, but a
clock step during the run would show. Each figure includes the proxy's hop (well under 1 ms) and
one HTTP round trip. Events are queued one at a time, so the takeover and restart figures include
up to the time to queue one event after K (about a millisecond). The outbox also holds the events
that were in flight at the kill; the survivor sends them again and the service answers replay: at
the end every queued event must be stored once and in order (``delivery_check``). A loaded
machine lengthens everything (process start above all).

Usage: .venv/bin/python benchmarks/delivery_recovery.py [--quick] [--outages 5] [--outage-range 10,30]
       [--kills 5] [--restarts 3] [--seed 20] [--json FILE]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all(thread=False)  # the proxy and the waits are greenlets, as in the fault tests

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import redis  # noqa: E402

from bliss_sampletrack.core import Event, Sample, Source  # noqa: E402
from bliss_sampletrack.core.contract import TIMESTAMP_FORMAT  # noqa: E402
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox  # noqa: E402
from bliss_sampletrack.demo.service_process import ServiceProcess  # noqa: E402
from bliss_sampletrack.testbed.beacon import BeaconServer, free_port, running_beacon  # noqa: E402
from bliss_sampletrack.testbed.faults.processes import ManagedProcess, start_deliverer  # noqa: E402
from bliss_sampletrack.testbed.faults.service import FaultyProxy, check_delivery  # noqa: E402

log = logging.getLogger("delivery_recovery")

TARGET_RECOVERY_S = 1.0
TARGET_TAKEOVER_S = 2.0
TRACKER, BEAMLINE, CLIENT = "bench_recovery", "bench20", "bench_recovery_svc"
TOKEN_ENV = "BENCH_RECOVERY_TOKEN"
OUTAGE_INTERVAL_S = 0.5  # an event queued this often during the outage phase
FLOW_INTERVAL_S = 0.1  # and this often otherwise
STORED_TIMEOUT_S = 120.0  # the longest wait for one event to be stored (the old backoff caps at 60 s)
START_TIMEOUT_S = 180.0  # a deliverer's start (BLISS imports) on a loaded machine
POLL_S = 0.02

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not measure (a wait timed out, a process would not start)."""


def wait_until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``condition`` (cooperatively) until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        gevent.sleep(POLL_S)


def summary(samples: list[float], target: float | None = None) -> dict[str, Any]:
    """Median, max and every sample (seconds); with a target, whether the median and max meet it."""
    result: dict[str, Any] = {
        "median": statistics.median(samples),
        "max": max(samples),
        "min": min(samples),
        "n": len(samples),
        "samples": [round(s, 4) for s in samples],
    }
    if target is not None:
        result["target"] = target
        result["passed"] = result["max"] <= target
    return result


# -- the events, queued as the tracker queues them ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Queued:
    """One event put in the outbox: its id and the wall-clock time before and after the EXEC."""

    event_id: str
    before: float
    after: float


class Producer:
    """Appends one mount event at a time to the outbox (MULTI/EXEC, as the tracker does); a
    greenlet does it every ``interval`` seconds while running."""

    def __init__(self, outbox: RedisStreamOutbox) -> None:
        self.outbox = outbox
        self.queued: list[Queued] = []
        self.interval = FLOW_INTERVAL_S
        self._stop = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None

    def produce(self) -> Queued:
        n = len(self.queued)
        event = Event.mounted(
            Sample(barcode=f"R-{n:06d}", name=f"recovery sample {n}"),
            beamline=self.outbox.beamline,
            session="bench",
            source=Source.MANUAL,
            occurred_at=datetime.now(UTC),
        )
        before = time.time()
        pipeline = self.outbox.redis.pipeline(transaction=True)
        self.outbox.add(pipeline, [event])
        pipeline.execute()
        queued = Queued(str(event.event_id), before, time.time())
        self.queued.append(queued)
        return queued

    def start(self) -> None:
        self._stop.clear()
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.produce()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop queuing; raise if the greenlet had failed."""
        self.halt()
        self.check()

    def halt(self) -> None:
        self._stop.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout=10)

    def check(self) -> None:
        """Raise if the producing greenlet died (Redis gone...): the figures would be meaningless."""
        if self._greenlet is not None and self._greenlet.dead and self._greenlet.exception is not None:
            raise BenchError(f"queuing events failed: {self._greenlet.exception!r}")

    def ids(self) -> list[str]:
        return [q.event_id for q in self.queued]

    def after(self, moment: float) -> list[Queued]:
        """Events whose EXEC started after ``moment``: the outbox could not show them before."""
        return [q for q in self.queued if q.before > moment]


# -- what the service stored -------------------------------------------------------------------------
def _epoch(text: str) -> float:
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC).timestamp()


class StoredEvents:
    """The service's SQLite database, read-only: when it stored which event (``received_at``)."""

    def __init__(self, db_url: str) -> None:
        self.path = db_url.removeprefix("sqlite:///").split("?", 1)[0]

    def _query(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, tuple(params)).fetchall()
        finally:
            db.close()

    def received(self, event_ids: list[str]) -> dict[str, float]:
        """event id -> when the service stored it (epoch seconds), for those it has stored."""
        found: dict[str, float] = {}
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(f"SELECT event_id, received_at FROM events WHERE event_id IN ({marks})", chunk)
            found.update((event_id, _epoch(received)) for event_id, received in rows)
        return found

    def first_stored(self, queued: list[Queued]) -> float | None:
        """The earliest ``received_at`` among ``queued``, once one of them is stored."""
        received = self.received([q.event_id for q in queued])
        return min(received.values()) if received else None

    def all_ids(self) -> list[str]:
        rows = self._query("SELECT event_id FROM events WHERE beamline = ? ORDER BY seq", (BEAMLINE,))
        return [row[0] for row in rows]


# -- the proxy, and who sends through it -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Seen:
    """A request that reached the proxy: when, what, and from which watched process (or None)."""

    at: float
    method: str
    target: str
    pid: int | None


def socket_owner(local_port: int, remote_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` owns the loopback TCP socket ``local_port`` -> ``remote_port`` (Linux /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            if local == local_port and remote == remote_port:
                inodes.add(fields[9])
    if not inodes:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return pid
    return None


class WatchingProxy(FaultyProxy):
    """A FaultyProxy that also notes each request's arrival time and, when ``watch`` holds pids,
    which of those processes sent it (resolved from /proc while its connection is open).

    Overrides FaultyProxy's ``_handle``/``_serve`` (private to it): a change there shows here."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.seen: list[Seen] = []
        self.watch: set[int] = set()
        self._senders: dict[Any, int | None] = {}

    def _handle(self, conn: Any, address: Any) -> None:
        if self.watch:
            self._senders[conn] = socket_owner(address[1], self.port, self.watch)
        try:
            super()._handle(conn, address)
        finally:
            self._senders.pop(conn, None)

    def _serve(self, conn: Any, request: Any) -> None:
        self.seen.append(Seen(time.time(), request.method, request.target, self._senders.get(conn)))
        super()._serve(conn, request)

    def first_after(self, moment: float, method: str | None = None) -> Seen | None:
        return next((s for s in self.seen if s.at > moment and (method is None or s.method == method)), None)

    def last_sender(self, since: float) -> int | None:
        """The watched process that sent the last POST since ``since``, if any was resolved."""
        for seen in reversed(self.seen):
            if seen.at <= since:
                return None
            if seen.method == "POST" and seen.pid is not None:
                return seen.pid
        return None


def lock_holder(client: redis.Redis, outbox: RedisStreamOutbox, pids: list[int]) -> int | None:
    """The pid among ``pids`` named by the outbox's lock (or lease) keys, when exactly one is."""
    named: set[int] = set()
    for raw_key in client.scan_iter(f"{outbox.key}:*"):
        key = raw_key.decode()
        if not re.search(r"lock|lease", key, re.IGNORECASE):
            continue
        kind = client.type(raw_key).decode()
        if kind == "string":
            value = client.get(raw_key)
            text = "" if value is None else value.decode(errors="replace")
        elif kind == "hash":
            text = " ".join(f"{k.decode()}={v.decode()}" for k, v in client.hgetall(raw_key).items())
        else:
            continue
        named |= {pid for pid in pids if re.search(rf"(?<!\d){pid}(?!\d)", text)}
    return named.pop() if len(named) == 1 else None


# -- the bench ------------------------------------------------------------------------------------------
def tracker_yaml(url: str) -> str:
    return f"""\
# written by benchmarks/delivery_recovery.py
- name: {TRACKER}
  plugin: bliss
  package: bliss_sampletrack.tracker.controller
  class: SampleTracker
  beamline: {BEAMLINE}
  tag_scans: false
  deliver_in_session: false
  delivery:
    - {{name: {CLIENT}, type: rest, url: "{url}", token_env: {TOKEN_ENV}}}
"""


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, server: BeaconServer) -> None:
        self.args, self.work, self.server = args, work, server
        self.rng = random.Random(args.seed)
        self.started = time.monotonic()
        self.redis = redis.Redis.from_url(server.redis_url, socket_timeout=10)
        self.outbox = RedisStreamOutbox(self.redis, BEAMLINE)
        self.producer = Producer(self.outbox)
        self.service: ServiceProcess | None = None
        self.proxy: WatchingProxy | None = None
        self.stored: StoredEvents | None = None
        self.token = ""
        self.deliverers: list[ManagedProcess] = []

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", flush=True)

    # -- set-up and tear-down ---------------------------------------------------------------------
    def setup(self) -> None:
        # small batches: no validation worker processes (they cost CPU at start-up), as tools/soak.py
        os.environ.setdefault("SAMPLETRACK_SERVICE_VALIDATION_WORKERS", "0")
        self.service = ServiceProcess(self.work / "service.db", free_port(), self.work / "service.log")
        self.token = self.service.create_token(BEAMLINE)
        self.service.start(timeout=60)
        self.stored = StoredEvents(self.service.db_url)
        self.proxy = WatchingProxy(self.service.api_url)
        self.proxy.start()
        folder = self.server.db_path / "bench"
        folder.mkdir(exist_ok=True)
        (folder / "recovery.yml").write_text(tracker_yaml(self.proxy.url))
        self.say(
            f"beacon {self.server.host}, service {self.service.api_url} (SQLite), proxy {self.proxy.url}"
        )
        starting = [gevent.spawn(self._new_deliverer, i) for i in range(2)]
        gevent.joinall(starting, timeout=START_TIMEOUT_S, raise_error=True)
        if not all(g.successful() for g in starting):
            raise BenchError(f"the deliverers did not start within {START_TIMEOUT_S:g} s")
        self.say(f"two deliverers running: pids {[d.pid for d in self.deliverers]}")

    def _new_deliverer(self, index: int) -> None:
        self.deliverers.append(
            start_deliverer(
                self.server.host,
                TRACKER,
                self.work / f"deliverer-{index}.log",
                env={TOKEN_ENV: self.token},
                timeout=START_TIMEOUT_S,
            )
        )

    def teardown(self) -> None:
        self.producer.halt()
        for deliverer in self.deliverers:
            if deliverer.alive:
                deliverer.terminate(timeout=15)
        if self.proxy is not None:
            self.proxy.stop()
        if self.service is not None:
            self.service.stop()
        self.redis.close()

    # -- helpers ------------------------------------------------------------------------------------
    def first_stored_after(self, moment: float, timeout: float, what: str) -> float:
        """Wait until an event queued after ``moment`` is stored; its ``received_at``."""
        assert self.stored is not None

        def stored() -> float | None:
            self.producer.check()
            return self.stored.first_stored(self.producer.after(moment)) if self.stored else None

        return wait_until(stored, timeout, what)

    def received_at(self, queued: Queued, timeout: float, what: str) -> float:
        assert self.stored is not None

        def stored() -> float | None:
            self.producer.check()
            return self.stored.received([queued.event_id]).get(queued.event_id) if self.stored else None

        return wait_until(stored, timeout, what)

    def wait_drained(self) -> None:
        """Everything queued so far is stored (delivery is in order: the last one is enough)."""
        if self.producer.queued:
            self.received_at(self.producer.queued[-1], STORED_TIMEOUT_S, "the backlog to be delivered")

    def delivering(self, candidates: list[ManagedProcess]) -> tuple[ManagedProcess, dict[str, Any]]:
        """The candidate that delivers now: named by the lock, else seen sending by the proxy."""
        assert self.proxy is not None
        pids = [p.pid for p in candidates if p.pid is not None and p.alive]
        since = time.time()
        self.proxy.watch = set(pids)
        try:
            by_lock = lock_holder(self.redis, self.outbox, pids)
            by_proxy: int | None = None
            if by_lock is None:  # the lock's format changed: wait for the next POST and its sender
                by_proxy = wait_until(
                    lambda: self.proxy.last_sender(since) if self.proxy else None, 10, "a POST"
                )
        finally:
            self.proxy.watch = set()
        pid = by_lock if by_lock is not None else by_proxy
        [chosen] = [p for p in candidates if p.pid == pid]
        return chosen, {"victim_pid": pid, "found_by": "lock" if by_lock is not None else "proxy"}

    # -- the measurements ----------------------------------------------------------------------------
    def steady(self) -> list[float]:
        self.producer.interval = FLOW_INTERVAL_S
        first = len(self.producer.queued)
        gevent.sleep(self.args.warmup)
        self.wait_drained()
        assert self.stored is not None
        sample = self.producer.queued[first:]
        received = self.stored.received([q.event_id for q in sample])
        latencies = [received[q.event_id] - q.after for q in sample if q.event_id in received]
        median = statistics.median(latencies)
        self.say(f"steady flow: {len(latencies)} events, queued -> stored in {median:.3f} s (median)")
        return latencies

    def outages(self) -> list[dict[str, Any]]:
        assert self.proxy is not None
        low, high = self.args.outage_range
        samples = []
        self.producer.interval = OUTAGE_INTERVAL_S
        for i in range(self.args.outages):
            self.wait_drained()
            gevent.sleep(1.0)  # delivery idle and its backoff reset before the next outage
            length = self.rng.uniform(low, high)
            self.proxy.down()
            down_at = time.time()
            gevent.sleep(length)
            noticed = self.outbox.last_error(CLIENT)
            self.proxy.healthy()
            up_at = time.time()
            during = [q for q in self.producer.queued if down_at < q.before and q.after < up_at]
            if not during:
                raise BenchError(f"outage {i + 1}: no event was queued during it")
            stored_at = self.received_at(during[-1], STORED_TIMEOUT_S, f"outage {i + 1}'s backlog")
            first_request = self.proxy.first_after(up_at)
            request_text = None if first_request is None else f"{first_request.method} {first_request.target}"
            sample = {
                "outage_s": round(up_at - down_at, 3),
                "events_queued_during": len(during),
                "recovery_s": stored_at - up_at,
                "first_request_after_s": None if first_request is None else first_request.at - up_at,
                "first_request": request_text,
                "deliverer_saw_the_error": noticed is not None,
            }
            samples.append(sample)
            self.say(
                f"outage {i + 1}/{self.args.outages}: {sample['outage_s']:.1f} s down, "
                f"{len(during)} events queued; the last stored {sample['recovery_s']:.3f} s after it was up"
            )
        return samples

    def kills(self) -> list[dict[str, Any]]:
        self.producer.interval = FLOW_INTERVAL_S
        samples = []
        for i in range(self.args.kills):
            self.wait_drained()
            gevent.sleep(self.rng.uniform(1.0, 3.0))
            victim, found = self.delivering(self.deliverers)
            [survivor] = [d for d in self.deliverers if d is not victim]
            assert self.proxy is not None and survivor.pid is not None
            killed_at = time.time()
            victim.kill9()
            self.proxy.watch = {survivor.pid}  # to check that the survivor sends the next POST
            try:
                self.producer.produce()
                stored_at = self.first_stored_after(
                    killed_at, STORED_TIMEOUT_S, f"kill {i + 1}: the takeover"
                )
            finally:
                self.proxy.watch = set()
            post = self.proxy.first_after(killed_at, "POST")
            sample = {
                **found,
                "survivor_pid": survivor.pid,
                "takeover_s": stored_at - killed_at,
                "first_post_after_s": None if post is None else post.at - killed_at,
                "first_post_by_survivor": post is not None and post.pid == survivor.pid,
            }
            victim.start(timeout=START_TIMEOUT_S)  # back, standing by: two again
            samples.append(sample)
            self.say(
                f"kill {i + 1}/{self.args.kills}: pid {sample['victim_pid']} (found by: {found['found_by']}) "
                f"killed; an event queued after it was stored {sample['takeover_s']:.3f} s later"
            )
        return samples

    def restarts(self) -> list[dict[str, Any]]:
        self.producer.interval = FLOW_INTERVAL_S
        only, _ = self.delivering(self.deliverers)
        for other in self.deliverers:
            if other is not only:
                other.terminate(timeout=30)  # SIGTERM: it was standing by
        samples = []
        for i in range(self.args.restarts):
            self.wait_drained()
            gevent.sleep(self.rng.uniform(1.0, 3.0))
            killed_at = time.time()
            only.kill9()
            starter = gevent.spawn(self._start_timed, only)
            self.producer.produce()
            stored_at = self.first_stored_after(killed_at, STORED_TIMEOUT_S, f"restart {i + 1}: a send")
            ready_at = starter.get(timeout=START_TIMEOUT_S)
            sample = {"restart_s": stored_at - killed_at, "ready_s": ready_at - killed_at}
            samples.append(sample)
            self.say(
                f"restart {i + 1}/{self.args.restarts}: the new process ready {sample['ready_s']:.2f} s "
                f"after the kill; an event queued after the kill stored {sample['restart_s']:.3f} s after it"
            )
        return samples

    @staticmethod
    def _start_timed(process: ManagedProcess) -> float:
        """Start ``process``, wait for its ready line; when it came (epoch seconds)."""
        process.start(timeout=START_TIMEOUT_S)
        return time.time()

    def run(self) -> dict[str, Any]:
        self.setup()
        self.producer.start()
        steady = self.steady()
        outages = self.outages()
        kills = self.kills()
        restarts = self.restarts()
        self.producer.stop()
        self.wait_drained()
        assert self.stored is not None
        check = check_delivery(self.producer.ids(), self.stored.all_ids())
        bad = len(check.missing) + len(check.duplicated) + len(check.unexpected) + (not check.in_order)
        return {
            "backend": "sqlite",
            "seed": self.args.seed,
            "outage_range_s": list(self.args.outage_range),
            "recovery_after_outage_s": summary([s["recovery_s"] for s in outages], TARGET_RECOVERY_S),
            "takeover_after_kill_s": summary([s["takeover_s"] for s in kills], TARGET_TAKEOVER_S),
            "restart_to_first_send_s": summary([s["restart_s"] for s in restarts]),
            "restart_ready_s": summary([s["ready_s"] for s in restarts]),
            "steady_latency_s": summary(steady),
            "outages": outages,
            "kills": kills,
            "restarts": restarts,
            "delivery_check": {
                "events": len(self.producer.queued),
                "missing": len(check.missing),
                "duplicated": len(check.duplicated),
                "unexpected": len(check.unexpected),
                "in_order": check.in_order,
                "bad": bad,
            },
        }


def print_summary(figures: dict[str, Any]) -> None:
    def line(name: str, key: str, target: float | None) -> None:
        s = figures[key]
        verdict = ""
        if target is not None:
            verdict = f"  target <= {target:g} s  {'PASS' if s['passed'] else 'FAIL'}"
        samples = ", ".join(f"{x:.2f}" for x in s["samples"])
        print(f"  {name:<27}: median {s['median']:6.3f} s, max {s['max']:6.3f} s{verdict}")
        print(f"  {'':<27}  samples: {samples}")

    low, high = figures["outage_range_s"]
    print(f"\ndelivery recovery (SQLite service behind a proxy, sampletrack deliver, seed {figures['seed']})")
    line(f"recovery after {low:g}-{high:g} s outage", "recovery_after_outage_s", TARGET_RECOVERY_S)
    line("takeover after kill -9", "takeover_after_kill_s", TARGET_TAKEOVER_S)
    line("restart to first send", "restart_to_first_send_s", None)
    print(
        f"  {'':<27}  (includes Python/BLISS imports: ready line after "
        f"{figures['restart_ready_s']['median']:.2f} s median)"
    )
    print(
        f"  {'steady queued -> stored':<27}: median {figures['steady_latency_s']['median']:6.3f} s, "
        f"max {figures['steady_latency_s']['max']:6.3f} s"
    )
    check = figures["delivery_check"]
    state = "ok" if not check["bad"] else "PROBLEM"
    print(
        f"  delivery check: {check['events']} events, missing {check['missing']}, duplicated "
        f"{check['duplicated']}, unexpected {check['unexpected']}, in order {check['in_order']}: {state}"
    )


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH seconds, got {text!r}") from exc
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH, got {text!r}")
    return low, high


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 outages of 2-4 s, 2 kills, 1 restart")
    parser.add_argument("--outages", type=int, default=None, help="outages (default 5)")
    parser.add_argument("--outage-range", type=_range, default=None, help="LOW,HIGH s (default 10,30)")
    parser.add_argument("--kills", type=int, default=None, help="kill -9 of the delivering one (default 5)")
    parser.add_argument("--restarts", type=int, default=None, help="kill -9 of the only one (default 3)")
    parser.add_argument("--warmup", type=float, default=None, help="s of steady flow first (default 5)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    defaults = {"outages": 5, "outage_range": (10.0, 30.0), "kills": 5, "restarts": 3, "warmup": 5.0}
    if args.quick:
        defaults = {"outages": 2, "outage_range": (2.0, 4.0), "kills": 2, "restarts": 1, "warmup": 2.0}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.outages, args.kills, args.restarts) < 1:
        parser.error("--outages, --kills and --restarts must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="sampletrack-recovery-"))
    logging.basicConfig(level=logging.WARNING, filename=work / "bench.log")
    print(f"work folder (logs): {work}", flush=True)
    with running_beacon(work / "beacon") as server:
        bench = Bench(args, work, server)
        try:
            figures = bench.run()
        except BenchError as exc:
            print(f"delivery_recovery: could not measure: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.teardown()
    figures["quick"] = args.quick
    figures["seconds"] = round(time.monotonic() - bench.started, 1)
    print_summary(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
