"""Delivery: the outbox stream, the loop's contract rules, the lock, and the REST client over HTTP.

Loop tests use the test bed's real Redis and an in-memory client that answers by script (the
"mock transport"); the REST client is tested against a real HTTP server on loopback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import gevent
import pytest
from outboxes import events, fill
from recorder import Recorder

from bliss_sampletrack.core import Event
from bliss_sampletrack.delivery.clients import NoopClient, RestClient, Result, RetryLater, Verdict
from bliss_sampletrack.delivery.loop import Backoff, Deliverer
from bliss_sampletrack.delivery.manager import DeliveryManager
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox

pytestmark = pytest.mark.bliss
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class ScriptedClient:
    """A delivery client answering from a script: a list of callables (events -> results)."""

    def __init__(self, name: str = "svc", max_batch: int = 50) -> None:
        self.name, self.max_batch = name, max_batch
        self.script: list[Any] = []
        self.received: list[str] = []  # barcodes, in the order delivered
        self.calls = 0
        self.concurrent = 0
        self.max_concurrent = 0

    def send(self, evts: list[Event]) -> list[Result]:
        self.calls += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            gevent.sleep(0.005)
            action = self.script.pop(0) if self.script else None
            if isinstance(action, Exception):
                raise action
            results = action(evts) if action else [Result(Verdict.DELIVERED)] * len(evts)
            self.received += [
                e.sample.barcode for e, r in zip(evts, results, strict=True) if r.verdict is Verdict.DELIVERED
            ]
            return results
        finally:
            self.concurrent -= 1

    def describe(self) -> str:
        return f"{self.name}: scripted"


def fast() -> Backoff:
    return Backoff(initial=0.01, maximum=0.05)


def test_batches_in_order_and_trims(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(120, outbox.beamline))
    client = ScriptedClient(max_batch=50)
    deliverer = Deliverer(outbox, client, backoff=fast())
    assert [deliverer.step() for _ in range(4)] == [50, 50, 20, 0]
    assert client.received == [f"S-{i:04d}" for i in range(120)]
    assert outbox.pending("svc") == 0 and outbox.redis.xlen(outbox.key) <= 1  # trimmed


def test_retryable_failure_holds_back_later_events_then_all_once(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(5))
    client = ScriptedClient(max_batch=2)
    client.script = [RetryLater("503 maintenance"), RetryLater("connection refused", retry_after=0.02)]
    deliverer = Deliverer(outbox, client, backoff=fast())
    assert deliverer.step() == 0 and outbox.last_error("svc") == "503 maintenance"
    assert deliverer.step() == 0 and client.received == []
    while deliverer.step():
        pass
    assert client.received == ["S-0000", "S-0001", "S-0002", "S-0003", "S-0004"]
    assert outbox.last_error("svc") is None


def test_rejection_is_dead_lettered_and_later_events_go_on(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(3))
    client = ScriptedClient(max_batch=3)
    client.script = [
        lambda evts: [
            Result(Verdict.DELIVERED),
            Result(Verdict.REJECTED, "422 sample.barcode"),
            Result(Verdict.DELIVERED),
        ]
    ]
    deliverer = Deliverer(outbox, client, backoff=fast())
    assert deliverer.step() == 3
    assert client.received == ["S-0000", "S-0002"]
    [letter] = outbox.dead_letters("svc")
    assert letter.event.sample.barcode == "S-0001" and letter.answer == "422 sample.barcode"
    assert outbox.pending("svc") == 0
    assert deliverer.retry_dead_letters() == (1, 0)  # fixed on the service side
    assert client.received[-1] == "S-0001" and outbox.dead_letters("svc") == []


def test_a_retry_inside_a_batch_stops_there(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(3))
    client = ScriptedClient(max_batch=3)
    client.script = [
        lambda evts: [Result(Verdict.DELIVERED), Result(Verdict.RETRY, "500"), Result(Verdict.DELIVERED)]
    ]
    deliverer = Deliverer(outbox, client, backoff=fast())
    assert deliverer.step() == 1
    assert outbox.pending("svc") == 2
    deliverer.step()
    # S-0002 was accepted after the failed S-0001 and is sent again behind it: a replay, which a
    # contract service answers 200 without storing anything (and contract batches never answer 5xx
    # for one event: this is the defensive path)
    assert client.received == ["S-0000", "S-0002", "S-0001", "S-0002"]


def test_fan_out_keeps_a_cursor_per_client(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(4))
    fast_client, slow_client = ScriptedClient("a"), ScriptedClient("b")
    slow_client.script = [RetryLater("down")]
    da, db = Deliverer(outbox, fast_client, backoff=fast()), Deliverer(outbox, slow_client, backoff=fast())
    da.step()
    db.step()
    assert outbox.pending("a") == 0 and outbox.pending("b") == 4
    assert outbox.redis.xlen(outbox.key) == 4  # b still needs them: not trimmed
    db.step()
    assert slow_client.received == fast_client.received == ["S-0000", "S-0001", "S-0002", "S-0003"]


def test_two_deliverers_never_deliver_concurrently(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(200))
    shared = ScriptedClient(max_batch=7)
    first, second = Deliverer(outbox, shared, backoff=fast()), Deliverer(outbox, shared, backoff=fast())
    runners = [gevent.spawn(first.run), gevent.spawn(second.run)]
    with gevent.Timeout(20):
        while outbox.pending("svc"):
            gevent.sleep(0.02)
    first.stop()
    second.stop()
    gevent.joinall(runners, timeout=5)
    assert shared.max_concurrent == 1
    assert shared.received == [f"S-{i:04d}" for i in range(200)]  # each once, in order


def test_manager_status_and_drain(outbox: RedisStreamOutbox) -> None:
    fill(outbox, events(30))
    manager = DeliveryManager(outbox, [NoopClient("none")])
    [status] = manager.status()
    assert status.pending == 30 and status.oldest_pending_s is not None and status.dead_letters == 0
    manager.start()
    seen: list[tuple[int, int]] = []
    try:
        assert manager.drain(10, lambda done, total: seen.append((done, total)))
    finally:
        manager.stop()
    assert seen[-1] == (30, 30)
    assert "0 pending" in manager.status()[0].line()


# -- the REST client over real HTTP -------------------------------------------------------------------


SECRET = "tok-s3cr3t-value"


def test_rest_client_single_and_batch(http_server: tuple[str, Recorder]) -> None:
    url, recorder = http_server
    client = RestClient("svc", url, SECRET)
    one = events(1)
    [result] = client.send(one)
    assert result.verdict is Verdict.DELIVERED and result.detail.startswith("201")
    path, headers, body = recorder.requests[-1]
    assert path == "/api/v1/events" and headers["Authorization"] == f"Bearer {SECRET}"
    assert body == json.loads(one[0].to_json())
    three = events(3)
    recorder.answers = [
        (
            200,
            {},
            lambda body: {
                "results": [
                    {"event_id": e["event_id"], "status": s, "error": None if s < 300 else "bad"}
                    for e, s in zip(body["events"], (201, 200, 422), strict=True)
                ]
            },
        )
    ]
    results = client.send(three)
    assert [r.verdict for r in results] == [Verdict.DELIVERED, Verdict.DELIVERED, Verdict.REJECTED]
    assert "422" in results[2].detail
    assert recorder.requests[-1][0] == "/api/v1/events/batch"
    assert [e["event_id"] for e in recorder.requests[-1][2]["events"]] == [str(e.event_id) for e in three]


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (500, {}, "retry"),
        (503, {}, "retry"),
        (429, {"Retry-After": "7"}, "retry"),
        (408, {}, "retry"),
        (422, {}, "rejected"),
        (409, {}, "rejected"),
        (401, {}, "rejected"),
    ],
)
def test_rest_client_status_rules(
    http_server: tuple[str, Recorder], status: int, headers: dict[str, str], expected: str
) -> None:
    url, recorder = http_server
    client = RestClient("svc", url, SECRET)
    recorder.answers = [(status, headers, {"error": {"code": "x", "message": "no", "fields": {}}})]
    if expected == "retry":
        with pytest.raises(RetryLater) as info:
            client.send(events(1))
        assert str(status) in str(info.value) and SECRET not in str(info.value)
        if "Retry-After" in headers:
            assert info.value.retry_after == 7.0
    else:
        [result] = client.send(events(1))
        assert result.verdict is Verdict.REJECTED and result.detail.startswith(str(status))


def test_rest_client_connection_refused_and_timeout_are_retried() -> None:
    refused = RestClient("svc", "http://127.0.0.1:9", SECRET, timeout=1)
    with pytest.raises(RetryLater, match="ConnectionError") as info:
        refused.send(events(1))
    assert SECRET not in str(info.value)
    slow_port = _silent_port()
    slow = RestClient("svc", f"http://127.0.0.1:{slow_port}", SECRET, timeout=0.3)
    with pytest.raises(RetryLater, match="no answer within 0.3 s"):
        slow.send(events(1))


def _silent_port() -> int:
    """A listening socket that never answers (a hung service)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    _silent_port.sock = sock  # type: ignore[attr-defined]  # kept open for the test's duration
    return int(sock.getsockname()[1])


def test_backoff_stays_capped_after_thousands_of_failures() -> None:
    # a deliverer stepping against a dead service for days: 2**attempt once overflowed a float
    backoff = Backoff(initial=0.5, maximum=60.0)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert all(0 < delay <= 60.0 for delay in delays)
    assert delays[-1] >= 30.0  # still backing off at the cap, not reset
