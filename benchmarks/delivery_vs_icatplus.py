"""Our delivery (outbox + RestClient + Deliverer) vs pyicat-plus's e-logbook ``send_message``.

Both post the same N sample events (the contract's JSON; for pyicat-plus as the message text) to
the same loopback HTTP server, started here (gevent ``StreamServer``, a minimal HTTP/1.1 that
answers 200 and counts the distinct event ids that arrived in answered requests). Figures:

- rate: events/s end to end (ours: outbox write in Redis + draining, batches of 200 and one per
  request; pyicat-plus: ``IcatClient.send_message`` per event, one connection each), and ratios;
- loss: the same again while the server closes every 5th request's connection without answering.
  Ours retries from the outbox (target: 0 lost); pyicat-plus does not retry (the error is raised to
  the caller, or logged with ``raise_error = False``), so those events never arrive.

Starts a beacon for its Redis (where the outbox lives).

Usage: .venv/bin/python benchmarks/delivery_vs_icatplus.py [--events 2000] [--drop-every 5] [--quick]
[--json FILE]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all(thread=False)  # as in a BLISS session

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402
import requests  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from bliss_sampletrack.core import Event, Sample, Source  # noqa: E402
from bliss_sampletrack.delivery.clients import RestClient  # noqa: E402
from bliss_sampletrack.delivery.loop import Backoff, Deliverer  # noqa: E402
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox  # noqa: E402
from bliss_sampletrack.testbed.beacon import running_beacon  # noqa: E402

EVENT_ID = re.compile(rb'event_id\\*"\s*:\s*\\*"([0-9a-f-]{36})')
DRAIN_DEADLINE_S = 300.0


class CountingServer:
    """Loopback HTTP/1.1 server (keep-alive) answering 200, optionally dropping every Nth request
    (the 1st, N+1th, 2N+1th...: a short run still sees a drop)."""

    def __init__(self, drop_every: int = 0) -> None:
        self.drop_every = drop_every
        self.requests = 0
        self.dropped = 0
        self.arrived: set[bytes] = set()
        self._server = StreamServer(("127.0.0.1", 0), self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> CountingServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(timeout=1)

    def _handle(self, sock: Any, _address: Any) -> None:
        rfile = sock.makefile("rb")
        try:
            while True:
                request_line = rfile.readline()
                if not request_line.strip():
                    return
                target = request_line.split(b" ")[1]
                length = 0
                while True:
                    header = rfile.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = rfile.read(length)
                self.requests += 1
                if self.drop_every and self.requests % self.drop_every == 1 % self.drop_every:
                    self.dropped += 1
                    return  # close without answering
                answer, status = self._answer(target, body)
                sock.sendall(
                    b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, len(answer), answer)
                )
        except OSError:
            return
        finally:
            rfile.close()
            sock.close()

    def _answer(self, target: bytes, body: bytes) -> tuple[bytes, int]:
        ids = EVENT_ID.findall(body)
        self.arrived.update(ids)
        if target.startswith(b"/events/batch"):
            results = [{"event_id": i.decode(), "status": 201} for i in ids]
            return json.dumps({"results": results}).encode(), 200
        if target.startswith(b"/events") and ids:  # the contract's answer: the stored event
            return json.dumps({"event": {"event_id": ids[0].decode()}}).encode(), 201
        return b"{}", 200


def make_events(n: int, beamline: str) -> list[Event]:
    t0 = datetime(2026, 11, 24, tzinfo=UTC)
    return [
        Event.mounted(
            Sample(barcode=f"B-{i:06d}", name=f"bench sample {i}"),
            beamline=beamline,
            session="bench",
            source=Source.SAMPLE_CHANGER,
            occurred_at=t0 + timedelta(milliseconds=i),
        )
        for i in range(n)
    ]


def run_ours(redis_client: Any, n: int, max_batch: int, drop_every: int, tag: str) -> dict[str, float]:
    """Write N events into a fresh outbox and drain it into the server: rate and loss."""
    beamline = f"bench-{tag}"
    events = make_events(n, beamline)
    with CountingServer(drop_every) as server:
        outbox = RedisStreamOutbox(redis_client, beamline)
        client = RestClient("bench", server.url, "token", max_batch=max_batch)
        deliverer = Deliverer(outbox, client, backoff=Backoff(initial=0.01, maximum=0.1))
        start = time.perf_counter()
        pipeline = outbox.redis.pipeline(transaction=False)
        for event in events:  # one outbox write per event, as the tracker does
            outbox.add(pipeline, [event])
        pipeline.execute()
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        while outbox.pending(client.name) and time.monotonic() < deadline:
            deliverer.step()
        elapsed = time.perf_counter() - start
        lost = n - len(server.arrived & {str(e.event_id).encode() for e in events})
        return {"per_s": n / elapsed, "lost": lost, "dropped": server.dropped, "requests": server.requests}


def run_icatplus(n: int, drop_every: int) -> dict[str, float]:
    """``IcatClient.send_message`` per event (the e-logbook path): rate, loss, errors seen by the caller."""
    from pyicat_plus.client.main import IcatClient

    events = make_events(n, "id00")
    with CountingServer(drop_every) as server:
        client = IcatClient(
            elogbook_url=server.url, elogbook_token="token", beamline="id00", proposal="mx2532"
        )
        errors = 0
        start = time.perf_counter()
        for event in events:
            try:
                client.send_message(event.to_json(), msg_type="info")
            except requests.RequestException:
                errors += 1  # pyicat-plus does not retry: the caller gets (or, raise_error off, a log)
        elapsed = time.perf_counter() - start
        lost = n - len(server.arrived & {str(e.event_id).encode() for e in events})
        return {"per_s": n / elapsed, "lost": lost, "dropped": server.dropped, "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, help="events per run (default 2,000; --quick 300)")
    parser.add_argument("--batch", type=int, default=200, help="our batch size (default 200)")
    parser.add_argument("--drop-every", type=int, default=5, help="server drops every Nth request")
    parser.add_argument("--quick", action="store_true", help="300 events per run")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    n = args.events or (300 if args.quick else 2000)
    logging.getLogger("bliss_sampletrack").setLevel(logging.ERROR)  # the retries' warnings
    logging.getLogger("pyicat_plus").setLevel(logging.CRITICAL)

    work = Path(tempfile.mkdtemp(prefix="sampletrack-vs-icat-"))
    results: dict[str, dict[str, float]] = {}
    try:
        with running_beacon(work / "beacon") as beacon:
            redis_client = redis.Redis.from_url(beacon.redis_url)
            for drop in (0, args.drop_every):
                suffix = "drop" if drop else "ok"
                results[f"ours_batch_{suffix}"] = run_ours(redis_client, n, args.batch, drop, f"b{suffix}")
                results[f"ours_single_{suffix}"] = run_ours(redis_client, n, 1, drop, f"s{suffix}")
                results[f"icatplus_{suffix}"] = run_icatplus(n, drop)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures: dict[str, float | int] = {"events": n, "batch": args.batch, "drop_every": args.drop_every}
    for name, values in results.items():
        for key, value in values.items():
            figures[f"{name}_{key}"] = value
    figures["ratio_batch_vs_icatplus"] = figures["ours_batch_ok_per_s"] / figures["icatplus_ok_per_s"]
    figures["ratio_single_vs_icatplus"] = figures["ours_single_ok_per_s"] / figures["icatplus_ok_per_s"]

    print(f"delivery: ours (outbox + RestClient) vs pyicat-plus send_message, {n} events, loopback")
    for label, key in (
        (f"ours, batches of {args.batch}", "ours_batch"),
        ("ours, one per request", "ours_single"),
        ("pyicat-plus send_message", "icatplus"),
    ):
        print(
            f"  {label:28}: {figures[f'{key}_ok_per_s']:8.0f} events/s; server dropping every "
            f"{args.drop_every}th request: {figures[f'{key}_drop_lost']:.0f} lost "
            f"({figures[f'{key}_drop_dropped']:.0f} requests dropped)"
        )
    print(
        f"  ratio ours/pyicat-plus: batched {figures['ratio_batch_vs_icatplus']:.1f}x, "
        f"one per request {figures['ratio_single_vs_icatplus']:.2f}x; ours lost "
        f"{figures['ours_batch_drop_lost'] + figures['ours_single_drop_lost']:.0f} (target 0)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
