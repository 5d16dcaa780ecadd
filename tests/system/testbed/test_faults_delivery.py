"""Delivery under faults: the tracking service misbehaving (through a faulty proxy in front of the
real service on SQLite) and the standalone deliverer killed with -9. What must hold, whatever the
fault: every event stored exactly once, in the outbox's order (the service's arrival order,
``seq``), nothing dead-lettered but what the contract dead-letters (4xx), the fault visible in the
delivery status while it lasts, and never the token in that status.

The random points of the kill -9 rounds come from ``SAMPLETRACK_FAULT_SEED`` (printed on failure).
"""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest
from outboxes import fill
from service_fixtures import Service

from bliss_sampletrack.core import Event, Sample, Source
from bliss_sampletrack.delivery.clients import RestClient, RetryLater, Verdict
from bliss_sampletrack.delivery.loop import Backoff, Deliverer, delivery_lease
from bliss_sampletrack.delivery.manager import DeliveryManager
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testbed.faults.processes import (
    ManagedProcess,
    kill9_at_random,
    kill9_when,
    sampletrack_command,
    start_deliverer,
)
from bliss_sampletrack.testbed.faults.service import FaultyProxy, check_delivery, stored_event_ids
from bliss_sampletrack.testing import wait_for

pytestmark = pytest.mark.bliss
SEED = int(os.environ.get("SAMPLETRACK_FAULT_SEED", "20261124"))
TOKEN_ENV = "ST_FAULT_TOKEN"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
CLIENT = "svc"


# -- helpers ------------------------------------------------------------------------------------------
class Producer:
    """Mounts into the outbox as the tracker writes them (one MULTI/EXEC per change), numbered."""

    def __init__(self, outbox: RedisStreamOutbox) -> None:
        self.outbox = outbox
        self.ids: list[str] = []

    def produce(self, count: int) -> list[str]:
        start = len(self.ids)
        evts = [
            Event.mounted(
                Sample(barcode=f"F-{start + i:05d}"),
                beamline=self.outbox.beamline,
                session="s",
                source=Source.MANUAL,
                occurred_at=T0 + timedelta(seconds=start + i),
            )
            for i in range(count)
        ]
        fill(self.outbox, evts)
        ids = [str(e.event_id) for e in evts]
        self.ids += ids
        return ids


def fast_manager(outbox: RedisStreamOutbox, url: str, token: str) -> DeliveryManager:
    """The session's delivery (DeliveryManager) with a 1 s client timeout and a short backoff."""
    manager = DeliveryManager(outbox, [RestClient(CLIENT, url, token, timeout=1.0, max_batch=10)])
    manager.deliverers[0].backoff = Backoff(initial=0.05, maximum=0.4)
    return manager


# -- the service misbehaving ---------------------------------------------------------------------------
GARBAGE_ROTATION = ("text", "html", "empty", "wrong_shape", "truncated")
FAULTS: dict[str, Callable[[FaultyProxy], None]] = {
    "down": lambda p: p.down(),
    "slow": lambda p: p.slow(2.5),  # stored at once, answered after the client's 1 s timeout
    "slow-late-arrival": lambda p: p.slow(2.5, store_first=False),  # reaches the service late
    "5xx": lambda p: p.error_5xx(503),
    "4xx": lambda p: p.error_4xx(404),
    "garbage": lambda p: p.garbage("text"),  # then every other kind in turn, see the test
    "reset": lambda p: p.reset(),
}
# what the deliverer's last_error says during the fault (the client's wording), one of these
ERROR_TEXT = {
    "down": ("ConnectionError",),
    "slow": ("no answer within 1 s",),
    "slow-late-arrival": ("no answer within 1 s",),
    "5xx": ("503",),
    "garbage": ("/events/batch answered", "unexpected client failure"),
    "reset": ("ConnectionError", "ChunkedEncodingError"),
}
FORWARDING = {"slow", "slow-late-arrival", "garbage", "reset"}  # the service stores during the fault


@pytest.mark.parametrize("kind", list(FAULTS))
def test_service_fault_then_recovery_stores_every_event_once_in_order(
    kind: str,
    outbox: RedisStreamOutbox,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
) -> None:
    producer = Producer(outbox)
    manager = fast_manager(outbox, proxy.url, token)
    manager.start()
    try:
        producer.produce(2)
        producer.produce(2)
        wait_for(lambda: outbox.pending(CLIENT) == 0, 30, "delivery before the fault")
        before = list(producer.ids)

        FAULTS[kind](proxy)
        fault = proxy.fault.value
        during: list[str] = []
        # batches of 3, 6, 9... never of one event (the single-event path: see the test after this)
        for garbage in GARBAGE_ROTATION if kind == "garbage" else [None] * 3:
            if garbage:  # each kind of garbage answers at least two attempts
                proxy.garbage(garbage)
                more = proxy.stats.requests[fault] + 2
                during += producer.produce(3)
                wait_for(lambda n=more: proxy.stats.requests[fault] >= n, 30, f"attempts under {garbage}")
            else:
                during += producer.produce(3)
                gevent.sleep(0.3)
        if kind == "garbage":
            proxy.garbage("wrong_shape")
        seen = proxy.stats.requests[fault]
        if kind == "4xx":
            wait_for(lambda: len(outbox.dead_letters(CLIENT)) == len(during), 30, "the 4xx dead letters")
            letters = outbox.dead_letters(CLIENT)
            assert [str(letter.event.event_id) for letter in letters if letter.event] == during
            assert all(letter.answer.startswith("404") for letter in letters)
            assert outbox.pending(CLIENT) == 0  # a rejection never holds later events back
        else:
            if kind == "down":  # refused connections never reach the proxy: give it retries
                gevent.sleep(1.0)
            else:  # two more attempts, each with everything pending
                wait_for(lambda: proxy.stats.requests[fault] >= seen + 2, 30, "attempts under the fault")
            if kind == "garbage":  # every wrong shape served, some the client cannot even parse
                wait_for(lambda: proxy.stats.requests[fault] >= seen + 7, 30, "every wrong shape")
            # nothing confirmed while the answers are faulty, even those the service stored
            assert outbox.pending(CLIENT) == len(during)
            assert outbox.dead_letters(CLIENT) == []
            wait_for(lambda: outbox.last_error(CLIENT) is not None, 10, "last_error")
            assert manager.running, "the delivery greenlet died on the fault"
        [status] = manager.status()
        line = status.line()
        if kind == "4xx":
            assert f"{len(during)} dead letter(s)" in line
        else:
            assert "last error: " in line and any(text in line for text in ERROR_TEXT[kind]), line
            assert f"{len(during)} pending" in line
        assert token not in line

        proxy.healthy()
        producer.produce(2)
        producer.produce(2)
        after = producer.ids[len(before) + len(during) :]
        wait_for(lambda: outbox.pending(CLIENT) == 0, 60, "delivery after the fault")
        if kind == "4xx":  # after the fix, as `sampletrack deliver --retry-dead-letters` does
            assert manager.retry_dead_letters() == {CLIENT: (len(during), 0)}
        wait_for(lambda: proxy.stats.in_flight == 0, 30, "late requests held by the proxy")
    finally:
        manager.stop()

    stored = stored_event_ids(service[1], outbox.beamline)
    if kind == "4xx":  # dead letters are replayed after the events that went on without them
        assert stored == before + after + during
    else:
        check = check_delivery(producer.ids, stored)
        assert check.ok, check
    assert outbox.last_error(CLIENT) is None and outbox.dead_letters(CLIENT) == []
    assert token not in manager.status()[0].line()
    if kind in FORWARDING:  # the service did see events whose answer was lost: replays, stored once
        assert proxy.replayed_ids() & set(during)


GARBAGE_NOT_FORWARDED = ["text", "html", "empty", "wrong_shape"]


@pytest.mark.parametrize("garbage", GARBAGE_NOT_FORWARDED)
def test_garbage_answer_to_a_single_event_is_never_a_delivery(
    garbage: str, outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str, service: tuple[Service, str]
) -> None:
    producer = Producer(outbox)
    [event_id] = producer.produce(1)
    deliverer = Deliverer(
        outbox, RestClient(CLIENT, proxy.url, token, timeout=5), backoff=Backoff(0.01, 0.02)
    )
    proxy.garbage(garbage)
    for _ in range(6):  # every wrong shape once
        deliverer.step()
    # the service never saw it: taking the garbage as a 200 would lose the event for good
    assert stored_event_ids(service[1], outbox.beamline) == []
    assert outbox.pending(CLIENT) == 1 and outbox.last_error(CLIENT) is not None
    proxy.healthy()
    deliverer.step()
    assert stored_event_ids(service[1], outbox.beamline) == [event_id]


def _results(status: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: {"results": [{"event_id": e["event_id"], "status": status} for e in body["events"]]}


def _other_event(body: dict[str, Any]) -> dict[str, Any]:
    return {"event": {**body, "event_id": str(uuid.uuid4())}}


@pytest.mark.parametrize(
    ("count", "answer"),
    [
        pytest.param(2, (200, {}, _results(True)), id="batch-status-true"),  # int(True): a dead letter
        pytest.param(2, (200, {}, _results("201")), id="batch-status-text"),
        pytest.param(2, (200, {}, _results(201.0)), id="batch-status-float"),
        pytest.param(2, (200, {}, _results(None)), id="batch-status-null"),
        pytest.param(1, (201, {}, _other_event), id="another-event"),
        pytest.param(1, (200, {}, lambda body: {"event": [body]}), id="event-not-an-object"),
    ],
)
def test_a_success_status_without_the_contracts_answer_is_retried(
    count: int, answer: tuple[int, dict[str, str], Any], http_server: tuple[str, Any]
) -> None:
    """Answers with a success status, each one step away from the contract's body: the call is
    retried (RetryLater), no event counts as delivered nor becomes a dead letter."""
    url, recorder = http_server
    client = RestClient(CLIENT, url, "stk_fault_token", timeout=5)
    events = [
        Event.mounted(Sample(barcode=f"R-{i}"), beamline="id00", session="s", source=Source.MANUAL)
        for i in range(count)
    ]
    recorder.answers.append(answer)
    with pytest.raises(RetryLater) as failure:
        client.send(events)
    assert "stk_fault_token" not in str(failure.value)
    # the same events, answered as the contract says: delivered
    assert [r.verdict for r in client.send(events)] == [Verdict.DELIVERED] * count
    assert len(recorder.requests) == 2


def test_an_answer_echoing_the_token_never_reaches_the_status(
    outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str
) -> None:
    Producer(outbox).produce(2)
    deliverer = Deliverer(
        outbox, RestClient(CLIENT, proxy.url, token, timeout=5), backoff=Backoff(0.01, 0.02)
    )
    echo = f"<html><pre>POST /api/v1/events/batch\nAuthorization: Bearer {token}</pre></html>".encode()
    proxy.error_5xx(502, body=echo)
    deliverer.step()
    assert outbox.last_error(CLIENT) is not None and token not in outbox.last_error(CLIENT)
    proxy.error_4xx(400, body=echo)
    deliverer.step()
    letters = outbox.dead_letters(CLIENT)
    assert len(letters) == 2 and all(token not in letter.answer for letter in letters)


def test_an_unreadable_outbox_entry_is_set_aside_and_delivery_goes_on(
    outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str, service: tuple[Service, str]
) -> None:
    producer = Producer(outbox)
    first = producer.produce(2)
    outbox.redis.xadd(outbox.key, {"event": b"{not json"})  # e.g. written by hand, or a bad restore
    second = producer.produce(2)
    manager = fast_manager(outbox, proxy.url, token)
    manager.start()
    try:
        wait_for(lambda: outbox.pending(CLIENT) == 0, 30, "the outbox to drain")
        assert manager.running
    finally:
        manager.stop()
    assert stored_event_ids(service[1], outbox.beamline) == first + second
    [letter] = outbox.dead_letters(CLIENT)
    assert letter.event is None and letter.payload == "{not json" and "unreadable" in letter.answer
    assert "1 dead letter(s)" in manager.status()[0].line()
    deliverer = manager.deliverers[0]
    assert deliverer.retry_dead_letters() == (0, 1)  # kept for a human to look at, never sent


# -- the standalone deliverer killed -------------------------------------------------------------------
@pytest.fixture
def cli_tracker(
    add_yaml: Callable[[str], Any], outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str
) -> str:
    """A tracker in beacon whose outbox is ``outbox`` and whose one client goes through ``proxy``."""
    name = f"faults_{uuid.uuid4().hex[:8]}"
    add_yaml(
        f"""
        - name: {name}
          plugin: bliss
          package: bliss_sampletrack.tracker.controller
          class: SampleTracker
          beamline: {outbox.beamline}
          tag_scans: false
          deliver_in_session: false
          delivery:
            - {{name: {CLIENT}, type: rest, url: "{proxy.url}", token_env: {TOKEN_ENV},
                timeout: 5, max_batch: 20}}
        """
    )
    return name


def deliverer(beacon: BeaconServer, tracker: str, token: str, log: Path, ttl: float) -> ManagedProcess:
    return start_deliverer(beacon.host, tracker, log, env={TOKEN_ENV: token}, lock_ttl=ttl)


def keep_producing(producer: Producer, rng: random.Random, stop: gevent.event.Event) -> None:
    while not stop.is_set():
        producer.produce(rng.randint(1, 5))
        stop.wait(0.05)


def holder_pid(outbox: RedisStreamOutbox) -> int | None:
    """The pid of the deliverer holding the lease, None when nobody holds it."""
    return delivery_lease(outbox, CLIENT).holder_pid()


def test_kill_9_of_the_deliverer_at_random_points_loses_and_duplicates_nothing(
    cli_tracker: str,
    outbox: RedisStreamOutbox,
    beacon: BeaconServer,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    producer = Producer(outbox)
    stop = gevent.event.Event()
    production = gevent.spawn(keep_producing, producer, rng, stop)
    modes = ["in_flight", "delay", rng.choice(["in_flight", "delay"])]
    rng.shuffle(modes)
    log = tmp_path / "deliverer.log"
    caught_in_flight = 0
    try:
        for mode in modes:
            if mode == "in_flight":  # stored by the service, the answer held back: then killed
                proxy.slow(1.0)
                process = deliverer(beacon, cli_tracker, token, log, ttl=2)
                stored_before = proxy.stats.upstream_answers
                caught_in_flight += kill9_when(
                    process, lambda n=stored_before: proxy.stats.upstream_answers > n, 30
                )
                proxy.healthy()
            else:
                process = deliverer(beacon, cli_tracker, token, log, ttl=2)
                kill9_at_random(process, rng, 0.0, 1.5)
            assert process.process is not None and process.process.returncode == -9
        stop.set()
        production.join(10)
        final = deliverer(beacon, cli_tracker, token, log, ttl=2)
        try:  # the killed holder's lock expires (2 s), then this one delivers the rest
            wait_for(lambda: outbox.pending(CLIENT) == 0, 90, "the last deliverer to drain")
        finally:
            assert final.terminate() == 0, final.log_tail()
    finally:
        stop.set()
        production.kill()
    stored = stored_event_ids(service[1], outbox.beamline)
    check = check_delivery(producer.ids, stored)
    assert check.ok, f"seed {SEED}, modes {modes}: {check}"
    assert outbox.dead_letters(CLIENT) == []
    assert caught_in_flight >= 1 and proxy.replayed_ids(), f"seed {SEED}: no batch killed in flight"


def run_status(beacon: BeaconServer, tracker: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sampletrack_command(), "status", "--beacon", beacon.host, "--tracker", tracker],
        env={**os.environ, TOKEN_ENV: token},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_two_deliverers_one_killed_the_other_takes_over_within_the_lock_ttl(
    cli_tracker: str,
    outbox: RedisStreamOutbox,
    beacon: BeaconServer,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
    tmp_path: Path,
) -> None:
    ttl = 3.0
    rng = random.Random(SEED + 1)
    producer = Producer(outbox)
    producer.produce(30)
    proxy.error_5xx(503)
    starters = [  # both at once
        gevent.spawn(deliverer, beacon, cli_tracker, token, tmp_path / f"deliverer-{i}.log", ttl)
        for i in range(2)
    ]
    gevent.joinall(starters, timeout=180, raise_error=True)
    pair: list[ManagedProcess] = [starter.value for starter in starters]
    stop = gevent.event.Event()
    production = gevent.spawn(keep_producing, producer, rng, stop)
    try:
        # the outage, as `sampletrack status` shows it: the error, who delivers, never the token
        wait_for(lambda: outbox.last_error(CLIENT) is not None, 30, "the 503 in last_error")
        status = run_status(beacon, cli_tracker, token)
        assert status.returncode == 0, status.stderr
        assert "last error: 503" in status.stdout, status.stdout
        holder = holder_pid(outbox)
        assert holder in {p.pid for p in pair} and f"/{holder}/" in status.stdout
        assert token not in status.stdout + status.stderr

        proxy.slow(0.2)  # healthy, slowly: each batch is in flight for a while
        for _ in range(2):
            wait_for(lambda: proxy.stats.requests["slow"] >= 3, 30, "deliveries")
            [victim] = [p for p in pair if p.pid == holder_pid(outbox)]
            [survivor] = [p for p in pair if p is not victim]
            victim.kill9()
            # the lock expires at most ttl after the victim's last renewal; the survivor polls it
            took_over = lambda pid=survivor.pid: holder_pid(outbox) == pid  # noqa: E731
            wait_for(took_over, ttl + 10, "the survivor to take over")
            proxy.stats.requests["slow"] = 0
            victim.start()  # back, as a standby waiting for the lock
            assert holder_pid(outbox) == survivor.pid
        stop.set()
        production.join(10)
        proxy.healthy()
        wait_for(lambda: outbox.pending(CLIENT) == 0, 60, "the outbox to drain")
    finally:
        stop.set()
        production.kill()
        codes = [p.terminate() for p in pair]
    assert codes == [0, 0], [p.log_tail() for p in pair]
    check = check_delivery(producer.ids, stored_event_ids(service[1], outbox.beamline))
    assert check.ok, check
    assert proxy.stats.max_in_flight == 1  # never two deliverers sending at once
    status = run_status(beacon, cli_tracker, token)
    assert "0 pending" in status.stdout and "last error" not in status.stdout, status.stdout


def test_deliver_refuses_a_lock_ttl_too_short_to_renew() -> None:
    result = subprocess.run(
        [*sampletrack_command(), "deliver", "--beacon", "localhost:1", "--lock-ttl", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and "--lock-ttl must be at least 1 s, got 0.5" in result.stderr
