"""One writer per tracker: a second BLISS session on the same tracker is refused, never a second writer.

Two real sessions: this process's (the ``bliss_session`` fixture) and one in a child process
(``testbed/faults/session.py``, serve mode), both on the test bed's beacon and Redis.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import redis as redis_py

from bliss_sampletrack.core import Event, EventType, Sample, Source
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import TrackerOwnedError
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testbed.faults.session import SessionDriver, read_history
from bliss_sampletrack.tracker import state as machine
from bliss_sampletrack.tracker.controller import SampleTracker
from bliss_sampletrack.tracker.state import EventContext, Snapshot, TrackerState
from bliss_sampletrack.tracker.store import Holder, RedisTrackerStore, TrackerLease

pytestmark = pytest.mark.bliss

NAME, BEAMLINE, TTL = "otracker", "own00", 2
OVERRIDES = {"beamline": BEAMLINE, "owner_ttl": TTL, "tag_scans": False}


def clear(redis: Any) -> None:
    for pattern in (f"sampletrack:{NAME}:*", f"sampletrack:outbox:{BEAMLINE}*"):
        for key in redis.scan_iter(pattern):
            redis.delete(key)


@pytest.fixture
def redis(beacon: BeaconServer) -> Iterator[Any]:
    client = redis_py.Redis.from_url(beacon.redis_url, socket_timeout=10)
    clear(client)
    yield client
    clear(client)
    client.close()


def local_tracker(**overrides: Any) -> SampleTracker:
    from bliss.config.static import get_config

    node = get_config().get_config("tracker")
    config = {key: node.get(key) for key in node.keys() if key != "reader"}
    config.update(OVERRIDES, **overrides)
    return SampleTracker(NAME, config)


@pytest.fixture
def other(beacon: BeaconServer, bliss_session: Any, tmp_path: Path) -> Iterator[SessionDriver]:
    """The second session: a child process on the same beacon, same tracker name and beamline."""
    with SessionDriver(beacon, tmp_path / "other", mode="serve", name=NAME, overrides=OVERRIDES) as driver:
        driver.start()
        yield driver


def state_in_redis(redis: Any) -> Snapshot:
    raw = redis.get(f"sampletrack:{NAME}:state")
    return Snapshot.from_dict(json.loads(raw))


def test_a_second_session_is_refused_and_told_who_owns(redis: Any, other: SessionDriver) -> None:
    assert other.command("mount LYS-0001")["ok"]
    mine = local_tracker()
    try:
        assert any(f"pid {other.pid}" in w and "take_over()" in w for w in mine.warnings), mine.warnings
        assert f"pid {other.pid}" in mine.owner() and f"pid {other.pid}" in mine.__info__()
        with pytest.raises(
            TrackerOwnedError, match=rf"session 'demo_session' .*pid {other.pid}.*take_over\(\)"
        ):
            mine.mount("THA-0003")
        assert state_in_redis(redis).sample.barcode == "LYS-0001"  # type: ignore[union-attr]

        # the owner closes its tracker: the key is released, this session takes it at its change,
        # computed from what the other session recorded (its mount is unmounted first)
        assert other.command("close")["ok"]
        mine.mount("THA-0003")
        assert "this session" in mine.owner()
        history = read_history(redis, NAME)
        assert [(e.type, e.sample.barcode) for e in history] == [
            (EventType.MOUNTED, "LYS-0001"),
            (EventType.UNMOUNTED, "LYS-0001"),
            (EventType.MOUNTED, "THA-0003"),
        ]
        assert history[1].mount_event_id == history[0].event_id

        reply = other.command("mount LYS-0002")  # now the other one is refused, naming this process
        assert not reply["ok"] and reply["error"] == "TrackerOwnedError", reply
        assert f"pid {os.getpid()}" in reply["message"]
        assert state_in_redis(redis).sample.barcode == "THA-0003"  # type: ignore[union-attr]
    finally:
        mine.close()
    assert redis.get(f"sampletrack:{NAME}:owner") is None  # close released it


def test_a_killed_owner_expires_and_take_over_moves_the_writer(
    redis: Any, other: SessionDriver, beacon: BeaconServer, tmp_path: Path
) -> None:
    assert other.command("mount LYS-0001")["ok"]
    other.kill()  # no close: its claim stays until the TTL runs out
    mine = local_tracker()
    try:
        with pytest.raises(TrackerOwnedError):
            mine.mount("THA-0003")
        with gevent.Timeout(TTL * 5):
            while redis.get(f"sampletrack:{NAME}:owner") is not None:
                gevent.sleep(0.1)
        mine.mount("THA-0003")

        # a third session knows this one is dead (it is not): take_over() makes it the writer
        with SessionDriver(beacon, tmp_path / "third", mode="serve", name=NAME, overrides=OVERRIDES) as third:
            third.start()
            assert not third.command("unmount")["ok"]
            assert third.command("take_over")["ok"]
            assert third.command("unmount")["ok"]
            with pytest.raises(TrackerOwnedError, match=f"pid {third.pid}"):
                mine.mount("LYS-0002")
            assert state_in_redis(redis).state is TrackerState.EMPTY
            third.stop()
    finally:
        mine.close()


def test_a_paused_owner_cannot_write_after_losing_its_key(redis: Any, other: SessionDriver) -> None:
    assert other.command("mount LYS-0001")["ok"]
    mine = local_tracker()
    try:
        other.pause()  # SIGSTOP: its renewal greenlet stops too, its key expires
        try:
            with gevent.Timeout(TTL * 5):
                while True:
                    try:
                        mine.mount("THA-0003")
                        break
                    except TrackerOwnedError:
                        gevent.sleep(0.2)
        finally:
            other.resume()
        reply = other.command("mount LYS-0002")  # it still believes it owns the tracker
        assert not reply["ok"] and reply["error"] == "TrackerOwnedError", reply
        assert state_in_redis(redis).sample.barcode == "THA-0003"  # type: ignore[union-attr]
        with gevent.Timeout(10):  # its renewal greenlet notices too, and says so
            while not any("lost the owner key" in w for w in other.command("state")["warnings"]):
                gevent.sleep(0.2)
    finally:
        mine.close()


def test_a_non_owner_tags_its_scans_with_what_the_owner_recorded(
    redis: Any, other: SessionDriver, bliss_session: Any, scan_saving: Any
) -> None:
    from bliss.common.scans import loopscan

    mine = local_tracker(tag_scans=True)  # created first: it restored nothing (UNKNOWN)
    try:
        assert other.command("mount LYS-0002")["ok"]
        tag = loopscan(1, 0.01, bliss_session.env_dict["diode"]).scan_info["sample"]
        assert (tag["state"], tag["barcode"], tag["@tracker"]) == ("MOUNTED", "LYS-0002", NAME)
        assert tag["mount_event_id"] == other.command("state")["mount_event_id"]
    finally:
        mine.close()


class TakeOverBeforeExec:
    """An outbox seam that lets another holder take the owner key between the commit's ownership
    check and its EXEC: the worst moment for an owner paused (or slow) mid-commit."""

    def __init__(self, redis: Any, beamline: str, lease: TrackerLease) -> None:
        self.outbox = RedisStreamOutbox(redis, beamline)
        self.lease = lease
        self.fired = False

    def add(self, pipeline: Any, events: list[Event]) -> None:
        if not self.fired:
            self.fired = True
            self.lease.take_over()
        self.outbox.add(pipeline, events)

    def pending(self) -> int:
        return self.outbox.pending()


def test_an_owner_that_loses_the_key_mid_commit_writes_nothing(redis: Any, beacon: BeaconServer) -> None:
    mine = TrackerLease(redis, NAME, "demo_session", TTL)
    thief = TrackerLease(redis_py.Redis.from_url(beacon.redis_url), NAME, "intruder", TTL)
    thief.holder = Holder("intruder", "elsewhere", 4242, "not-this-process", "now")
    seam = TakeOverBeforeExec(thief.redis, BEAMLINE, thief)
    store = RedisTrackerStore(redis, NAME, seam)
    assert mine.acquire()
    ctx = EventContext(BEAMLINE, "demo_session")
    change = machine.mount(Snapshot.initial(), Sample(barcode="LYS-0001"), Source.MANUAL, ctx)
    with pytest.raises(TrackerOwnedError, match="session 'intruder' on host elsewhere"):
        store.commit(change.snapshot, change.events, lease=mine, expect=None, check_state=True)
    assert seam.fired
    assert redis.get(store.state_key) is None and redis.llen(store.history_key) == 0
    assert seam.outbox.pending() == 0  # no event without its state change, none at all
    thief.redis.close()


def test_one_process_shares_its_ownership_and_recomputes_from_redis(redis: Any, bliss_session: Any) -> None:
    first, second = local_tracker(), local_tracker()  # as the tests and add_yaml reloads do
    try:
        first.mount("LYS-0001")
        second.mount("THA-0003")  # same process: allowed; its stale UNKNOWN is reloaded first
        history = read_history(redis, NAME)
        assert [(e.type, e.sample.barcode) for e in history][-2:] == [
            (EventType.UNMOUNTED, "LYS-0001"),
            (EventType.MOUNTED, "THA-0003"),
        ]
        first.close()  # releases the key; the other object takes it again at its next change
        assert redis.get(f"sampletrack:{NAME}:owner") is None
        second.unmount()
        assert state_in_redis(redis).state is TrackerState.EMPTY
    finally:
        first.close()
        second.close()
