"""The REST client's answer table (``docs/delivery-answers.md``, rest.py's docstring), one row
per test, each against a real server: the real tracking service (SQLite) behind the test bed's
:class:`FaultyProxy`, or, where the proxy cannot give that answer (a reset before any answer, a
redirect, a 2xx other than 200), a small HTTP server on loopback that answers exactly that.

Every test runs a real :class:`Deliverer` with a real :class:`RestClient` on a real Redis outbox,
calls ``step()`` and checks what the verdict did: the cursor moved or not, dead letters and their
answer, what the service stored, ``last_error``, later events held back or not. Then the fault is
fixed and the events go through (a retried event as a replay, stored once; a dead letter with
``retry_dead_letters()``, as ``sampletrack deliver --retry-dead-letters`` does).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import gevent
import gevent.server
import pytest
import requests
from http_scripts import serving
from outboxes import events, fill
from service_fixtures import Service, issue_token, start_service

from bliss_sampletrack.core import Event
from bliss_sampletrack.delivery.clients import RestClient, RetryLater
from bliss_sampletrack.delivery.loop import Backoff, Deliverer
from bliss_sampletrack.delivery.outbox import START, RedisStreamOutbox
from bliss_sampletrack.testbed.faults.service import Fault, FaultyProxy, check_delivery, stored_event_ids

pytestmark = pytest.mark.bliss
CLIENT = "svc"
TIMEOUT = 0.3  # the client's timeout (s) in every test: the slow proxy answers after 1 s
NOT_THE_SERVICE = "not the tracking service's answer"
REPLAY_HINT = "sampletrack deliver --retry-dead-letters"


# -- servers ---------------------------------------------------------------------------------------
@dataclass
class Scripted:
    """A WSGI app answering every request with one fixed answer; ``body`` may be a function of
    the request's JSON body. Records (method, path) of each request."""

    status: int
    body: bytes | Callable[[Any], bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/html"
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        body = self.body(json.loads(raw)) if callable(self.body) else self.body
        status = f"{self.status} {HTTPStatus(self.status).phrase}"
        start_response(status, [("Content-Type", self.content_type), *self.headers.items()])
        return [body]


class ResetServer:
    """Reads each request whole, then resets the connection (SO_LINGER 0) without a byte of answer:
    a service or proxy that dies with the request in hand."""

    def __init__(self) -> None:
        self.requests = 0
        self._server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)

    def __enter__(self) -> str:
        self._server.start()
        return f"http://127.0.0.1:{self._server.server_port}/api/v1"

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(timeout=1)

    def _handle(self, conn: Any, _address: Any) -> None:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lengths = [
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        length = int(lengths[0]) if lengths else 0
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        self.requests += 1
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


# -- helpers -----------------------------------------------------------------------------------------
def deliverer(outbox: RedisStreamOutbox, url: str, token: str, *, max_batch: int = 10) -> Deliverer:
    client = RestClient(CLIENT, url, token, timeout=TIMEOUT, max_batch=max_batch)
    return Deliverer(outbox, client, backoff=Backoff(initial=0.01, maximum=0.02))


def produce(outbox: RedisStreamOutbox, count: int, prefix: str = "A") -> tuple[list[str], list[str]]:
    """``count`` mounts into the outbox: (their event ids, their outbox entry ids), in order."""
    evts = events(count, outbox.beamline, prefix=prefix)
    fill(outbox, evts)
    entries = [e.id for e in outbox.next_entries(CLIENT, 10_000)][-count:]
    return [str(e.event_id) for e in evts], entries


def put(outbox: RedisStreamOutbox, event: Event) -> str:
    """One event (possibly one the service refuses) into the outbox; its event id."""
    fill(outbox, [event])
    return str(event.event_id)


def changed(event: Event, **fields: Any) -> Event:
    """``event`` with top-level contract fields replaced (no contract check: the outbox does none)."""
    data = {**json.loads(event.to_json()), **fields}
    return Event.from_dict(data, trusted=True)


def stored(service: tuple[Service, str], beamline: str) -> list[str]:
    return stored_event_ids(service[1], beamline)


def heal_and_drain(outbox: RedisStreamOutbox, url: str, token: str) -> None:
    """After the fault: a deliverer on the healthy path delivers everything pending."""
    fixed = deliverer(outbox, url, token)
    for _ in range(20):
        if outbox.pending(CLIENT) == 0:
            return
        fixed.step()
    raise AssertionError(f"{outbox.pending(CLIENT)} still pending after the fix: {outbox.last_error(CLIENT)}")


def html_page(status: int) -> bytes:
    phrase = HTTPStatus(status).phrase
    return (
        f"<html><head><title>{status} {phrase}</title></head><body><center><h1>{status} {phrase}</h1>"
        "</center><hr><center>nginx/1.24.0</center></body></html>"
    ).encode()


# -- 200/201 with the contract's body: delivered ---------------------------------------------------
@pytest.mark.parametrize("count", [1, 3], ids=["single-201", "batch-200"])
def test_contract_success_is_delivered(
    count: int, outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str, service: tuple[Service, str]
) -> None:
    ids, entries = produce(outbox, count)
    d = deliverer(outbox, proxy.url, token)
    assert d.step() == count
    assert outbox.cursor(CLIENT) == entries[-1] and outbox.pending(CLIENT) == 0
    assert stored(service, outbox.beamline) == ids
    assert outbox.dead_letters(CLIENT) == [] and outbox.last_error(CLIENT) is None


# -- no answer: retried, later events held back ----------------------------------------------------
NO_ANSWER: dict[str, tuple[Callable[[FaultyProxy], None] | None, tuple[str, ...], bool]] = {
    # name: (how the proxy fails (None: the ResetServer), last_error texts (one of), stored meanwhile)
    "refused": (lambda p: p.down(), ("Connection refused",), False),
    "reset-before-answer": (None, ("ConnectionError: ('Connection aborted.'",), False),
    "reset-mid-answer": (lambda p: p.reset(), ("ChunkedEncodingError", "ConnectionError"), True),
    "timeout": (lambda p: p.slow(1.0), (f"no answer within {TIMEOUT:g} s",), True),
}


@pytest.mark.parametrize("shape", ["single", "batch"])
@pytest.mark.parametrize("kind", list(NO_ANSWER))
def test_no_answer_is_retried_and_holds_back_later_events(
    kind: str,
    shape: str,
    outbox: RedisStreamOutbox,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
) -> None:
    fault, texts, reaches_service = NO_ANSWER[kind]
    ids, _ = produce(outbox, 3)
    max_batch, sent = (1, 1) if shape == "single" else (10, 3)
    path = "/events" if shape == "single" else "/events/batch"
    reset_server = ResetServer()
    with reset_server as reset_url:
        if fault is not None:
            fault(proxy)
        d = deliverer(outbox, reset_url if fault is None else proxy.url, token, max_batch=max_batch)
        assert d.step() == 0
    error = outbox.last_error(CLIENT)
    assert error is not None and f"{path}: " in error and any(t in error for t in texts), error
    assert token not in error
    # nothing finished: the cursor stays, every event (the later ones too) is still pending
    assert outbox.cursor(CLIENT) == START and outbox.pending(CLIENT) == 3
    assert outbox.dead_letters(CLIENT) == []
    # the service stored what the fault let through, but nothing counts as delivered until it says so
    assert stored(service, outbox.beamline) == (ids[:sent] if reaches_service else [])
    if fault is None:
        assert reset_server.requests == 1
    proxy.healthy()
    heal_and_drain(outbox, proxy.url, token)
    check = check_delivery(ids, stored(service, outbox.beamline))
    assert check.ok, check  # the ones stored during the fault were replays (200): stored once
    assert outbox.last_error(CLIENT) is None and outbox.dead_letters(CLIENT) == []


# -- a success status without the contract's body: retried, never delivered nor dead-lettered ------
@pytest.mark.parametrize("shape", ["single", "batch"])
@pytest.mark.parametrize("kind", ["html", "text", "empty", "wrong_shape", "truncated"])
def test_200_without_the_contracts_body_is_retried(
    kind: str,
    shape: str,
    outbox: RedisStreamOutbox,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
) -> None:
    count = 1 if shape == "single" else 3
    ids, _ = produce(outbox, count)
    proxy.garbage(kind)
    d = deliverer(outbox, proxy.url, token)
    for _ in range(6 if kind == "wrong_shape" else 1):  # the proxy's six wrong shapes, in turn
        assert d.step() == 0
        assert outbox.cursor(CLIENT) == START and outbox.pending(CLIENT) == count
        error = outbox.last_error(CLIENT)
        assert error is not None and "answered" in error, error
        assert outbox.dead_letters(CLIENT) == []
    # a truncated answer is the service's own, cut: it stored the events; the others never reached it
    assert stored(service, outbox.beamline) == (ids if kind == "truncated" else [])
    proxy.healthy()
    heal_and_drain(outbox, proxy.url, token)
    check = check_delivery(ids, stored(service, outbox.beamline))
    assert check.ok, check


def _results_201(body: Any) -> bytes:
    results = [{"event_id": e["event_id"], "status": 201, "error": None} for e in body["events"]]
    return json.dumps({"results": results}).encode()


@pytest.mark.parametrize(
    ("count", "answer", "text"),
    [
        pytest.param(
            1,
            Scripted(202, b'{"queued": true}', content_type="application/json"),
            "answered 202",
            id="single-202",
        ),
        pytest.param(1, Scripted(204), "answered 204", id="single-204"),
        pytest.param(
            3,
            Scripted(201, _results_201, content_type="application/json"),
            "answered 201",
            id="batch-201-with-results",
        ),
        pytest.param(3, Scripted(204), "answered 204", id="batch-204"),
    ],
)
def test_another_2xx_is_retried(
    count: int,
    answer: Scripted,
    text: str,
    outbox: RedisStreamOutbox,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
) -> None:
    """Only the contract's 200/201 deliver; any other 2xx (a gateway's 202 "queued", a 204) is not
    the service's answer: retried, never a dead letter (the contract dead-letters 4xx only)."""
    ids, _ = produce(outbox, count)
    with serving(answer) as base:
        d = deliverer(outbox, base + "/api/v1", token)
        assert d.step() == 0
    assert len(answer.requests) == 1
    assert outbox.cursor(CLIENT) == START and outbox.pending(CLIENT) == count
    error = outbox.last_error(CLIENT)
    assert error is not None and text in error, error
    assert outbox.dead_letters(CLIENT) == []
    heal_and_drain(outbox, proxy.url, token)
    assert stored(service, outbox.beamline) == ids


# -- 408, 429, 5xx: retried, later events held back ------------------------------------------------
GATEWAY_PAGE = b"<html><body><h1>Bad gateway</h1><p>The upstream server is not answering.</p></body></html>"


RETRYABLE = [  # (status, body (None: the contract's JSON error), Retry-After)
    (408, None, None),
    (429, None, None),
    (500, None, None),
    (502, GATEWAY_PAGE, None),
    (503, None, None),
    (504, GATEWAY_PAGE, None),
]
RETRY_AFTER = [(429, None, 1), (503, None, 1)]  # 1 s each: on the batch path only (the same code)


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "shape"),
    [
        *(
            pytest.param(s, b, r, shape, id=f"{s}{'-html' if b else ''}-{shape}")
            for s, b, r in RETRYABLE
            for shape in ("single", "batch")
        ),
        *(pytest.param(s, b, r, "batch", id=f"{s}-retry-after-batch") for s, b, r in RETRY_AFTER),
    ],
)
def test_retryable_status_is_retried_and_holds_back_later_events(
    status: int,
    body: bytes | None,
    retry_after: int | None,
    shape: str,
    outbox: RedisStreamOutbox,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
) -> None:
    ids, _ = produce(outbox, 3)
    max_batch = 1 if shape == "single" else 10
    proxy.set_fault(
        Fault.ERROR_4XX if status < 500 else Fault.ERROR_5XX,
        status=status,
        body=body,
        retry_after=retry_after,
    )
    d = deliverer(outbox, proxy.url, token, max_batch=max_batch)
    began = time.monotonic()
    assert d.step() == 0
    waited = time.monotonic() - began
    error = outbox.last_error(CLIENT)
    assert error is not None and error.startswith(str(status)), error
    assert outbox.cursor(CLIENT) == START and outbox.pending(CLIENT) == 3
    assert outbox.dead_letters(CLIENT) == [] and stored(service, outbox.beamline) == []
    # the server's hint, as the client reads it; the loop sends nothing before it has passed
    with pytest.raises(RetryLater) as failure:
        d.client.send([e.event for e in outbox.next_entries(CLIENT, max_batch) if e.event is not None])
    assert failure.value.retry_after == (float(retry_after) if retry_after else None)
    if retry_after:
        assert waited >= retry_after - 0.1, waited
    else:
        assert waited < 0.5, waited  # the test's backoff (at most 0.02 s)
    proxy.healthy()
    heal_and_drain(outbox, proxy.url, token)
    assert stored(service, outbox.beamline) == ids


# -- 413 ------------------------------------------------------------------------------------------------
def test_413_on_a_batch_falls_back_to_smaller_requests(outbox: RedisStreamOutbox, tmp_path: Path) -> None:
    """The real service with a 1200-byte batch limit: a batch of four events (about 2 kB) is a 413
    (retried, nothing dead-lettered), then the loop sends smaller requests, which go through."""
    db_url = f"sqlite:///{tmp_path / 'small.db'}"
    token = issue_token(db_url, [outbox.beamline])
    small = start_service(db_url, tmp_path, env={"SAMPLETRACK_SERVICE_MAX_BATCH_BODY_BYTES": "1200"})
    try:
        with FaultyProxy(small.base_url) as counting:  # healthy: it only counts what it forwards
            ids, _ = produce(outbox, 4)
            d = deliverer(outbox, counting.url, token)
            assert d.step() == 0
            error = outbox.last_error(CLIENT)
            assert error is not None and "413" in error and "too large" in error, error
            assert outbox.pending(CLIENT) == 4 and outbox.dead_letters(CLIENT) == []
            assert stored_event_ids(db_url, outbox.beamline) == []
            for _ in range(8):
                if not outbox.pending(CLIENT):
                    break
                d.step()
            assert outbox.pending(CLIENT) == 0 and outbox.dead_letters(CLIENT) == []
            assert stored_event_ids(db_url, outbox.beamline) == ids
            sizes = [len(ids_sent) for ids_sent in counting.stats.forwarded]
            assert sizes[0] == 4 and all(size < 4 for size in sizes[1:]), sizes
    finally:
        small.stop()


def test_413_on_a_single_event_is_a_dead_letter(
    outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str, service: tuple[Service, str]
) -> None:
    """One event over the service's 1 MiB body limit: the contract's 413 (any other 4xx)."""
    [template] = events(1, outbox.beamline, prefix="BIG")
    big = put(outbox, changed(template, message="m" * (1024 * 1024)))
    later, _ = produce(outbox, 1, prefix="B")
    d = deliverer(outbox, proxy.url, token, max_batch=1)
    assert d.step() == 1
    [letter] = outbox.dead_letters(CLIENT)
    assert letter.payload["event_id"] == big  # (its 1 MiB message breaks the contract: no Event)
    assert letter.answer.startswith('413 {"error":{"code":"payload_too_large"'), letter.answer
    assert NOT_THE_SERVICE not in letter.answer
    assert d.step() == 1  # the next event is not held back
    assert stored(service, outbox.beamline) == later and outbox.pending(CLIENT) == 0


# -- 4xx that are not the service's answer: dead letters that say so -----------------------------------
@pytest.mark.parametrize("shape", ["single", "batch"])
@pytest.mark.parametrize("status", [400, 404, 405, 410])
def test_a_proxys_4xx_page_is_a_dead_letter_that_says_it_was_not_the_service(
    status: int,
    shape: str,
    outbox: RedisStreamOutbox,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
) -> None:
    ids, entries = produce(outbox, 2)
    max_batch = 1 if shape == "single" else 10
    proxy.error_4xx(status, body=html_page(status))
    d = deliverer(outbox, proxy.url, token, max_batch=max_batch)
    assert sum(d.step() for _ in range(2 if shape == "single" else 1)) == 2
    # per the contract (any other 4xx): set aside, the cursor moves past them, nothing held back
    assert outbox.cursor(CLIENT) == entries[-1] and outbox.pending(CLIENT) == 0
    letters = outbox.dead_letters(CLIENT)
    assert [str(letter.event.event_id) for letter in letters if letter.event] == ids
    for letter in letters:
        assert letter.answer.startswith(f"{status} {NOT_THE_SERVICE}"), letter.answer
        assert "check key 'url'" in letter.answer and REPLAY_HINT in letter.answer
        assert "nginx/1.24.0" in letter.answer  # the page itself is kept, for whoever reads it
        assert token not in letter.answer
    assert stored(service, outbox.beamline) == []
    # the proxy fixed: later events go on, then the dead letters are sent again
    proxy.healthy()
    later, _ = produce(outbox, 1, prefix="L")
    assert d.step() == 1
    assert d.retry_dead_letters() == (2, 0)
    assert stored(service, outbox.beamline) == later + ids


@pytest.mark.parametrize("shape", ["single", "batch"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_is_a_dead_letter(
    status: int,
    shape: str,
    outbox: RedisStreamOutbox,
    proxy: FaultyProxy,
    token: str,
    service: tuple[Service, str],
) -> None:
    """E.g. http:// redirected to https://: following it would turn the POST into a GET (301/302)
    or send the token elsewhere; the contract has no rule for 3xx: a configuration error, as a 404."""
    ids, entries = produce(outbox, 2)
    max_batch = 1 if shape == "single" else 10
    target = "https://tracking.example.org/api/v1/events"
    answer = Scripted(status, b"<html><body>Moved</body></html>", headers={"Location": target})
    with serving(answer) as base:
        d = deliverer(outbox, base + "/api/v1", token, max_batch=max_batch)
        assert sum(d.step() for _ in range(2 if shape == "single" else 1)) == 2
    assert all(method == "POST" for method, _ in answer.requests)  # never followed
    assert len(answer.requests) == (2 if shape == "single" else 1)
    assert outbox.cursor(CLIENT) == entries[-1] and outbox.pending(CLIENT) == 0
    letters = outbox.dead_letters(CLIENT)
    assert [str(letter.event.event_id) for letter in letters if letter.event] == ids
    for letter in letters:
        assert letter.answer.startswith(f"{status} a redirect to {target}, not followed"), letter.answer
        assert "check key 'url'" in letter.answer and REPLAY_HINT in letter.answer
    # the url fixed: sent again
    fixed = deliverer(outbox, proxy.url, token)
    assert fixed.retry_dead_letters() == (2, 0)
    assert stored(service, outbox.beamline) == ids


# -- the contract's own 4xx answers: dead letters with the service's JSON error --------------------------
def post_directly(service: tuple[Service, str], token: str, body: dict[str, Any]) -> int:
    answer = requests.post(
        service[0].url("/events"), json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return answer.status_code


@pytest.mark.parametrize("shape", ["single", "batch"])
def test_401_bad_token_dead_letters_every_event_until_fixed(
    shape: str, outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str, service: tuple[Service, str]
) -> None:
    ids, entries = produce(outbox, 2)
    max_batch = 1 if shape == "single" else 10
    d = deliverer(outbox, proxy.url, "stk_not_a_real_token", max_batch=max_batch)
    assert sum(d.step() for _ in range(2 if shape == "single" else 1)) == 2
    assert outbox.cursor(CLIENT) == entries[-1] and outbox.pending(CLIENT) == 0
    letters = outbox.dead_letters(CLIENT)
    assert len(letters) == 2
    for letter in letters:
        assert letter.answer.startswith('401 {"error":{"code":"unauthorized"'), letter.answer
        assert NOT_THE_SERVICE not in letter.answer
    assert stored(service, outbox.beamline) == []
    assert deliverer(outbox, proxy.url, token).retry_dead_letters() == (2, 0)  # the token fixed
    assert stored(service, outbox.beamline) == ids


@pytest.mark.parametrize("status", [403, 409, 422])
def test_a_contract_refusal_of_one_event_is_a_dead_letter_and_the_next_goes_on(
    status: int, outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str, service: tuple[Service, str]
) -> None:
    [template] = events(1, outbox.beamline, prefix="R")
    if status == 403:  # an event of a beamline the token may not write
        refused = changed(template, beamline="elsewhere")
    elif status == 409:  # its event_id already stored with another body
        refused = template
        other = {**json.loads(template.to_json()), "message": "another body"}
        assert post_directly(service, token, other) == 201
    else:  # the service's contract check (an empty session)
        refused = changed(template, session="")
    put(outbox, refused)
    later, _ = produce(outbox, 1, prefix="N")
    before = stored(service, outbox.beamline)
    code = {403: "forbidden", 409: "conflict", 422: "invalid_event"}[status]
    d = deliverer(outbox, proxy.url, token, max_batch=1)
    assert d.step() == 1
    [letter] = outbox.dead_letters(CLIENT)
    assert letter.payload["event_id"] == str(refused.event_id)  # (an invalid one has no Event)
    assert letter.answer.startswith(f'{status} {{"error":{{"code":"{code}"'), letter.answer
    assert NOT_THE_SERVICE not in letter.answer
    assert d.step() == 1  # never blocks the later event
    assert stored(service, outbox.beamline) == before + later and outbox.pending(CLIENT) == 0


def test_a_batch_with_mixed_results_delivers_and_dead_letters_event_by_event(
    outbox: RedisStreamOutbox, proxy: FaultyProxy, token: str, service: tuple[Service, str]
) -> None:
    """One batch to the real service answered 201, 200 (a replay), 409, 422, 403, 201: the 2xx
    are delivered, the others dead-lettered with their own error, and the cursor moves past all."""
    new, replay, conflict, invalid, forbidden, last = events(6, outbox.beamline, prefix="M")
    assert post_directly(service, token, json.loads(replay.to_json())) == 201
    other = {**json.loads(conflict.to_json()), "message": "another body"}
    assert post_directly(service, token, other) == 201
    batch = [
        new,
        replay,
        conflict,
        changed(invalid, session=""),
        changed(forbidden, beamline="elsewhere"),
        last,
    ]
    fill(outbox, batch)
    entries = [e.id for e in outbox.next_entries(CLIENT, 10)]
    d = deliverer(outbox, proxy.url, token)
    assert d.step() == 6
    assert proxy.stats.forwarded[-1] == tuple(str(e.event_id) for e in batch)  # one request
    assert outbox.cursor(CLIENT) == entries[-1] and outbox.pending(CLIENT) == 0
    letters = outbox.dead_letters(CLIENT)
    assert [letter.payload["event_id"] for letter in letters] == [
        str(conflict.event_id),
        str(invalid.event_id),
        str(forbidden.event_id),
    ]
    for letter, status, code in zip(
        letters, (409, 422, 403), ("conflict", "invalid_event", "forbidden"), strict=True
    ):
        # as a single event's dead letter reads: the status, then the service's JSON error
        assert letter.answer.startswith(f'{status} {{"error":{{"code":"{code}"'), letter.answer
        json.loads(letter.answer.split(" ", 1)[1])
    assert stored(service, outbox.beamline) == [str(replay.event_id), str(conflict.event_id)] + [
        str(new.event_id),
        str(last.event_id),
    ]
