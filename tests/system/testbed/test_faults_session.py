"""Faults on the BLISS-session side: the session killed -9 anywhere, the beacon Redis restarted.

A real BLISS session runs the tracker in a child process (``testbed/faults/session.py``) against
a beacon whose settings Redis keeps an append-only file (``appendonly yes``, ``appendfsync
everysec``, as the README recommends). The seed (``SAMPLETRACK_FAULT_SEED``) fixes the samples and
the kill moments; a failure message names it.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from recorder import Recorder

from bliss_sampletrack.core import EventType
from bliss_sampletrack.testbed.beacon import BeaconServer, running_beacon
from bliss_sampletrack.testbed.faults.redis import BeaconRedis
from bliss_sampletrack.testbed.faults.session import (
    SessionDriver,
    check_event_sequence,
    kill_at_random_step,
    read_history,
    read_outbox,
    scan_tags,
)

pytestmark = pytest.mark.bliss

SEED = int(os.environ.get("SAMPLETRACK_FAULT_SEED", "20261124"))
ROUNDS = 5
OWNER_TTL = 2  # s: a killed session's claim on the tracker expires this soon (default 10)


@pytest.fixture(scope="module")
def aof_beacon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BeaconServer]:
    with running_beacon(tmp_path_factory.mktemp("aof_beacon"), redis_persistence=True) as server:
        yield server


@pytest.fixture
def slow_service() -> Iterator[tuple[str, Recorder]]:
    """A contract-shaped service that takes 50 ms per request: kills land inside deliveries."""
    from gevent.pywsgi import WSGIServer

    recorder = Recorder()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        gevent.sleep(0.05)
        return recorder(environ, start_response)

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}/api/v1", recorder
    server.stop()


def committed_state(client: Any, tracker: str) -> dict[str, Any] | None:
    raw = client.get(f"sampletrack:{tracker}:state")
    return None if raw is None else json.loads(raw)


def delivered_ids(recorder: Recorder) -> list[uuid.UUID]:
    ids = []
    for path, _, body in recorder.requests:
        for event in body["events"] if path.endswith("/events/batch") else [body]:
            ids.append(uuid.UUID(event["event_id"]))
    return ids


def test_session_killed_at_random_moments_loses_duplicates_and_mistags_nothing(
    aof_beacon: BeaconServer,
    slow_service: tuple[str, Recorder],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, recorder = slow_service
    monkeypatch.setenv("ST_TOKEN", "stk_test_secret")
    name, beamline = "ktracker", "kill00"
    overrides = {
        "beamline": beamline,
        "owner_ttl": OWNER_TTL,
        "delivery": [{"name": "service", "type": "rest", "url": url, "token_env": "ST_TOKEN", "timeout": 5}],
    }
    client = BeaconRedis(aof_beacon).client()
    rng = random.Random(SEED)
    why = f"(seed {SEED})"
    reported: list[dict[str, Any]] = []
    expected = committed_state(client, name)
    for round_nb in range(ROUNDS + 1):
        last_round = round_nb == ROUNDS
        driver = SessionDriver(
            aof_beacon,
            tmp_path / f"round{round_nb}",
            seed=SEED + round_nb,
            name=name,
            overrides=overrides,
            cycles=2 if last_round else 1000,
            wait_owner=60.0,
        )
        with driver:
            ready = driver.start().progress[0]
            # the restarted tracker is what Redis last committed: not more, not less
            restored = (ready["state"], ready["barcode"], ready["mount_event_id"])
            if expected is None:
                assert restored == ("UNKNOWN", None, None), why
            else:
                sample = expected["sample"] or {}
                assert restored == (expected["state"], sample.get("barcode"), expected["mount_event_id"]), why
            if last_round:
                driver.wait_for("done", timeout=120.0)
                gevent.sleep(0.5)
                driver.stop()
            else:
                kill_at_random_step(driver, rng, max_steps=14, max_delay=0.3)
        reported += driver.progress
        expected = committed_state(client, name)
        history = read_history(client, name)
        # a change the session reported as done is in Redis (one MULTI: state + history + outbox)
        ids = {str(e.event_id) for e in history}
        for step in driver.steps("mounted"):
            assert step["mount_event_id"] in ids, (step, why)
        last = history[-1]
        if expected["state"] == "MOUNTED":
            assert last.type is EventType.MOUNTED and str(last.event_id) == expected["mount_event_id"], why
        else:
            assert expected["state"] == "EMPTY" and last.type is EventType.UNMOUNTED, why

    # the event sequence: unique ids, each unmount closing the mount before it
    history = read_history(client, name)
    check_event_sequence(history)
    assert len(driver.steps("unmounted")) == 2  # the clean last round ran to its end
    # the outbox: what is left is the end of the history, in order, once each; nothing trimmed
    # from it was lost (the service received it) and nothing before the cursor is pending
    outbox = read_outbox(client, beamline)
    remaining = [event.event_id for _, event in outbox]
    assert len(set(remaining)) == len(remaining), why
    assert remaining == [e.event_id for e in history[len(history) - len(remaining) :]], why
    stream_ids = [entry_id for entry_id, _ in outbox]
    assert stream_ids == sorted(stream_ids, key=lambda i: tuple(int(x) for x in i.split("-"))), why
    cursor = client.get(f"sampletrack:outbox:{beamline}:cursor:service")
    cursor = None if cursor is None else cursor.decode()
    done = {event.event_id for entry_id, event in outbox if cursor and _id(entry_id) <= _id(cursor)}
    trimmed = {e.event_id for e in history[: len(history) - len(remaining)]}
    received = set(delivered_ids(recorder))
    assert trimmed | done <= received, (sorted(map(str, (trimmed | done) - received)), why)

    # every scan the session reported saved is in its file, tagged; no scan is wrongly tagged
    mounts = {e.event_id: e for e in history if e.type is EventType.MOUNTED}
    unmounts = {e.mount_event_id: e for e in history if e.type is EventType.UNMOUNTED}
    found_tags = list(scan_tags(tmp_path))
    tags = {(Path(t.filename), t.scan): t for t in found_tags if not t.error}
    saved = [s for s in reported if s["step"] == "scan_saved"]
    assert saved, why
    # what a kill left unreadable (a file being created, a scan group being written) is never a
    # scan the session reported saved: those are all there, tagged with their sample
    unreadable = [(t.filename, t.scan, t.error) for t in found_tags if t.error]
    assert len(unreadable) <= ROUNDS, (unreadable, why)
    for step in saved:
        found = tags.get((Path(step["filename"]), f"{step['scan_nb']}.1"))
        assert found is not None and found.tag is not None, (step, unreadable, why)
        assert found.tag["barcode"] == step["barcode"], (step, why)
    untagged = 0
    for found in tags.values():
        if found.tag is None:  # the scan the kill interrupted: its tag was not written yet
            untagged += 1
            continue
        mount = mounts[uuid.UUID(found.tag["mount_event_id"])]
        assert found.tag["state"] == "MOUNTED" and found.tag["barcode"] == mount.sample.barcode, (found, why)
        assert found.start_time is not None and mount.occurred_at <= found.start_time, (found, why)
        unmount = unmounts.get(mount.event_id)
        assert unmount is None or found.start_time <= unmount.occurred_at, (found, why)
    assert untagged <= ROUNDS, why
    client.close()


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def test_redis_restart_keeps_state_history_and_pending_outbox(
    aof_beacon: BeaconServer, tmp_path: Path
) -> None:
    """SHUTDOWN, then kill -9 after more than a second: committed changes survive both; the session
    records the next mount without a restart; a new session restores the state and scans."""
    name, beamline = "rtracker", "redis00"
    overrides = {"beamline": beamline, "owner_ttl": OWNER_TTL}
    redis = BeaconRedis(aof_beacon)

    def recorded() -> tuple[Any, list[str], list[str]]:
        client = redis.client()
        try:
            history = [str(e.event_id) for e in read_history(client, name)]
            outbox = [str(e.event_id) for _, e in read_outbox(client, beamline)]
            return committed_state(client, name), history, outbox
        finally:
            client.close()

    with SessionDriver(
        aof_beacon, tmp_path / "first", mode="serve", name=name, overrides=overrides
    ) as driver:
        driver.start()
        assert driver.command("mount LYS-0001")["ok"]
        before = recorded()
        assert before[0]["state"] == "MOUNTED" and len(before[1]) == len(before[2]) == 1
        gevent.sleep(1.5)  # > 1 s: fsynced by appendfsync everysec
        redis.restart(kill=False)
        assert recorded() == before
        assert driver.command("state")["barcode"] == "LYS-0001"
        reply = driver.command("mount THA-0003")  # the same session, the same Redis client
        assert reply["ok"] and reply["barcode"] == "THA-0003", reply
        before = recorded()
        assert len(before[1]) == len(before[2]) == 3  # mount, unmount (replaced), mount
        gevent.sleep(1.5)
        redis.restart(kill=True)
        assert recorded() == before
        reply = driver.command("unmount")
        assert reply["ok"] and reply["state"] == "EMPTY", reply
        assert len(recorded()[2]) == 4
        driver.stop()

    # BLISS's own settings cache does not survive a Redis restart (scans fail with RedisCacheError
    # in the old session): the session is restarted, and finds the tracker where it was
    with SessionDriver(
        aof_beacon, tmp_path / "second", mode="serve", name=name, overrides=overrides
    ) as driver:
        assert driver.start().progress[0]["state"] == "EMPTY"
        assert driver.command("mount LYS-0002")["ok"]
        scan = driver.command("scan 2")
        assert scan["ok"] and scan["tag_barcode"] == "LYS-0002", scan
        driver.stop()


def test_without_persistence_a_redis_restart_forgets_and_the_session_follows_redis(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The contrast (BLISS's default: nothing on disk here): the restart loses the state, history
    and outbox together; the session's next change starts from what Redis has (UNKNOWN, nothing
    to unmount) instead of writing an unmount of a mount Redis no longer knows."""
    name, beamline = "ptracker", "plain00"
    overrides = {"beamline": beamline, "owner_ttl": OWNER_TTL}
    with running_beacon(tmp_path_factory.mktemp("plain_beacon")) as server:
        redis = BeaconRedis(server)
        with SessionDriver(server, tmp_path, mode="serve", name=name, overrides=overrides) as driver:
            driver.start()
            assert driver.command("mount LYS-0001")["ok"]
            gevent.sleep(1.5)
            redis.restart(kill=True)
            client = redis.client()
            assert committed_state(client, name) is None and read_history(client, name) == []
            assert read_outbox(client, beamline) == []
            reply = driver.command("mount THA-0003")
            assert reply["ok"] and reply["barcode"] == "THA-0003", reply
            history = read_history(client, name)
            assert [(e.type, e.sample.barcode) for e in history] == [(EventType.MOUNTED, "THA-0003")]
            client.close()
            driver.stop()
