"""A faulty front for the tracking service: a loopback HTTP proxy that can misbehave on demand.

:class:`FaultyProxy` listens on a loopback port and forwards each request to a real service
(``upstream``, e.g. ``http://127.0.0.1:8090/api/v1``), unless it is switched to a fault. Point
the deliverer at :attr:`FaultyProxy.url` instead of the service; switch at any time:

- :meth:`~FaultyProxy.healthy`: forward, answer what the service answered;
- :meth:`~FaultyProxy.down`: nothing listens: connection refused (open connections are reset);
- :meth:`~FaultyProxy.slow`: answer ``seconds`` late (beyond the client's timeout); the request
  reaches the service before the wait (``store_first``) or after it (a late arrival);
- :meth:`~FaultyProxy.error_5xx`, :meth:`~FaultyProxy.error_4xx`: that status, never forwarded;
- :meth:`~FaultyProxy.garbage`: ``200`` with a body that is not the contract's answer: ``text``,
  ``html``, ``empty``, ``wrong_shape`` (JSON, not of the answer's shape; never forwarded) or
  ``truncated`` (the service's real answer cut in half: forwarded and stored);
- :meth:`~FaultyProxy.reset`: forward, then send half the answer and reset the connection.

Real sockets, gevent: run it in a gevent-patched process (the tests', a soak script's). Each
answer says ``Connection: close``, so every request gets a connection of its own. The proxy
counts what it saw (:attr:`FaultyProxy.stats`): requests per fault, the event ids it forwarded
(:meth:`FaultyProxy.replayed_ids`), the answers the service gave it (``upstream_answers``: with
``slow(store_first=True)``, a rise means "stored, answer held back": the moment to kill a
deliverer with a batch in flight), and the most requests it held at once (one deliverer sends
one request at a time: more than one means two deliverers worked at once).

:func:`stored_event_ids` reads what a SQLite service stored, in arrival order, to check that
every event is there once and in order (:func:`check_delivery`).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import sqlite3
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.server
import gevent.socket

log = logging.getLogger(__name__)

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class Fault(StrEnum):
    HEALTHY = "healthy"
    DOWN = "down"
    SLOW = "slow"
    ERROR_5XX = "5xx"
    ERROR_4XX = "4xx"
    GARBAGE = "garbage"
    RESET = "reset"


GARBAGE_KINDS = ("text", "html", "empty", "wrong_shape", "truncated")
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Welcome</title></head>"
    b"<body><h1>It works!</h1><p>Maintenance page.</p></body></html>"
)


@dataclass
class ProxyStats:
    requests: Counter[str] = field(default_factory=Counter)  # fault name -> requests seen under it
    forwarded: list[tuple[str, ...]] = field(default_factory=list)  # event ids of each forwarded POST
    upstream_answers: int = 0  # requests the service has answered (and so stored, for a POST)
    in_flight: int = 0
    max_in_flight: int = 0


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def event_ids(self) -> tuple[str, ...]:
        try:
            data = json.loads(self.body)
        except ValueError:
            return ()
        items = data.get("events") if isinstance(data, dict) and "events" in data else [data]
        if not isinstance(items, list):
            return ()
        return tuple(str(i.get("event_id")) for i in items if isinstance(i, dict))


class FaultyProxy:
    """A loopback HTTP front of ``upstream`` (a service's base URL) that fails on demand."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"FaultyProxy: upstream must be http://HOST:PORT[/base], got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.base_path = parts.path.rstrip("/")
        self.host, self.port, self.timeout = host, port, timeout
        self.fault = Fault.HEALTHY
        self.params: dict[str, Any] = {}
        self.stats = ProxyStats()
        self._server: gevent.server.StreamServer | None = None
        self._connections: set[Any] = set()
        self._variant = 0

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL to give the deliverer (the upstream's path, on the proxy's port)."""
        return f"http://{self.host}:{self.port}{self.base_path}"

    def start(self) -> FaultyProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self._close_listener()
        self._reset_connections()

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _listen(self) -> None:
        if self._server is not None:
            return
        listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))  # the same port again after down()
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._server = gevent.server.StreamServer(listener, self._handle)
        self._server.start()

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=0)  # closes the listening socket: connections are refused
            self._server = None

    def _reset_connections(self) -> None:
        for conn in list(self._connections):
            _abort(conn)
        self._connections.clear()

    # -- switching ---------------------------------------------------------------------------------
    def set_fault(self, fault: Fault | str, **params: Any) -> None:
        """Switch to ``fault`` (a :class:`Fault` or its value); see the methods for ``params``."""
        fault = Fault(fault)
        if fault is Fault.GARBAGE and params.get("kind", "text") not in GARBAGE_KINDS:
            raise ValueError(f"garbage kind must be one of {GARBAGE_KINDS}, got {params.get('kind')!r}")
        log.info("faulty proxy %s: %s %s", self.url, fault.value, params or "")
        self.fault, self.params = fault, params
        if fault is Fault.DOWN:
            self._close_listener()
            self._reset_connections()
        else:
            self._listen()

    def healthy(self) -> None:
        self.set_fault(Fault.HEALTHY)

    def down(self) -> None:
        self.set_fault(Fault.DOWN)

    def slow(self, seconds: int | float, *, store_first: bool = True) -> None:
        self.set_fault(Fault.SLOW, seconds=seconds, store_first=store_first)

    def error_5xx(
        self, status: int = 503, *, body: bytes | None = None, retry_after: int | None = None
    ) -> None:
        self.set_fault(Fault.ERROR_5XX, status=status, body=body, retry_after=retry_after)

    def error_4xx(self, status: int = 404, *, body: bytes | None = None) -> None:
        self.set_fault(Fault.ERROR_4XX, status=status, body=body)

    def garbage(self, kind: str = "text") -> None:
        self.set_fault(Fault.GARBAGE, kind=kind)

    def reset(self) -> None:
        self.set_fault(Fault.RESET)

    # -- what was seen -----------------------------------------------------------------------------
    def replayed_ids(self) -> set[str]:
        """Event ids forwarded to the service more than once (replays after a lost answer)."""
        counts = Counter(i for ids in self.stats.forwarded for i in ids)
        return {event_id for event_id, n in counts.items() if n > 1}

    # -- serving -----------------------------------------------------------------------------------
    def _handle(self, conn: Any, _address: Any) -> None:
        self._connections.add(conn)
        conn.settimeout(self.timeout)
        try:
            request = _read_request(conn)
            if request is None:
                return
            self._serve(conn, request)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # the client went away (killed deliverer, its timeout) or sent nonsense: its business
            log.debug("faulty proxy %s: connection ended: %s", self.url, exc)
        finally:
            self._connections.discard(conn)
            conn.close()

    def _serve(self, conn: Any, request: _Request) -> None:
        fault, params = self.fault, dict(self.params)  # as at the request's arrival
        self.stats.requests[fault.value] += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            self._answer(conn, request, fault, params)
        finally:
            self.stats.in_flight -= 1

    def _answer(self, conn: Any, request: _Request, fault: Fault, params: dict[str, Any]) -> None:
        if fault is Fault.DOWN:  # accepted just before going down: the service died mid-request
            _abort(conn)
            return
        if fault in (Fault.ERROR_5XX, Fault.ERROR_4XX):
            body = params.get("body")
            if body is None:
                status = params["status"]
                body = _error_body("proxy_fault", f"{status} injected by the faulty proxy")
            extra = [("Retry-After", str(params["retry_after"]))] if params.get("retry_after") else []
            _respond(conn, params["status"], body, extra=extra)
            return
        if fault is Fault.GARBAGE and params["kind"] != "truncated":
            kind = params["kind"]
            content_type = "text/html" if kind == "html" else "text/plain"
            body = {"text": b"OK", "html": HTML_PAGE, "empty": b""}.get(kind)
            if body is None:
                body, content_type = self._wrong_shape(request), "application/json"
            _respond(conn, 200, body, content_type=content_type)
            return
        if fault is Fault.SLOW and not params["store_first"]:
            gevent.sleep(params["seconds"])  # a late arrival: the client has given up by then
        status, headers, body = self._forward(request)
        if fault is Fault.SLOW and params["store_first"]:
            gevent.sleep(params["seconds"])  # stored, answered too late
        if fault is Fault.GARBAGE:  # truncated: the real answer, cut
            body = body[: len(body) // 2]
        if fault is Fault.RESET:
            head = _head(status, len(body), headers.get("Content-Type", "application/json"), [])
            conn.sendall(head + body[: len(body) // 2])
            _abort(conn)
            return
        _respond(conn, status, body, content_type=headers.get("Content-Type", "application/json"))

    def _forward(self, request: _Request) -> tuple[int, dict[str, str], bytes]:
        if request.method == "POST":
            self.stats.forwarded.append(request.event_ids())
        try:
            upstream = gevent.socket.create_connection(self.upstream, timeout=self.timeout)
        except OSError as exc:
            return 502, {}, _error_body("bad_gateway", f"upstream unreachable: {exc}")
        try:
            skip = {"connection", "keep-alive", "content-length", "transfer-encoding"}
            lines = [f"{request.method} {request.target} HTTP/1.1"]
            lines += [f"{k}: {v}" for k, v in request.headers if k.lower() not in skip]
            lines += [f"Content-Length: {len(request.body)}", "Connection: close", "", ""]
            upstream.sendall("\r\n".join(lines).encode("latin-1") + request.body)
            response = http.client.HTTPResponse(upstream)
            response.begin()
            body = response.read()
            self.stats.upstream_answers += 1
            return response.status, dict(response.getheaders()), body
        finally:
            upstream.close()

    def _wrong_shape(self, request: _Request) -> bytes:
        """JSON, but not the contract's answer; a different shape each time."""
        ids = request.event_ids()
        self._variant += 1
        variants: list[Any] = [
            [],
            {"status": "ok"},
            {"results": "ok"},
            {"results": [{"event_id": i, "status": None} for i in ids]},
            {"results": [{"event_id": i, "status": "created"} for i in ids]},
            {"event": None},
        ]
        return json.dumps(variants[self._variant % len(variants)]).encode()


# -- HTTP over a raw socket ----------------------------------------------------------------------------
def _read_request(conn: Any) -> _Request | None:
    rfile = conn.makefile("rb")
    try:
        line = rfile.readline(MAX_HEADER)
        if not line:
            return None
        method, target, _version = line.decode("latin-1").split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            raw = rfile.readline(MAX_HEADER)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        if not 0 <= length <= MAX_BODY:
            raise ValueError(f"Content-Length {length} out of range")
        body = rfile.read(length) if length else b""
        return _Request(method, target, headers, body)
    finally:
        rfile.close()


def _head(status: int, length: int, content_type: str, extra: list[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in extra),
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1")


def _respond(
    conn: Any,
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    extra: list[tuple[str, str]] | None = None,
) -> None:
    conn.sendall(_head(status, len(body), content_type, extra or []) + body)


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "fields": {}}}).encode()


def _abort(conn: Any) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed peer's kernel does."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError as exc:
        log.debug("faulty proxy: reset of a closed connection: %s", exc)


# -- what the service stored ----------------------------------------------------------------------------
def stored_event_ids(db_url: str, beamline: str) -> list[str]:
    """The event ids a SQLite-backed service stored for ``beamline``, in arrival order (``seq``)."""
    if not db_url.startswith("sqlite:///"):
        raise ValueError(f"stored_event_ids reads SQLite databases (sqlite:///PATH), got {db_url!r}")
    path = db_url.removeprefix("sqlite:///").split("?", 1)[0]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute("SELECT event_id FROM events WHERE beamline = ? ORDER BY seq", (beamline,))
        return [row[0] for row in rows]


@dataclass(frozen=True, slots=True)
class DeliveryCheck:
    """How what was stored compares with what was produced (both lists of event ids)."""

    missing: list[str]
    duplicated: list[str]
    unexpected: list[str]
    in_order: bool

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected) and self.in_order

    def __str__(self) -> str:
        return (
            f"missing {len(self.missing)}, duplicated {len(self.duplicated)}, "
            f"unexpected {len(self.unexpected)}, in order: {self.in_order}"
        )


def check_delivery(produced: list[str], stored: list[str]) -> DeliveryCheck:
    """Every produced event stored once, nothing else, in the produced order."""
    counts = Counter(stored)
    wanted = set(produced)
    return DeliveryCheck(
        missing=[i for i in produced if i not in counts],
        duplicated=sorted(i for i, n in counts.items() if n > 1),
        unexpected=sorted(i for i in counts if i not in wanted),
        in_order=[i for i in stored if i in wanted] == [i for i in produced if i in counts],
    )
