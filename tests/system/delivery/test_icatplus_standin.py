"""The ICAT+ stand-in (``bliss_sampletrack/testbed/icatplus_standin.py``): its routes, recording and
faults in-process, and its process killed and restarted on the same port keeping its state.

No BLISS session is used; the system tier's conftest gevent-patches the process (BLISS import), so
the in-process gevent server and ``requests`` share this process.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bliss_sampletrack.testbed import icatplus_standin
from bliss_sampletrack.testbed.icatplus_standin import (
    API_KEY,
    SESSION_ID,
    IcatPlusStandIn,
    StandInControl,
    StandInProcess,
    example_parcels,
    serving,
)

STATUSES = {"READY", "SENT", "BEAMLINE", "BACK_STORES"}
T = 10  # seconds: every request's timeout
PARCELS = example_parcels("123")
P1, P2 = PARCELS[0]["_id"], PARCELS[1]["_id"]
PUCK1 = PARCELS[0]["content"][0]
ITEM1, ITEM_OF_P2 = PUCK1["content"][0], PARCELS[1]["content"][0]["content"][0]


def parcel_route(parcel: str = P1, session: str = SESSION_ID, inv: str = "123") -> str:
    return f"/tracking/{session}/investigation/id/{inv}/parcel/id/{parcel}"


@pytest.fixture
def standin() -> Iterator[tuple[str, IcatPlusStandIn]]:
    app = IcatPlusStandIn(PARCELS, statuses=STATUSES)
    with serving(app) as url:
        yield url, app


def get(url: str, path: str, **params: str) -> requests.Response:
    return requests.get(url + path, params=params, timeout=T)


def put(url: str, path: str, body: Any) -> requests.Response:
    return requests.put(url + path, json=body, timeout=T)


def listed(url: str, parcel: str = P1) -> dict[str, Any]:
    answer = get(url, f"/tracking/{SESSION_ID}/parcel", investigationId="123", parcelId=parcel)
    assert answer.status_code == 200
    (found,) = answer.json()
    return found


def test_example_parcels_look_like_icatplus() -> None:
    assert len(PARCELS) == 2
    for parcel in PARCELS:
        (puck,) = parcel["content"]
        assert puck["type"] == "PUCK" and len(puck["content"]) == 3
        ids = [parcel["_id"], puck["_id"], *(item["_id"] for item in puck["content"])]
        assert all(len(oid) == 24 and int(oid, 16) >= 0 for oid in ids)
        assert [item["sampleContainerPosition"] for item in puck["content"]] == ["1", "2", "3"]
        assert all(isinstance(item["sampleChangerLocation"], int) for item in puck["content"])


def test_routes_answer_parcels_auth_and_404(standin: tuple[str, IcatPlusStandIn]) -> None:
    url, app = standin
    answer = get(url, f"/tracking/{SESSION_ID}/parcel", investigationId="123")
    assert answer.status_code == 200 and [p["_id"] for p in answer.json()] == [P1, P2]
    assert answer.json()[0]["content"][0]["content"][0]["name"] == "LYS-0001"
    assert listed(url, P2)["_id"] == P2
    assert get(url, f"/tracking/{SESSION_ID}/parcel", investigationId="456").json() == []
    denied = get(url, "/tracking/expired/parcel", investigationId="123")
    assert denied.status_code == 403 and denied.json() == {"message": "Session not found or expired"}
    note = "/dataacquisition/{}/notification"
    query = {"instrumentName": "ID23-1", "investigationName": "MX2532"}
    answer = requests.post(url + note.format(API_KEY), params=query, json={"content": "hi"}, timeout=T)
    assert answer.status_code == 200 and answer.json() == {}
    assert requests.post(url + note.format("wrong"), params=query, json={}, timeout=T).status_code == 403
    missing = get(url, "/tracking/x/nothing")
    assert missing.status_code == 404 and "no route" in missing.json()["message"]
    assert requests.delete(url + parcel_route() + "/item/" + ITEM1["_id"], timeout=T).status_code == 404
    recorded = StandInControl(url).requests()
    assert [r["seq"] for r in recorded] == list(range(1, 9))
    assert [r["status"] for r in recorded] == [200, 200, 200, 403, 200, 403, 404, 404]
    assert recorded[4]["query"] == query and recorded[4]["body"] == {"content": "hi"}
    assert recorded == app.requests  # the control routes are not recorded


def test_put_item_changes_the_listing(standin: tuple[str, IcatPlusStandIn]) -> None:
    url, _ = standin
    body = {"name": "LYS-0001", "type": "SAMPLE", "comments": "mounted", "sampleChangerLocation": 5,
            "sampleContainerPosition": "9", "sampleId": 77011}  # fmt: skip
    answer = put(url, parcel_route() + "/item/" + ITEM1["_id"], body)
    assert answer.status_code == 200 and answer.json() == {**body, "_id": ITEM1["_id"], "id": ITEM1["id"]}
    assert listed(url)["content"][0]["content"][0] == answer.json()
    puck = {"name": "puck-1b", "type": "PUCK", "sampleChangerLocation": 2}  # a container keeps its content
    assert put(url, parcel_route() + "/item/" + PUCK1["id"], puck).status_code == 200
    assert listed(url)["content"][0]["content"][1] == PUCK1["content"][1]
    assert listed(url)["content"][0]["name"] == "puck-1b"
    assert put(url, parcel_route() + "/item/" + ITEM_OF_P2["_id"], body).status_code == 404
    assert put(url, parcel_route(inv="456") + "/item/" + ITEM1["_id"], body).status_code == 404
    assert put(url, parcel_route(session="nope") + "/item/" + ITEM1["_id"], body).status_code == 403
    for bad in (None, [body], "text"):
        assert put(url, parcel_route() + "/item/" + ITEM1["_id"], bad).status_code == 400
        assert put(url, parcel_route() + "/parcel/status", bad).status_code == 400
    no_type = put(url, parcel_route() + "/item/" + ITEM1["_id"], {"name": "LYS-0001"})
    assert no_type.status_code == 400 and "type" in no_type.json()["message"]


def test_invalid_item_is_a_400_naming_the_field(standin: tuple[str, IcatPlusStandIn]) -> None:
    url, _ = standin
    if importlib.util.find_spec("icat_plus_client") is not None:  # the BLISS 2.4 stack
        assert icatplus_standin.Item is not None  # validated by icat_plus_client's own model
    body = {"name": "LYS-0001", "type": "SAMPLE", "sampleChangerLocation": "3"}
    answer = put(url, parcel_route() + "/item/" + ITEM1["_id"], body)
    assert answer.status_code == 400
    assert "sampleChangerLocation" in answer.json()["message"] and "valid number" in answer.json()["message"]
    assert listed(url)["content"][0]["content"][0] == ITEM1  # unchanged


def test_status_history_grows(standin: tuple[str, IcatPlusStandIn]) -> None:
    url, _ = standin
    route = parcel_route() + "/parcel/status"
    assert put(url, route, {"status": "SENT"}).status_code == 200
    answer = put(url, route, {"status": "BEAMLINE", "location": "ID23-1"})
    assert answer.status_code == 200
    parcel = listed(url)
    assert parcel == answer.json()
    assert [(s["status"], s.get("location")) for s in parcel["statuses"]] == [
        ("READY", "STORES"), ("SENT", None), ("BEAMLINE", "ID23-1")
    ]  # fmt: skip
    assert parcel["status"] == parcel["currentStatus"] == "BEAMLINE"
    assert all(s["createdAt"].endswith("Z") for s in parcel["statuses"])
    unknown = put(url, route, {"status": "LOST"})
    assert unknown.status_code == 400 and "LOST" in unknown.json()["message"]
    assert put(url, route, {"status": ""}).status_code == 400
    assert put(url, route, {"status": "SENT", "location": 7}).status_code == 400
    assert put(url, parcel_route(parcel="0" * 24) + "/parcel/status", {"status": "SENT"}).status_code == 404
    assert put(url, parcel_route(inv="456") + "/parcel/status", {"status": "SENT"}).status_code == 404
    assert put(url, parcel_route(session="nope") + "/parcel/status", {"status": "SENT"}).status_code == 403
    assert len(listed(url)["statuses"]) == 3


def test_faults_answer_n_times_then_stop(standin: tuple[str, IcatPlusStandIn]) -> None:
    url, _ = standin
    control = StandInControl(url)
    control.fault(503, 2, match="item", retry_after=7)
    item = {"name": "LYS-0001", "type": "SAMPLE"}
    for _ in range(2):
        answer = put(url, parcel_route() + "/item/" + ITEM1["_id"], item)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "7"
        assert answer.json() == {"message": "stand-in fault"}
        assert get(url, f"/tracking/{SESSION_ID}/parcel", investigationId="123").status_code == 200
    assert put(url, parcel_route() + "/item/" + ITEM1["_id"], item).status_code == 200
    assert [r["status"] for r in control.requests()] == [503, 200, 503, 200, 200]

    control.fault(504, 1, hang=0.5)
    started = time.monotonic()
    assert get(url, f"/tracking/{SESSION_ID}/parcel").status_code == 504
    assert time.monotonic() - started >= 0.5
    control.fault(500, 5)
    control.clear_faults()
    assert get(url, f"/tracking/{SESSION_ID}/parcel").status_code == 200


def test_killed_process_restarted_keeps_parcels_and_requests(tmp_path: Path) -> None:
    with StandInProcess(tmp_path, PARCELS, statuses=STATUSES) as proc:
        url, port = proc.url, proc.port
        assert port > 0 and url == f"http://127.0.0.1:{port}"
        assert put(url, parcel_route() + "/parcel/status", {"status": "SENT"}).status_code == 200
        proc.control.fault(503, 1, match="item")
        assert put(url, parcel_route() + "/item/" + ITEM1["_id"], {"name": "X", "type": "SAMPLE"}).ok is False
        before = proc.control.requests()
        proc.kill()
        assert not proc.alive
        with pytest.raises(requests.ConnectionError):
            get(url, f"/tracking/{SESSION_ID}/parcel")
        proc.restart()
        assert (proc.url, proc.port) == (url, port)
        assert proc.control.requests() == before
        assert [s["status"] for s in listed(url)["statuses"]] == ["READY", "SENT"]
        assert put(
            url, parcel_route() + "/item/" + ITEM1["_id"], {"name": "X", "type": "SAMPLE"}
        ).ok  # no fault
        after = proc.control.requests()
        assert after[: len(before)] == before
        assert [(r["seq"], r["status"]) for r in after[len(before) :]] == [(3, 200), (4, 200)]
        assert proc.control.parcels()[0]["content"][0]["content"][0]["name"] == "X"
    assert proc.process is not None and proc.process.returncode == 0  # SIGTERM: a clean stop
