"""Delivery catching up and taking over: the health probe during a backoff, ``Retry-After``, the
short lease with its heartbeat, and the fencing token against a paused holder (SIGSTOP).

Against the real tracking service (SQLite) behind the faulty proxy, a real Redis outbox, and real
deliverer processes (``tests/helpers/deliverer_process.py``: the same loop as the session's). The
loop's pacing rules are checked with a scripted client (the "mock transport") where the real
service cannot produce the situation (a service whose health check answers while its events fail).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest
from outboxes import events, fill
from service_fixtures import HELPERS, Service

from bliss_sampletrack.core import Event
from bliss_sampletrack.delivery.base import Health, Result, RetryLater, Verdict
from bliss_sampletrack.delivery.clients import RestClient
from bliss_sampletrack.delivery.lease import LEASE_TTL_S, STANDBY_POLL_S
from bliss_sampletrack.delivery.loop import PROBE_EVERY_S, Backoff, Deliverer, delivery_lease
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import DeliveryLeaseLost
from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testbed.faults.service import FaultyProxy, check_delivery, stored_event_ids
from bliss_sampletrack.testing import wait_for

pytestmark = pytest.mark.bliss
CLIENT = "service"  # the client name tests/helpers/deliverer_process.py uses
SCRIPT = str(HELPERS / "deliverer_process.py")


def ids(evts: list[Event]) -> list[str]:
    return [str(e.event_id) for e in evts]


# -- catching up after an outage -----------------------------------------------------------------------
@pytest.mark.parametrize("outage", ["refused", "gateway_502"])
def test_delivery_resumes_when_the_health_check_answers_not_when_the_backoff_ends(
    outage: str, outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str, service: tuple[Service, str]
) -> None:
    """The backoff here is 20-40 s; the service is back after the outage and the backlog is stored
    long before the backoff would have ended, with at most one probe a second reaching a server."""
    backlog = events(40, outbox.beamline, prefix="R")
    fill(outbox, backlog)
    client = RestClient(CLIENT, proxy.url, token, timeout=2.0, max_batch=100)
    deliverer = Deliverer(outbox, client, backoff=Backoff(initial=40.0, maximum=40.0))
    proxy.down() if outage == "refused" else proxy.error_5xx(502)
    runner = gevent.spawn(deliverer.run)
    try:
        wait_for(lambda: outbox.last_error(CLIENT) is not None, 10, "the first failure")
        failed_at = time.monotonic()
        gevent.sleep(3.0)  # the outage goes on: the deliverer probes, the backlog waits
        assert outbox.pending(CLIENT) == 40
        during = time.monotonic() - failed_at
        seen_during = proxy.stats.requests["5xx"]
        proxy.healthy()
        back_at = time.monotonic()
        wait_for(lambda: outbox.pending(CLIENT) == 0, 10, "the backlog after the service came back")
        recovered_in = time.monotonic() - back_at
    finally:
        deliverer.stop()
        runner.join(5)
    assert recovered_in < 5.0, f"stored {recovered_in:.1f} s after the service came back (backoff 20-40 s)"
    assert deliverer.probes >= 2
    if outage == "gateway_502":  # every probe reached a server (the gateway): at most one a second
        assert seen_during <= 1 + during / PROBE_EVERY_S + 1, (seen_during, during)
    check = check_delivery(ids(backlog), stored_event_ids(service[1], outbox.beamline))
    assert check.ok, check


class ProbedClient:
    """A scripted client whose health check always answers: the service is up, its events fail."""

    name = CLIENT
    max_batch = 10

    def __init__(self, failures: list[RetryLater]) -> None:
        self.failures = failures
        self.sent_at: list[float] = []
        self.probed = 0

    def send(self, evts: list[Event]) -> list[Result]:
        self.sent_at.append(time.monotonic())
        if self.failures:
            raise self.failures.pop(0)
        return [Result(Verdict.DELIVERED)] * len(evts)

    def probe(self, timeout: float) -> Health:
        self.probed += 1
        return Health.UP

    def describe(self) -> str:
        return f"{self.name}: probed"


def test_retry_after_is_honoured_whatever_the_probe_says(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(3, outbox.beamline))
    client = ProbedClient([RetryLater("503 busy", retry_after=2.5, unreachable=True)])
    deliverer = Deliverer(outbox, client, backoff=Backoff(initial=0.01, maximum=0.01))
    deliverer.step()  # fails, waits out Retry-After (the probes answer UP all along)
    deliverer.step()
    assert outbox.pending(CLIENT) == 0
    assert client.sent_at[1] - client.sent_at[0] >= 2.5


def test_a_healthy_probe_does_not_cut_the_backoff_of_a_service_that_answers_errors(
    outbox: RedisStreamOutbox,
) -> None:
    """A 500 from a service whose health check answers: the service is not "back", it was never
    away; the full requests keep their backoff, so that a struggling service is not hammered."""
    fill(outbox, events(3, outbox.beamline))
    client = ProbedClient([RetryLater("500 database error", unreachable=False)])
    deliverer = Deliverer(outbox, client, backoff=Backoff(initial=3.0, maximum=3.0))
    deliverer.step()
    deliverer.step()
    assert client.sent_at[1] - client.sent_at[0] >= 1.5  # the backoff's lower half: 3 s / 2
    assert client.probed >= 1  # probed meanwhile, but UP from the start is no reason to hurry


# -- the lease -------------------------------------------------------------------------------------------
def test_a_fenced_cursor_write_is_refused_once_another_deliverer_holds_the_lease(
    outbox: RedisStreamOutbox,
) -> None:
    fill(outbox, events(5, outbox.beamline))
    entries = outbox.next_entries(CLIENT, 5)
    first, second = delivery_lease(outbox, CLIENT), delivery_lease(outbox, CLIENT)
    assert first.acquire() and not second.acquire()
    outbox.finish(CLIENT, entries[1].id, first)
    assert outbox.cursor(CLIENT) == entries[1].id
    outbox.redis.delete(first.key)  # as if its lease had expired while it was paused
    assert second.acquire() and second.fence == first.fence + 1
    outbox.finish(CLIENT, entries[4].id, second)
    with pytest.raises(DeliveryLeaseLost, match=r"refused to move .* held by .*#\d+"):
        outbox.finish(CLIENT, entries[2].id, first)  # the old holder, awake again: would go back
    with pytest.raises(DeliveryLeaseLost):
        outbox.dead_letter(CLIENT, entries[3], "409 conflict", first)
    with pytest.raises(DeliveryLeaseLost):
        outbox.set_error(CLIENT, "stale", first)
    assert outbox.cursor(CLIENT) == entries[4].id
    assert outbox.dead_letters(CLIENT) == [] and outbox.last_error(CLIENT) is None
    assert not first.renew() and second.renew()
    second.release()
    assert outbox.redis.get(second.key) is None


def test_a_clean_exit_hands_the_lease_over_at_once(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(3, outbox.beamline))
    client = ProbedClient([])
    holder, standby = Deliverer(outbox, client), Deliverer(outbox, client)
    runners = [gevent.spawn(holder.run)]
    wait_for(lambda: holder.lease.held(), 5, "the first deliverer to hold the lease")
    runners.append(gevent.spawn(standby.run))
    gevent.sleep(0.5)
    assert not standby.lease.held()
    holder.stop()
    stopped_at = time.monotonic()
    try:
        wait_for(lambda: standby.lease.held(), 5, "the standby to take the released lease")
        assert time.monotonic() - stopped_at < LEASE_TTL_S  # released, not expired
    finally:
        standby.stop()
        gevent.joinall(runners, timeout=5)


class GatedClient:
    """Delivers everything, but its first call waits until ``gate`` is set (a round in flight)."""

    name = CLIENT
    max_batch = 10

    def __init__(self) -> None:
        self.gate = gevent.event.Event()
        self.calls = 0

    def send(self, evts: list[Event]) -> list[Result]:
        self.calls += 1
        if self.calls == 1:
            self.gate.wait(10)
        return [Result(Verdict.DELIVERED)] * len(evts)

    def describe(self) -> str:
        return f"{self.name}: gated"


def test_a_lapsed_lease_is_taken_again_and_the_round_begun_under_it_is_sent_again(
    outbox: RedisStreamOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A process blocked past its lease (BLISS's first scan imports for seconds) with nobody else
    waiting: the heartbeat takes the lease again (a new fence) and says so at INFO only; the round
    begun under the old fence may not move the cursor, and is simply sent again."""
    fill(outbox, events(5, outbox.beamline))
    client = GatedClient()
    deliverer = Deliverer(outbox, client)
    caplog.set_level(logging.INFO, logger="bliss_sampletrack.delivery")
    runner = gevent.spawn(deliverer.run)
    try:
        wait_for(lambda: client.calls == 1, 10, "the first round in flight")
        first = deliverer.lease.fence
        outbox.redis.delete(deliverer.lease.key)  # as if it had expired while the process was blocked
        wait_for(lambda: deliverer.lease.fence > first, 5, "the heartbeat to take the lease again")
        client.gate.set()
        wait_for(lambda: outbox.pending(CLIENT) == 0, 10, "the events, sent again under the new lease")
        assert deliverer.lease.held() and client.calls == 2
    finally:
        deliverer.stop()
        runner.join(5)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], loud  # nothing for the shell: a lapse is not a takeover
    assert any("lapsed" in r.getMessage() for r in caplog.records)


def _deliverer_process(redis_url: str, outbox: RedisStreamOutbox, url: str, token: str, log: Path) -> Any:
    env = {**os.environ, "ST_TOKEN": token, "ST_BATCH": "10"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, SCRIPT, redis_url, outbox.beamline, url],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _holder_pid(outbox: RedisStreamOutbox) -> int | None:
    return delivery_lease(outbox, CLIENT).holder_pid()


def test_a_holder_paused_past_its_lease_cannot_move_the_cursor_after_a_takeover(
    outbox: RedisStreamOutbox,
    beacon: BeaconServer,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
    tmp_path: Path,
) -> None:
    """SIGSTOP the holder with a batch stored but its answer not yet read; a standby takes over
    and delivers everything; SIGCONT: the old holder reads its answer and tries to move the cursor
    back to the end of its batch. The fence refuses it; it stands by."""
    first_batch = events(10, outbox.beamline, prefix="P")
    fill(outbox, first_batch)
    proxy.slow(3.0)  # stored at once, answered 3 s later
    old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
    old = _deliverer_process(beacon.redis_url, outbox, proxy.url, token, old_log)
    new = None
    try:
        wait_for(lambda: proxy.stats.upstream_answers >= 1, 60, "the first batch to be stored")
        os.kill(old.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        proxy.healthy()
        rest = events(25, outbox.beamline, prefix="Q")
        fill(outbox, rest)
        last_id = outbox.redis.xrevrange(outbox.key, count=1)[0][0].decode()
        new = _deliverer_process(beacon.redis_url, outbox, proxy.url, token, new_log)
        wait_for(lambda: _holder_pid(outbox) == new.pid, 60, "the standby to take over")
        wait_for(lambda: outbox.cursor(CLIENT) == last_id, 30, "the new holder to deliver everything")
        # the old holder's answer has arrived in its socket by now (3 s after its request)
        gevent.sleep(max(0.0, 3.5 - (time.monotonic() - stopped_at)))
        os.kill(old.pid, signal.SIGCONT)
        wait_for(lambda: b"refused to" in old_log.read_bytes(), 30, "the old holder to hit the fence")
        gevent.sleep(1.0)  # time for any further (wrong) write of the old holder
        assert outbox.cursor(CLIENT) == last_id, "a paused old holder moved the cursor back"
        assert _holder_pid(outbox) == new.pid
        assert outbox.pending(CLIENT) == 0
    finally:
        for process in (old, new):
            if process is not None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait(10)
    assert "stands by" in old_log.read_text(), old_log.read_text()[-2000:]
    assert set(ids(first_batch)) <= proxy.replayed_ids()  # sent by both: the service saw a replay
    check = check_delivery(ids(first_batch + rest), stored_event_ids(service[1], outbox.beamline))
    assert check.ok, check


def test_a_standby_process_takes_over_a_killed_holder_within_the_lease(
    outbox: RedisStreamOutbox, beacon: BeaconServer, proxy: FaultyProxy, token: str, tmp_path: Path
) -> None:
    """kill -9 leaves the lease to expire (nothing releases it): the standby holds it at most a
    lease TTL plus one standby poll later (plus this machine's scheduling slack)."""
    fill(outbox, events(5, outbox.beamline))
    log = tmp_path / "pair.log"
    pair = [_deliverer_process(beacon.redis_url, outbox, proxy.url, token, log) for _ in range(2)]
    try:
        wait_for(lambda: outbox.pending(CLIENT) == 0, 60, "the first delivery")
        [victim] = [p for p in pair if p.pid == _holder_pid(outbox)]
        [survivor] = [p for p in pair if p is not victim]
        victim.kill()
        victim.wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: _holder_pid(outbox) == survivor.pid, 10, "the survivor to take over")
        took = time.monotonic() - killed_at
    finally:
        for process in pair:
            process.kill()
            process.wait(10)
    # a bound on the mechanism, not a benchmark (benchmarks/delivery_recovery.py measures it)
    assert took < LEASE_TTL_S + STANDBY_POLL_S + 1.0, f"took over after {took:.2f} s"
