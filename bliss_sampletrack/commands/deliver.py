"""``sampletrack deliver`` and ``sampletrack status``: the outbox outside a BLISS session.

``status`` also says which BLISS session owns the tracker (records its changes) now.

Both read the tracker's configuration from beacon (``--beacon HOST:PORT --tracker NAME``) and
its outbox from beacon's Redis. ``deliver`` runs the same delivery loop as the session, under the
same per-client Redis lease (delivery/lease.py), so the two never deliver the same event
concurrently: run it as a small daemon beside the session (it stands by while the session
delivers), or with ``--drain`` to empty the outbox once. ``status`` is a read: it builds no
delivery client and so needs no secret.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from bliss_sampletrack.delivery.lease import MIN_LEASE_TTL_S
from bliss_sampletrack.delivery.loop import LOCK_TTL_S
from bliss_sampletrack.delivery.manager import progress_bar
from bliss_sampletrack.errors import SampleTrackError


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--beacon", default=os.environ.get("BEACON_HOST"), help="HOST:PORT (default: $BEACON_HOST)"
    )
    parser.add_argument(
        "--tracker", default="tracker", help="the tracker's name in beacon (default: tracker)"
    )
    return parser


def _connect(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(ObjectConfig of the tracker, its outbox, the beacon Redis)."""
    if not args.beacon:
        raise SampleTrackError("no beacon: give --beacon HOST:PORT or set BEACON_HOST")
    os.environ["BEACON_HOST"] = args.beacon
    import bliss  # noqa: F401  (gevent monkey-patching first)
    from bliss.config.conductor.client import get_redis_proxy
    from bliss.config.static import get_config

    from bliss_sampletrack.config_node import ObjectConfig
    from bliss_sampletrack.delivery.outbox import RedisStreamOutbox

    node = get_config().get_config(args.tracker)
    if node is None:
        raise SampleTrackError(f"beacon {args.beacon} has no object named {args.tracker!r}")
    cfg = ObjectConfig(args.tracker, node)
    redis = get_redis_proxy()
    return cfg, RedisStreamOutbox(redis, cfg.get("beamline", str)), redis


def deliver_main(argv: list[str] | None = None) -> int:
    parser = _parser("sampletrack deliver", "Deliver the tracker's outbox to its tracking services.")
    parser.add_argument("--drain", action="store_true", help="deliver what is pending, then exit")
    parser.add_argument("--timeout", type=float, default=300.0, help="with --drain: give up after this (s)")
    parser.add_argument(
        "--retry-dead-letters", action="store_true", help="send the dead letters again, then exit"
    )
    parser.add_argument(
        "--lock-ttl",
        type=float,
        default=LOCK_TTL_S,
        help=f"seconds after which another deliverer takes over if this one dies (default {LOCK_TTL_S:g})",
    )
    args = parser.parse_args(argv)
    if args.lock_ttl < MIN_LEASE_TTL_S:
        # renewed every ttl/3: shorter than that, a busy process loses its lock while it works
        parser.error(f"--lock-ttl must be at least {MIN_LEASE_TTL_S:g} s, got {args.lock_ttl:g}")
    try:
        cfg, outbox, _ = _connect(args)
        from bliss_sampletrack.delivery.clients import clients_from_config
        from bliss_sampletrack.delivery.manager import DeliveryManager

        manager = DeliveryManager(outbox, clients_from_config(cfg), lock_ttl=args.lock_ttl)
    except SampleTrackError as exc:
        print(f"sampletrack deliver: {exc}", file=sys.stderr)
        return 2
    if not manager.deliverers:
        print(
            f"sampletrack deliver: tracker {args.tracker!r} has no 'delivery' clients configured",
            file=sys.stderr,
        )
        return 2
    if args.retry_dead_letters:
        for client, (delivered, dead) in manager.retry_dead_letters().items():
            print(f"{client}: {delivered} delivered, {dead} still dead")
        return 0
    import gevent
    import gevent.event

    manager.start()
    if args.drain:
        drained = manager.drain(args.timeout, progress_bar)
        print()
        manager.stop()
        for status in manager.status():
            print(status.line())
        return 0 if drained else 1
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    print(
        f"delivering outbox {outbox.key} to {', '.join(d.client.describe() for d in manager.deliverers)}",
        flush=True,
    )
    stop.wait()
    manager.stop()
    return 0


def status_main(argv: list[str] | None = None) -> int:
    parser = _parser("sampletrack status", "The tracker's state, recent events and delivery, from beacon.")
    args = parser.parse_args(argv)
    try:
        cfg, outbox, redis = _connect(args)
        from bliss_sampletrack.delivery.clients import described_from_config
        from bliss_sampletrack.delivery.manager import client_status, writeback_outbox
        from bliss_sampletrack.tracker.store import RedisTrackerStore, TrackerLease

        store = RedisTrackerStore(redis, args.tracker, outbox)
        snapshot = store.load()
        lease = TrackerLease(redis, args.tracker, "sampletrack status")  # only read, never taken
        holder, claim_ms = lease.current(), redis.pttl(lease.key)
        # a read: no delivery client is built, so no secret (write token, API key) is needed
        described = described_from_config(cfg)
    except SampleTrackError as exc:
        print(f"sampletrack status: {exc}", file=sys.stderr)
        return 2
    if snapshot is None:
        print(f"tracker {args.tracker!r}: no state recorded yet")
    else:
        sample = f" {snapshot.sample.label}" if snapshot.sample else ""
        reason = f" ({snapshot.reason})" if snapshot.reason else ""
        print(
            f"tracker {args.tracker!r}: {snapshot.state}{sample}{reason} since {snapshot.since.isoformat()}"
        )
    if holder is None:
        print("owner: nobody (the next change in a BLISS session takes it)")
    else:
        expires = f", claim expires in {claim_ms / 1000:.0f} s unless renewed" if claim_ms > 0 else ""
        print(f"owner: {holder.describe()}{expires}")
    for event in store.history(5):
        print(f"  {event.occurred_at.isoformat()} {event.type} {event.status} {event.sample.label}")
    statuses = [(outbox, client_status(outbox, name, description)) for name, description in described]
    if not statuses:
        print(f"delivery: none configured ({outbox.pending()} event(s) kept in the outbox)")
    writebacks = writeback_outbox(outbox)  # the clients that ever wrote an inventory's findings back
    for name in writebacks.clients():
        statuses.append((writebacks, client_status(writebacks, name, f"{name}: ICAT+ write-back")))
    for box, status in statuses:
        print(f"delivery: {status.line()}")
        for letter in box.dead_letters(status.client)[-5:]:
            if letter.event is None:
                what = f"entry {letter.entry}"
            else:
                what = f"{letter.event.event_id} ({getattr(letter.event, 'sample', letter.event).label})"
            print(f"  dead letter {what}: {letter.answer}")
    return 0
