"""A local ICAT+ stand-in: a real HTTP server speaking ICAT+'s parcel-tracking routes, recording
what it got, with faults; in-process (:class:`IcatPlusStandIn` + :func:`serving`) or as a process
that can be killed and restarted (:class:`StandInProcess`, ``python -m`` this module).

Routes (ICAT+ base URL = the server root), after icat-plus-client 5.7.4:

- ``GET /tracking/{sessionId}/parcel?investigationId=I[&parcelId=P]``: ``TrackingApi.
  tracking_session_id_parcel_get``, a list of ``Parcel`` (``_id`` and ``id``, ``status``,
  ``currentStatus``, ``statuses`` (``Status``: ``status``, ``location``, ``createdAt``), ``content``:
  containers of ``Item``). Without ``investigationId``: every parcel.
- ``PUT .../investigation/id/{investigationId}/parcel/id/{parcelId}/parcel/status``: ``TrackingApi.
  tracking_session_id_investigation_id_investigation_id_parcel_id_parcel_id_parcel_status_put``, body
  a ``ParcelStatus``; appends to ``statuses``. 404 unknown parcel (or another investigation's), 400
  a status not in ``statuses`` (the constructor's; None: any non-empty text) or an invalid body.
- ``PUT .../parcel/id/{parcelId}/item/{itemId}``: ``TrackingApi.tracking_session_id_investigation_id_
  investigation_id_parcel_id_parcel_id_item_item_id_put``, body an ``Item``; replaces the item's
  fields (its ``_id``/``id`` and ``content`` kept), answers it. 404 no such item in the parcel.
- ``POST /dataacquisition/{apiKey}/notification``: ``DataAcquisitionApi.dataacquisition_api_key_
  notification_post`` (the e-logbook): recorded, answers ``{}``.
- A session id not in ``session_ids``, or another API key: 403. Anything else: 404.

Bodies are validated with ``icat_plus_client.models`` (``ParcelStatus``, ``Item``: a pydantic error
is a 400 with its text) when importable, else by a minimal check (name, type, a numeric
``sampleChangerLocation``). Control routes ``/_standin/{requests,parcels,faults}`` are never recorded.
The ``state`` file (parcels and recorded requests, written atomically after each change, loaded at
start) survives a kill. Not modelled: login (``POST /session``), session expiry, shipments,
addresses, labels, item creation/deletion, pagination and the other parcel filters, ICAT+ rights
(every valid session sees and changes every parcel); faults are not persisted.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import gevent

from bliss_sampletrack.errors import TestBedError
from bliss_sampletrack.testbed.beacon import log_tail

try:  # the BLISS 2.4 stack's ICAT+ client: its models validate the bodies (pydantic's
    # ValidationError is a ValueError)
    from icat_plus_client.models import Item, ParcelStatus
except ImportError:  # BLISS 2.0.3: no icat_plus_client; a minimal check instead
    Item = ParcelStatus = None

SESSION_ID = "standin-s3ss10n"
API_KEY = "standin-api-k3y"
READY = re.compile(r"^ready (http://[\d.]+:(\d+))$", re.M)
_TRACKING = r"/tracking/(?P<session>[^/]+)"
_PARCEL = _TRACKING + r"/investigation/id/(?P<inv>[^/]+)/parcel/id/(?P<parcel>[^/]+)"
ROUTES = [  # (method, path pattern, handler name)
    ("GET", re.compile(_TRACKING + r"/parcel"), "list_parcels"),
    ("PUT", re.compile(_PARCEL + r"/parcel/status"), "put_status"),
    ("PUT", re.compile(_PARCEL + r"/item/(?P<item>[^/]+)"), "put_item"),
    ("POST", re.compile(r"/dataacquisition/(?P<key>[^/]+)/notification"), "notify"),
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _oid() -> str:
    return uuid.uuid4().hex[:24]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a fault's unusual status (e.g. 599): any reason phrase will do
        return "Stand-in"


def _nodes(content: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in content:
        yield node
        yield from _nodes(node.get("content") or [])


def example_parcels(investigation_id: str = "123") -> list[dict[str, Any]]:
    """Two parcels of ``investigation_id``, each a puck of three sample items, as ICAT+ lists them."""
    parcels = []
    for p, (parcel_name, prefix) in enumerate([("Dewar-1", "LYS"), ("Dewar-2", "THA")], start=1):
        pid, cid = f"64f0c2a9e4b0aa11bb22cc{p:02x}", f"c0ffee00000000000000aa{p:02x}"
        items = [
            {"_id": f"5a00000000000000000000{p}{i}", "id": f"5a00000000000000000000{p}{i}",
             "name": f"{prefix}-000{i}", "type": "SAMPLE", "sampleId": 77000 + 10 * p + i,
             "sampleChangerLocation": p, "sampleContainerPosition": str(i)}
            for i in range(1, 4)
        ]  # fmt: skip
        puck = {"_id": cid, "id": cid, "name": f"puck-{p}", "type": "PUCK",
                "sampleChangerLocation": p, "content": items}  # fmt: skip
        status = {"_id": _oid(), "status": "READY", "location": "STORES", "createdAt": _now()}
        parcels.append({"_id": pid, "id": pid, "name": parcel_name, "investigationId": int(investigation_id)
                        if investigation_id.isdigit() else investigation_id, "status": "READY",
                        "currentStatus": "READY", "statuses": [status], "content": [puck]})  # fmt: skip
    return parcels


def _check_item(body: Any) -> None:
    """The body as an ICAT+ ``Item`` (ValueError when it is not)."""
    if Item is not None:
        if Item.from_dict(body) is None:
            raise ValueError("an Item is required")
        return
    if not isinstance(body, dict):
        raise ValueError("an Item (a JSON object) is required")
    for name in ("name", "type"):
        if not isinstance(body.get(name), str):
            raise ValueError(f"{name}: Field required (text)")
    location = body.get("sampleChangerLocation")
    if location is not None and (isinstance(location, bool) or not isinstance(location, int | float)):
        raise ValueError(f"sampleChangerLocation: Input should be a valid number, got {location!r}")


class IcatPlusStandIn:
    """The WSGI app. ``parcels``: the initial parcels (ignored when ``state`` exists already)."""

    def __init__(
        self,
        parcels: list[dict[str, Any]] | None = None,
        *,
        session_ids: tuple[str, ...] | list[str] = (SESSION_ID,),
        api_key: str = API_KEY,
        statuses: set[str] | None = None,
        state: str | Path | None = None,
    ) -> None:
        self.session_ids, self.api_key, self.statuses = set(session_ids), api_key, statuses
        self.state = Path(state) if state else None
        self.parcels: list[dict[str, Any]] = copy.deepcopy(parcels or [])
        self.requests: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        if self.state and self.state.exists() and self.state.stat().st_size:
            saved = json.loads(self.state.read_text())
            self.parcels, self.requests = saved["parcels"], saved["requests"]
        self.save()

    def save(self) -> None:
        """Write parcels and requests to ``state`` (temp file + os.replace: a kill leaves either)."""
        if self.state is None:
            return
        fd, tmp = tempfile.mkstemp(dir=self.state.parent, prefix=f".{self.state.name}.")
        with os.fdopen(fd, "w") as f:
            json.dump({"parcels": self.parcels, "requests": self.requests}, f)
        os.replace(tmp, self.state)

    # -- WSGI -------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            body, bad_json = (json.loads(raw) if raw else None), None
        except ValueError as exc:
            body, bad_json = raw.decode(errors="replace"), f"invalid JSON body: {exc}"
        if path.startswith("/_standin/"):
            status, headers, answer = self.control(method, path, body)
        else:
            query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
            status, headers, answer = self.api(method, path, query, body, bad_json)
        data = json.dumps(answer).encode()
        start_response(
            f"{status} {_phrase(status)}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers.items()],
        )
        return [data]

    def api(
        self, method: str, path: str, query: dict[str, str], body: Any, bad_json: str | None
    ) -> tuple[int, dict[str, str], Any]:
        record = {"seq": len(self.requests) + 1, "method": method, "path": path, "query": query,
                  "body": body, "status": None, "at": _now()}  # fmt: skip
        self.requests.append(record)
        self.save()  # arrival: a request hanging when the process is killed stays recorded
        headers: dict[str, str] = {}
        fault = next((f for f in self.faults if f["count"] > 0 and f["match"] in path), None)
        if fault is not None:
            fault["count"] -= 1
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = str(fault["retry_after"])
            if fault.get("hang"):
                gevent.sleep(float(fault["hang"]))
        if fault is not None and fault.get("status"):
            status, answer = int(fault["status"]), {"message": "stand-in fault"}
        elif bad_json:
            status, answer = 400, {"message": bad_json}
        else:
            status, answer = self.route(method, path, query, body)
        record["status"] = status
        self.save()
        return status, headers, answer

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        for verb, pattern, handler in ROUTES:
            match = pattern.fullmatch(path)
            if match and verb == method:
                args = match.groupdict()
                if "session" in args and args.pop("session") not in self.session_ids:
                    return 403, {"message": "Session not found or expired"}
                if "key" in args and args.pop("key") != self.api_key:
                    return 403, {"message": "Forbidden"}
                return getattr(self, handler)(query=query, body=body, **args)
        return 404, {"message": f"no route {method} {path}"}

    # -- the ICAT+ routes -------------------------------------------------------------------------
    def _parcel(self, inv: str, parcel: str) -> dict[str, Any] | None:
        return next((p for p in self.parcels if parcel in (p.get("_id"), p.get("id"))
                     and str(p.get("investigationId")) == inv), None)  # fmt: skip

    def list_parcels(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        inv, parcel = query.get("investigationId"), query.get("parcelId")
        return 200, [
            p for p in self.parcels
            if (inv is None or str(p.get("investigationId")) == inv)
            and (parcel is None or parcel in (p.get("_id"), p.get("id")))
        ]  # fmt: skip

    def put_status(self, query: dict[str, str], body: Any, inv: str, parcel: str) -> tuple[int, Any]:
        try:
            if ParcelStatus is not None:
                ParcelStatus.from_dict(body)
            elif not isinstance(body, dict) or not isinstance(body.get("location", ""), str | None):
                raise ValueError("a ParcelStatus (status, location as text) is required")
        except ValueError as exc:  # pydantic's ValidationError too
            return 400, {"message": str(exc)}
        status = body.get("status") if isinstance(body, dict) else None
        if not isinstance(status, str) or not status:
            return 400, {"message": "status: a non-empty text is required"}
        if self.statuses is not None and status not in self.statuses:
            return 400, {"message": f"status {status!r} is not one of {sorted(self.statuses)}"}
        found = self._parcel(inv, parcel)
        if found is None:
            return 404, {"message": f"parcel {parcel} not found in investigation {inv}"}
        entry = {"_id": _oid(), "status": status, "createdAt": _now()}
        if body.get("location") is not None:
            entry["location"] = body["location"]
        found.setdefault("statuses", []).append(entry)
        found["status"] = found["currentStatus"] = status
        return 200, found

    def put_item(self, query: dict[str, str], body: Any, inv: str, parcel: str, item: str) -> tuple[int, Any]:
        try:
            _check_item(body)
        except ValueError as exc:  # pydantic's ValidationError too
            return 400, {"message": str(exc)}
        found = self._parcel(inv, parcel)
        nodes = _nodes(found.get("content") or []) if found is not None else iter(())
        node = next((n for n in nodes if item in (n.get("_id"), n.get("id"))), None)
        if node is None:
            return 404, {"message": f"item {item} not found in parcel {parcel} of investigation {inv}"}
        kept = {k: node[k] for k in ("_id", "id", "content") if k in node}
        node.clear()
        node.update({k: v for k, v in body.items() if k not in kept}, **kept)
        return 200, node

    def notify(self, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {}

    # -- control ----------------------------------------------------------------------------------
    def control(self, method: str, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        if (method, path) == ("GET", "/_standin/requests"):
            return 200, {}, self.requests
        if (method, path) == ("GET", "/_standin/parcels"):
            return 200, {}, self.parcels
        if (method, path) == ("GET", "/_standin/faults"):
            return 200, {}, self.faults
        if (method, path) == ("POST", "/_standin/faults") and isinstance(body, dict):
            fault = {"status": 503, "count": 1, "match": "", "retry_after": None, "hang": None, **body}
            self.faults.append(fault)
            return 200, {}, fault
        if (method, path) == ("DELETE", "/_standin/faults"):
            self.faults.clear()
            return 200, {}, {}
        return 404, {}, {"message": f"no route {method} {path}"}


@contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` in this (gevent) process on a free loopback port; yields its URL."""
    from gevent.pywsgi import WSGIServer

    server = WSGIServer((host, port), app, log=None)
    server.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.stop(timeout=1)


class StandInControl:
    """The control routes, with ``requests`` (every call times out after ``timeout`` seconds)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        import requests

        answer = requests.request(method, f"{self.url}/_standin/{route}", json=body, timeout=self.timeout)
        answer.raise_for_status()
        return answer.json()

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "requests")

    def parcels(self) -> list[dict[str, Any]]:
        return self._call("GET", "parcels")

    def fault(
        self,
        status: int | None,
        count: int,
        match: str = "",
        retry_after: float | None = None,
        hang: float | None = None,
    ) -> dict[str, Any]:
        """The next ``count`` API requests whose path contains ``match`` wait ``hang`` seconds and
        are answered ``status`` (None: answered normally, after the hang)."""
        body = {"status": status, "count": count, "match": match, "retry_after": retry_after, "hang": hang}
        return self._call("POST", "faults", body)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")


class StandInProcess:
    """The stand-in as a process (``python -m bliss_sampletrack.testbed.icatplus_standin``) in
    ``workdir`` (its ``state.json``, ``parcels.json`` and ``standin.log``). ``port`` 0: a free one,
    kept by :meth:`restart`. Errors are :class:`TestBedError` quoting the end of its log."""

    def __init__(
        self,
        workdir: str | Path,
        parcels: list[dict[str, Any]] | None = None,
        *,
        session_ids: tuple[str, ...] | list[str] = (SESSION_ID,),
        api_key: str = API_KEY,
        statuses: set[str] | None = None,
        port: int = 0,
        timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state, self.log_path = self.workdir / "state.json", self.workdir / "standin.log"
        self.parcels_path = self.workdir / "parcels.json"
        self.parcels_path.write_text(json.dumps(parcels if parcels is not None else example_parcels()))
        self.session_ids, self.api_key, self.statuses = list(session_ids), api_key, statuses
        self.port, self.timeout, self.url = port, timeout, ""
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StandInProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def control(self) -> StandInControl:
        return StandInControl(self.url)

    def start(self) -> None:
        """Start the process and wait until it announces its URL and answers."""
        cmd = [sys.executable, "-m", __name__, "--port", str(self.port), "--state", str(self.state),
               "--api-key", self.api_key, "--parcels", str(self.parcels_path)]  # fmt: skip
        for session in self.session_ids:
            cmd += ["--session-id", session]
        if self.statuses is not None:
            cmd += ["--statuses", ",".join(sorted(self.statuses))]
        with self.log_path.open("ab") as out:
            offset = out.tell()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.timeout
        while not (match := READY.search(self.log_path.read_bytes()[offset:].decode(errors="replace"))):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TestBedError(f"the ICAT+ stand-in did not start:\n{self._tail()}")
            gevent.sleep(0.05)
        self.url, self.port = match.group(1), int(match.group(2))
        self.control.parcels()  # it answers

    def _tail(self) -> str:
        return log_tail(self.log_path, 30, "stand-in log", "(its log is empty)")

    def kill(self) -> None:
        """SIGKILL it (an outage) and reap it."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self._reap()

    def restart(self) -> None:
        """Start it again on the same port with the same state file (stopping it first if alive)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the timeout."""
        if self.alive:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._reap()

    def _reap(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise TestBedError(f"the ICAT+ stand-in survived SIGKILL:\n{self._tail()}") from None


def main(argv: list[str] | None = None) -> None:
    from gevent.event import Event
    from gevent.pywsgi import WSGIServer

    parser = argparse.ArgumentParser(description="A local ICAT+ stand-in (parcel tracking).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", help="JSON file of the parcels and recorded requests")
    parser.add_argument("--session-id", action="append", help="a valid session id (repeatable)")
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--parcels", help="JSON file: the initial parcels (a list)")
    parser.add_argument("--statuses", help="comma-separated accepted parcel statuses (default: any)")
    args = parser.parse_args(argv)
    parcels = json.loads(Path(args.parcels).read_text()) if args.parcels else example_parcels()
    app = IcatPlusStandIn(
        parcels,
        session_ids=args.session_id or [SESSION_ID],
        api_key=args.api_key,
        statuses=set(args.statuses.split(",")) if args.statuses else None,
        state=args.state,
    )
    server = WSGIServer((args.host, args.port), app, log=None)
    server.start()
    stopping = Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    print(f"ready http://{args.host}:{server.server_port}", flush=True)
    stopping.wait()
    server.stop(timeout=2)


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()
    main()
