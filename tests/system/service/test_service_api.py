"""The HTTP contract of the tracking service, against a real ``sampletrack-service serve`` process.

One service (SQLite) for the module; each test uses events of its own. The storage-level tests
run on both databases (test_service_storage.py), and so do the concurrency tests
(test_service_concurrency.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from service_fixtures import Service, issue_token, make_event, stamp, start_service

pytest_plugins = ["service_fixtures"]


@dataclass
class Api:
    service: Service
    db_url: str
    writer: str  # read and write: id23-1, id30
    other: str  # read and write: bm07
    reader: str  # read only, every beamline
    reader_id23: str  # read only, id23-1

    def headers(self, token: str | None) -> dict[str, str]:
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    def post(
        self, path: str, body: Any, token: str | None = None, raw: bytes | None = None
    ) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {
            **self.headers(self.writer if token is None else token),
            "Content-Type": "application/json",
        }
        return requests.post(self.service.url(path), data=data, headers=headers, timeout=10)

    def get(self, path: str, token: str | None = None, **params: Any) -> requests.Response:
        headers = self.headers(self.reader if token is None else token)
        return requests.get(self.service.url(path), params=params, headers=headers, timeout=10)

    def all_tokens(self) -> list[str]:
        return [self.writer, self.other, self.reader, self.reader_id23]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    workdir = tmp_path_factory.mktemp("api")
    db_url = f"sqlite:///{workdir / 'tracking.db'}"
    tokens = {
        "writer": issue_token(db_url, ["id23-1", "id30"], label="beamline control"),
        "other": issue_token(db_url, ["bm07"]),
        "reader": issue_token(db_url, [], read_only=True),
        "reader_id23": issue_token(db_url, ["id23-1"], read_only=True),
    }
    service = start_service(db_url, workdir, validation_workers=2)
    try:
        yield Api(service, db_url, **tokens)
    finally:
        service.stop()


def error_of(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return dict(body["error"])


def unique_beamline_events(
    n: int, beamline: str = "id30", barcode: str | None = None
) -> list[dict[str, Any]]:
    barcode = barcode or f"T-{uuid.uuid4().hex[:8]}"
    return [
        make_event(
            occurred_at=stamp(i, "2026-03-01"), beamline=beamline, sample={"barcode": f"{barcode}-{i}"}
        )
        for i in range(n)
    ]


# --- health, auth ------------------------------------------------------------------------------
def test_healthz_needs_no_token(api: Api) -> None:
    response = requests.get(api.service.url("/healthz"), timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-token",
        "Bearer stk_0123456789_" + "A" * 43,  # well formed, unknown
    ],
)
@pytest.mark.parametrize("method,path", [("GET", "/events"), ("POST", "/events"), ("POST", "/events/batch")])
def test_401_without_a_valid_token(api: Api, header: str | None, method: str, path: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = requests.request(method, api.service.url(path), headers=headers, data=b"{}", timeout=10)
    error_of(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_401_comes_before_422(api: Api) -> None:
    response = api.post("/events", None, token="stk_wrong", raw=b"not json")
    error_of(response, 401, "unauthorized")


def test_a_token_with_a_changed_secret_is_refused(api: Api) -> None:
    forged = api.writer[:-1] + ("A" if api.writer[-1] != "A" else "B")
    error_of(api.get("/events", token=forged), 401, "unauthorized")


def test_revoked_token(api: Api) -> None:
    from bliss_sampletrack.service.storage import open_storage

    token = issue_token(api.db_url, ["id30"])
    assert api.get("/events", token=token, limit=1).status_code == 200
    with open_storage(api.db_url) as store:
        assert store.revoke_token(token.split("_")[1])
    error_of(api.get("/events", token=token, limit=1), 401, "unauthorized")


# --- POST /events ------------------------------------------------------------------------------
def test_post_event_201_then_replay_200_then_conflict_409(api: Api) -> None:
    event = make_event()
    first = api.post("/events", event)
    assert first.status_code == 201, first.text
    assert first.json() == {"event": event}
    replay = api.post("/events", event)
    assert replay.status_code == 200
    assert replay.json() == first.json()
    # the same JSON value written differently is the same body
    reordered = json.dumps(dict(reversed(list(event.items()))), indent=2).encode()
    assert api.post("/events", None, raw=reordered).status_code == 200
    conflict = api.post("/events", {**event, "message": "changed", "status": "ERROR"})
    error = error_of(conflict, 409, "conflict")
    assert set(error["fields"]) == {"message", "status"}
    history = api.get(f"/samples/{event['sample']['barcode']}/history").json()["events"]
    assert [e["event_id"] for e in history].count(event["event_id"]) == 1


def test_422_names_each_bad_field(api: Api) -> None:
    event = make_event(type="mount", occurred_at="2026-13-01T00:00:00.000000Z", beamline="ID23")
    del event["session"]
    event["extra"] = 1
    error = error_of(api.post("/events", event), 422, "invalid_event")
    assert {"type", "occurred_at", "beamline", "session", "extra"} <= set(error["fields"])


@pytest.mark.parametrize("barcode", ["ERROR", "NOREAD", "noread", "", " BC1", "BC\u00e91"])
def test_no_read_or_malformed_barcode_is_422(api: Api, barcode: str) -> None:
    error = error_of(api.post("/events", make_event(sample={"barcode": barcode})), 422, "invalid_event")
    assert "sample.barcode" in error["fields"]


@pytest.mark.parametrize(
    "raw,code,field",
    [
        (b"not json", "invalid_request", "(body)"),
        (b"\xff\xfe", "invalid_request", "(body)"),
        (b"[" * 100_000, "invalid_request", "(body)"),
        (b'{"a": NaN}', "invalid_request", "(body)"),
        (b"[1, 2]", "invalid_event", "(event)"),
    ],
)
def test_422_for_a_body_that_is_no_event(api: Api, raw: bytes, code: str, field: str) -> None:
    error = error_of(api.post("/events", None, raw=raw), 422, code)
    assert field in error["fields"]


def test_403_for_another_beamline_and_for_read_only_tokens(api: Api) -> None:
    error = error_of(api.post("/events", make_event(beamline="bm07")), 403, "forbidden")
    assert "beamline" in error["fields"]
    error_of(api.post("/events", make_event(), token=api.reader), 403, "forbidden")
    # nothing was stored
    assert api.get("/events", beamline="bm07").json()["events"] == []


def test_422_comes_before_403_and_403_before_409(api: Api) -> None:
    bad_and_foreign = make_event(beamline="bm07", type="nope")
    error_of(api.post("/events", bad_and_foreign), 422, "invalid_event")
    event = make_event(beamline="bm07")
    assert api.post("/events", event, token=api.other).status_code == 201
    # same event_id, different body, but not this token's beamline: 403, not 409
    error_of(api.post("/events", {**event, "message": "x"}), 403, "forbidden")


def test_413_for_an_over_large_body(api: Api) -> None:
    event = make_event(message="x" * (1024 * 1024))
    error_of(api.post("/events", event), 413, "payload_too_large")


# --- POST /events/batch ------------------------------------------------------------------------
def test_batch_results_in_order(api: Api) -> None:
    stored = make_event(beamline="id30")
    assert api.post("/events", stored).status_code == 201
    fresh = make_event(beamline="id30")
    items = [
        fresh,
        stored,  # replay
        {**stored, "message": "changed"},  # conflict
        make_event(sample={"barcode": "NOREAD"}),  # invalid
        make_event(beamline="bm07"),  # not this token's beamline
        {"event_id": 42},  # invalid, event_id not a string
        fresh,  # a replay of the first item of this very batch
        {**fresh, "session": "other"},  # a conflict with it
    ]
    response = api.post("/events/batch", {"events": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 409, 422, 403, 422, 200, 409]
    assert [r["event_id"] for r in results] == [
        fresh["event_id"],
        stored["event_id"],
        stored["event_id"],
        items[3]["event_id"],
        items[4]["event_id"],
        None,
        fresh["event_id"],
        fresh["event_id"],
    ]
    for result in results:
        assert set(result) == {"event_id", "status", "error"}
        if result["status"] in (200, 201):
            assert result["error"] is None
        else:
            assert set(result["error"]) == {"code", "message", "fields"}
    assert results[3]["error"]["fields"].keys() == {"sample.barcode"}
    assert results[2]["error"]["fields"].keys() == {"message"}


def test_large_batch_validated_by_the_worker_processes(api: Api) -> None:
    """From 100 events the service validates in worker processes: the same answers, in order."""
    stored = make_event(beamline="id30")
    assert api.post("/events", stored).status_code == 201
    pattern = [
        lambda i: make_event(beamline="id30", occurred_at=stamp(i, "2026-05-01")),
        lambda i: stored,
        lambda i: {**stored, "message": f"changed {i}"},
        lambda i: make_event(sample={"barcode": "ERROR"}),
        lambda i: make_event(beamline="bm07"),
        lambda i: [i],
    ]
    items = [pattern[i % len(pattern)](i) for i in range(300)]
    response = api.post("/events/batch", {"events": items})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [[201, 200, 409, 422, 403, 422][i % 6] for i in range(300)]
    assert results[3]["error"]["fields"] == {
        "sample.barcode": "'ERROR' is a reader no-read string, never a barcode"
    }
    assert results[5]["error"]["fields"] == {"(event)": "[5] is not of type 'object'"}
    assert [r["event_id"] for r in results[:6:2]] == [
        items[0]["event_id"],
        stored["event_id"],
        items[4]["event_id"],
    ]


@pytest.mark.parametrize(
    "body,field",
    [
        ([], "(body)"),
        ({}, "events"),
        ({"events": {}}, "events"),
        ({"events": [], "more": 1}, "more"),
    ],
)
def test_batch_422_when_the_body_has_the_wrong_shape(api: Api, body: Any, field: str) -> None:
    error = error_of(api.post("/events/batch", body), 422, "invalid_request")
    assert field in error["fields"]


def test_batch_empty_and_too_many(api: Api) -> None:
    response = api.post("/events/batch", {"events": []})
    assert response.status_code == 200
    assert response.json() == {"results": []}
    error_of(api.post("/events/batch", {"events": [{}] * 1001}), 413, "payload_too_large")


def test_batch_of_1000_is_accepted(api: Api) -> None:
    events = unique_beamline_events(1000)
    response = api.post("/events/batch", {"events": events})
    assert response.status_code == 200
    assert {r["status"] for r in response.json()["results"]} == {201}


# --- GET /events -------------------------------------------------------------------------------
def test_list_order_window_and_filters(api: Api) -> None:
    day = "2026-04-0" + str(uuid.uuid4().int % 9 + 1)
    beamline = "id30"
    events = [
        make_event(occurred_at=stamp(m, day), beamline=beamline, sample={"barcode": f"W-{m}"})
        for m in (30, 10, 20, 40)
    ]
    assert api.post("/events/batch", {"events": events}).status_code == 200
    window = api.get("/events", beamline=beamline, since=stamp(10, day), until=stamp(40, day)).json()
    assert [e["occurred_at"] for e in window["events"]] == [stamp(10, day), stamp(20, day), stamp(30, day)]
    assert window["next_cursor"] is None
    # since and until with an offset: 11:10+01:00 is 10:10Z
    offset = api.get(
        "/events", beamline=beamline, since=f"{day}T00:10:00+00:00", until=f"{day}T01:30:00+01:00"
    )
    assert [e["sample"]["barcode"] for e in offset.json()["events"]] == ["W-10", "W-20"]
    by_sample = api.get("/events", sample="W-20").json()["events"]
    assert [e["event_id"] for e in by_sample if e["occurred_at"].startswith(day)] == [events[2]["event_id"]]


def test_list_default_limit_and_cursor_walk(api: Api) -> None:
    beamline = f"page{uuid.uuid4().hex[:6]}"
    token = issue_token(api.db_url, [beamline])
    events = unique_beamline_events(230, beamline=beamline)
    assert api.post("/events/batch", {"events": events}, token=token).status_code == 200
    first = api.get("/events", token=token).json()  # the token's own beamline only
    assert len(first["events"]) == 100
    assert first["next_cursor"]
    seen = []
    cursor = None
    pages = 0
    while True:
        params = {"beamline": beamline, "limit": 64}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/events", **params).json()
        seen += [e["event_id"] for e in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["event_id"] for e in events]
    assert pages == 4


@pytest.mark.parametrize(
    "params,field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-11-24T10:00:00"}, "until"),  # no offset
        ({"since": "2026-11-24T10:00:00 01:00"}, "since"),  # '+' sent unencoded
        ({"beamline": "ID23"}, "beamline"),
        ({"sample": "NOREAD"}, "sample"),
        ({"sample": "ERROR"}, "sample"),
        ({"barcode": "BC1"}, "barcode"),  # unknown parameter
        ({"limit": ["1", "2"]}, "limit"),  # given twice
    ],
)
def test_list_422_for_bad_parameters(api: Api, params: dict[str, Any], field: str) -> None:
    error = error_of(api.get("/events", **params), 422, "invalid_request")
    assert field in error["fields"]


def test_list_scope(api: Api) -> None:
    assert api.post("/events", make_event(beamline="bm07"), token=api.other).status_code == 201
    error_of(api.get("/events", token=api.writer, beamline="bm07"), 403, "forbidden")
    error_of(api.get("/events", token=api.reader_id23, beamline="id30"), 403, "forbidden")
    mine = api.get("/events", token=api.writer, limit=1000).json()["events"]
    assert mine and {e["beamline"] for e in mine} <= {"id23-1", "id30"}
    assert "bm07" in {e["beamline"] for e in api.get("/events", beamline="bm07").json()["events"]}


# --- mounted, history --------------------------------------------------------------------------
def test_mounted_now(api: Api) -> None:
    beamline = f"m{uuid.uuid4().hex[:6]}"
    token = issue_token(api.db_url, [beamline])
    url = f"/beamlines/{beamline}/mounted"
    assert api.get(url).json() == {"mounted": None}
    mount = make_event(beamline=beamline, occurred_at=stamp(10))
    assert api.post("/events", mount, token=token).status_code == 201
    assert api.get(url).json() == {"mounted": mount}
    # a late event with an older occurred_at does not change what is mounted now
    older = make_event(beamline=beamline, type="unmounted", occurred_at=stamp(5))
    assert api.post("/events", older, token=token).status_code == 201
    assert api.get(url).json() == {"mounted": mount}
    unmount = make_event(
        beamline=beamline, type="unmounted", occurred_at=stamp(20), mount_event_id=mount["event_id"]
    )
    assert api.post("/events", unmount, token=token).status_code == 201
    assert api.get(url, token=token).json() == {"mounted": None}
    error_of(api.get(url, token=api.other), 403, "forbidden")
    error_of(api.get("/beamlines/ID23/mounted"), 422, "invalid_request")


def test_history_across_beamlines_and_scope(api: Api) -> None:
    barcode = f"H {uuid.uuid4().hex[:6]}/x"  # a space and a slash: both allowed in a barcode
    events = [
        make_event(beamline="id30", occurred_at=stamp(30), sample={"barcode": barcode}),
        make_event(beamline="bm07", occurred_at=stamp(20), sample={"barcode": barcode}),
        make_event(beamline="id23-1", occurred_at=stamp(10), sample={"barcode": barcode}),
    ]
    assert api.post("/events", events[0]).status_code == 201
    assert api.post("/events", events[1], token=api.other).status_code == 201
    assert api.post("/events", events[2]).status_code == 201
    path = "/samples/" + requests.utils.quote(barcode, safe="") + "/history"
    assert api.get(path).json() == {"events": [events[2], events[1], events[0]]}
    assert api.get(path, token=api.writer).json() == {"events": [events[2], events[0]]}
    assert api.get(path, token=api.reader_id23).json() == {"events": [events[2]]}
    assert api.get("/samples/UNKNOWN-1/history").json() == {"events": []}


@pytest.mark.parametrize("barcode", ["NOREAD", "ERROR", "%20BC"])
def test_history_422_for_no_read(api: Api, barcode: str) -> None:
    error = error_of(api.get(f"/samples/{barcode}/history"), 422, "invalid_request")
    assert "barcode" in error["fields"]


# --- the rest ----------------------------------------------------------------------------------
def test_openapi_document(api: Api) -> None:
    response = requests.get(api.service.url("/openapi.json"), timeout=10)
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.0")
    assert set(document["paths"]) == {
        "/healthz",
        "/events",
        "/events/batch",
        "/beamlines/{beamline}/mounted",
        "/samples/{barcode}/history",
    }
    sample = document["components"]["schemas"]["Event"]["properties"]["sample"]
    assert sample["properties"]["barcode"] == {
        "type": "string",
        "nullable": True,
        "pattern": "^[!-~]([ -~]{0,62}[!-~])?$",
    }


def test_unknown_path_and_method_are_json_errors(api: Api) -> None:
    error_of(requests.get(api.service.url("/nope"), timeout=10), 404, "not_found")
    response = requests.delete(api.service.url("/events"), headers=api.headers(api.writer), timeout=10)
    error_of(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_web_page_is_served_with_a_strict_policy(api: Api) -> None:
    page = requests.get(api.service.url("/ui/"), timeout=10)
    assert page.status_code == 200
    assert '<meta name="sampletrack-api" content="/api/v1">' in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    script = requests.get(api.service.url("/ui/app.js"), timeout=10)
    assert script.status_code == 200
    assert "sessionStorage" in script.text
    assert "innerHTML" not in script.text
    root = requests.get(api.service.base_url.rsplit("/api/v1", 1)[0] + "/", allow_redirects=False, timeout=10)
    assert root.status_code == 302
    assert root.headers["Location"].endswith("/api/v1/ui/")


def test_no_token_in_the_log(api: Api) -> None:
    api.get("/events", limit=1)
    log = api.service.log_text()
    assert "GET /api/v1/events 200" in log
    for token in api.all_tokens():
        secret = token.split("_", 2)[2]
        assert secret not in log


def test_configurable_base_path(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'b.db'}"
    token = issue_token(db_url, ["id30"])
    service = start_service(db_url, tmp_path, "--base-path", "/tracking/v1/")
    try:
        assert service.base_url.endswith("/tracking/v1")
        assert requests.get(service.url("/healthz"), timeout=10).json() == {"status": "ok"}
        event = make_event(beamline="id30")
        response = requests.post(
            service.url("/events"), json=event, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 201
        other = service.base_url.replace("/tracking/v1", "/api/v1/healthz")
        assert requests.get(other, timeout=10).status_code == 404
    finally:
        service.stop()
