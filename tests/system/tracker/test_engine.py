"""The tracker's engine without a BLISS session (``bliss_sampletrack.testing``): on fakeredis, and on
a real Redis server (the test bed's, no session opened)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from bliss_sampletrack import testing
from bliss_sampletrack.changers.protocol import ChangerEvent, ChangerEventKind
from bliss_sampletrack.core import EventType, Sample, Source, Status
from bliss_sampletrack.errors import MountRefusedError
from bliss_sampletrack.tracker.engine import Tracker
from bliss_sampletrack.tracker.state import Snapshot, TrackerState

LYS = Sample(barcode="LYS-0001", name="lysozyme_1")


class Interrupted(BaseException):
    """Stands for Ctrl-C thrown into a macro's greenlet."""


@pytest.fixture
def bench() -> Iterator[testing.ChangerBench]:
    bench = testing.changer_bench(samples=[LYS], load_time=0.01)
    yield bench
    bench.close()


def test_records_persist_with_their_sequence_and_a_second_engine_restores_them() -> None:
    tracker = testing.engine(samples=[LYS])
    seen: list[tuple[int, int, int]] = []
    tracker.listeners.append(lambda before, after, events: seen.append((before.seq, after.seq, len(events))))
    tracker.record_mount(LYS, Source.SAMPLE_CHANGER)
    tracker.record_unmount(Source.SAMPLE_CHANGER)
    tracker.set_unknown("who knows")
    tracker.set_unknown("who knows")  # no change
    assert seen == [(0, 1, 1), (1, 2, 1), (2, 3, 0)]
    again = Tracker("tracker", "test", tracker.store.redis)
    assert again.snapshot == tracker.snapshot and again.snapshot.seq == 3
    assert [e.type for e in testing.events(tracker)] == [EventType.MOUNTED, EventType.UNMOUNTED]
    assert tracker.outbox.pending() == 2
    tracker.close()


def test_the_tag_follows_the_changer_and_doubts_what_contradicts_it(bench: testing.ChangerBench) -> None:
    tracker, sc = bench.tracker, bench.changer
    sc.mount("1:01")
    tag = tracker.scan_tag()
    assert (tag["state"], tag["barcode"], tag["changer_position"]) == ("MOUNTED", "LYS-0001", "1:01")
    sc.set_presence(False)  # taken off by hand
    assert tracker.state is TrackerState.CONFLICT and tracker.scan_tag()["state"] == "CONFLICT"


def test_a_scan_tag_waits_for_the_change_being_recorded(bench: testing.ChangerBench) -> None:
    tracker, sc = bench.tracker, bench.changer
    tags: list[gevent.Greenlet] = []

    def scan_starts(event: ChangerEvent) -> None:
        if event.kind in (ChangerEventKind.LOADED, ChangerEventKind.UNLOADED):
            tags.append(gevent.spawn(tracker.scan_tag))  # runs while the link records the change

    bench.link.close()
    sc.subscribe(scan_starts)  # called before the link's callback
    bench.link.activate()
    sc.mount("1:01")
    loaded = tags[0].get(timeout=5)
    sc.unmount()
    unloaded = tags[1].get(timeout=5)
    assert (loaded["state"], loaded.get("barcode")) == ("MOUNTED", "LYS-0001"), loaded.get("reason")
    assert unloaded["state"] == "EMPTY"


def test_an_interrupted_macro_still_records_the_load(bench: testing.ChangerBench) -> None:
    tracker, sc = bench.tracker, bench.changer
    bench.link.close()
    mover: list[gevent.Greenlet] = []

    def interrupt(event: ChangerEvent) -> None:
        if event.kind is ChangerEventKind.LOADED:
            mover[0].kill(Interrupted, block=False)

    sc.subscribe(interrupt)
    bench.link.activate()
    mover.append(gevent.spawn(sc.mount, "1:01"))
    mover[0].join(timeout=5)
    assert isinstance(mover[0].exception, Interrupted)
    assert sc.mounted is not None and tracker.sample is not None and tracker.sample.barcode == "LYS-0001"


def test_manual_input_is_judged_by_the_changer(bench: testing.ChangerBench) -> None:
    tracker, sc = bench.tracker, bench.changer
    sc.mount("2:01")
    tracker.manual_policy = "refuse"
    with pytest.raises(MountRefusedError, match="2:01"):
        tracker.mount("LYS-0001")
    tracker.manual_policy = "conflict"
    tracker.mount("LYS-0001")
    assert tracker.state is TrackerState.CONFLICT and testing.events(tracker)[-1].status is Status.ERROR


@pytest.mark.bliss
def test_the_engine_on_a_real_redis_without_a_session(beacon: Any) -> None:
    import redis

    client = redis.Redis.from_url(beacon.redis_url)
    name = "engine_real_redis"
    for key in client.scan_iter(f"sampletrack:{name}:*"):
        client.delete(key)
    tracker = testing.engine(name, redis=client, samples=[LYS])
    try:
        tracker.mount("LYS-0001")
        tracker.unmount()
        stored = Snapshot.from_dict(json.loads(client.get(f"sampletrack:{name}:state")))
        assert stored.state is TrackerState.EMPTY and stored.seq == 2
        assert [e.type for e in testing.events(tracker)] == [EventType.MOUNTED, EventType.UNMOUNTED]
    finally:
        tracker.close()
        for key in client.scan_iter(f"sampletrack:{name}:*"):
            client.delete(key)
