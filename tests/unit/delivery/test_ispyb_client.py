"""The ISPyB RobotAction delivery client against a recording HTTP server on loopback.

The server (``tests/helpers/ispyb_fixtures.py``: a gevent WSGI server, the test process is
gevent-patched as in a BLISS session) answers like the ISPyB core REST API that mx-bluesky's
``ExpeyeInteraction`` calls: ``POST /proposals/{p}/sessions/{n}/robot-actions`` creates a robot
action and answers it with its ``robotActionId``, ``PATCH /robot-actions/{id}`` updates it (404
for an unknown id), 401 without the bearer token; it keeps the rows it stored, records every
request (method, path, headers, JSON body) and can be scripted to answer anything else, or to
hang. (Through the real outbox in the test bed's Redis: tests/system/delivery/
test_ispyb_outbox.py.)
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from http_scripts import Answer, Recorded, serving
from ispyb_fixtures import (
    TOKEN,
    WHERE,
    IspybRecorder,
    entry,
    make_client,
    mounted,
    unmounted,
)
from tls_fixtures import Pki, make_pki

from bliss_sampletrack.core import Sample, Status
from bliss_sampletrack.delivery.clients import DeliveryClient, Result, RetryLater, Verdict, client_from_config
from bliss_sampletrack.delivery.ispyb import IspybClient
from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.testbed.beacon import free_port

REPO = Path(__file__).resolve().parents[3]

pytest_plugins = ["ispyb_fixtures"]
pytestmark = pytest.mark.usefixtures("token_env")

CREATE = "/api/proposals/mx2532/sessions/1/robot-actions"


# -- what is sent ---------------------------------------------------------------------------------


def test_successful_mount_is_a_load_created_then_ended(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    client = make_client(url)

    assert client.send([mounted()]) == [
        Result(Verdict.DELIVERED, "robot action 1001 created (201); ended SUCCESS (200)")
    ]

    create, end = recorder.requests
    assert (create.method, create.path) == ("POST", CREATE)
    assert (end.method, end.path) == ("PATCH", "/api/robot-actions/1001")
    for request in (create, end):
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"].startswith("bliss-sampletrack/")
    # the changer address 3:05 is MXCuBE's loc: dewarLocation 3 (puck), containerLocation 5
    assert create.body == {
        "startTimestamp": "2026-11-24 12:30:05",
        "actionType": "LOAD",
        "sampleId": 5289780,
        "containerLocation": 5,
        "dewarLocation": 3,
    }
    assert end.body == {
        "endTimestamp": "2026-11-24 12:30:05",
        "status": "SUCCESS",
        "message": "",
        "sampleBarcode": "LYS-0042",
    }
    assert recorder.rows[1001] == {"robotActionId": 1001, "visit": "mx2532-1", **create.body, **end.body}


def test_failed_unmount_is_an_unload_in_error_with_its_message(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    client = make_client(url)
    sample = Sample(barcode="XTAL-9", sample_id="²")  # no changer; not an ISPyB id (not ASCII digits)
    event = unmounted(sample, status=Status.ERROR, message="gripper lost the pin " + "x" * 300)

    [result] = client.send([event])

    assert result == Result(Verdict.DELIVERED, "robot action 1001 created (201); ended ERROR (200)")
    create, end = recorder.requests
    # unknown values are left out, not sent as null
    assert create.body == {"startTimestamp": "2026-11-24 12:30:05", "actionType": "UNLOAD"}
    assert end.body == {
        "endTimestamp": "2026-11-24 12:30:05",
        "status": "ERROR",
        "message": ("gripper lost the pin " + "x" * 300)[:255],  # ISPyB's varchar(255)
        "sampleBarcode": "XTAL-9",
    }
    assert len(end.body["message"]) == 255


def test_failed_mount_and_successful_unmount(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    client = make_client(url)

    results = client.send([mounted(status=Status.ERROR, message="no pin detected")])
    results += client.send([unmounted()])

    assert [r.verdict for r in results] == [Verdict.DELIVERED, Verdict.DELIVERED]
    assert [(r.body.get("actionType"), r.body.get("status")) for r in recorder.requests] == [
        ("LOAD", None),
        (None, "ERROR"),
        ("UNLOAD", None),
        (None, "SUCCESS"),
    ]
    assert recorder.rows[1001]["message"] == "no pin detected"
    assert recorder.rows[1002]["actionType"] == "UNLOAD" and recorder.rows[1002]["status"] == "SUCCESS"


def test_location_sources(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    make_client(url, container_location="container_position").send([mounted()])
    make_client(url, dewar_location="none", container_location="none").send([mounted()])
    make_client(url).send([mounted(Sample(barcode="B-1", changer_name="flex", changer_position="door"))])
    creates = [r.body for r in recorder.requests if r.method == "POST"]
    assert (creates[0]["dewarLocation"], creates[0]["containerLocation"]) == (3, 7)  # position in puck-7
    assert "dewarLocation" not in creates[1] and "containerLocation" not in creates[1]
    assert "dewarLocation" not in creates[2] and "containerLocation" not in creates[2]  # not P:S


def test_times_are_written_in_the_configured_zone_or_local_time(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    make_client(url, timezone="Europe/Paris").send([mounted()])  # CET in November: UTC+1
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        entry_local = entry(url)
        del entry_local["timezone"]  # default: local time, as MXCuBE's time.strftime
        IspybClient.from_config(entry_local, WHERE).send([mounted()])
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()
    stamps = [r.body.get("startTimestamp") or r.body["endTimestamp"] for r in recorder.requests]
    assert stamps == ["2026-11-24 13:30:05"] * 2 + ["2026-11-24 07:30:05"] * 2


# -- checked before sending -----------------------------------------------------------------------


def test_event_of_another_proposal_is_a_dead_letter_without_a_request(
    ispyb: tuple[str, IspybRecorder],
) -> None:
    url, recorder = ispyb
    client = make_client(url)

    [result] = client.send([mounted(proposal="mx9999")])

    assert result.verdict is Verdict.REJECTED
    assert "event of proposal 'mx9999'" in result.detail and "visit 'mx2532-1'" in result.detail
    assert recorder.requests == []
    # the same proposal in other case, no proposal at all, or the check off: recorded
    client.send([mounted(proposal="MX2532"), unmounted(proposal=None)])
    make_client(url, check_proposal=False).send([mounted(proposal="mx9999")])
    assert [r.method for r in recorder.requests] == ["POST", "PATCH"] * 3


def test_barcode_longer_than_ispyb_allows_is_a_dead_letter(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    [result] = make_client(url).send([mounted(Sample(barcode="B" * 46))])
    assert result.verdict is Verdict.REJECTED
    assert "longer than ISPyB's 45 characters" in result.detail
    assert recorder.requests == []
    assert make_client(url).send([mounted(Sample(barcode="B" * 45))])[0].verdict is Verdict.DELIVERED


# -- verdicts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_dead_letters_with_the_answer(
    ispyb: tuple[str, IspybRecorder], status: int
) -> None:
    url, recorder = ispyb
    recorder.answers = [(status, {}, {"detail": f"ISPyB says no ({status})"})]

    [result] = make_client(url).send([mounted()])

    assert result == Result(
        Verdict.REJECTED, f'robot action create refused: {status} {{"detail": "ISPyB says no ({status})"}}'
    )
    assert len(recorder.requests) == 1


def test_a_wrong_token_is_refused_by_the_server_and_dead_letters(ispyb: tuple[str, IspybRecorder]) -> None:
    url, _ = ispyb
    [result] = make_client(url, token="an0ther-t0ken-value").send([mounted()])
    assert result == Result(
        Verdict.REJECTED, 'robot action create refused: 401 {"detail": "Not authenticated"}'
    )


@pytest.mark.parametrize(
    ("status", "retry_after"), [(500, None), (502, None), (503, 30.0), (429, 2.0), (408, None)]
)
def test_server_errors_and_throttling_are_retried(
    ispyb: tuple[str, IspybRecorder], status: int, retry_after: float | None
) -> None:
    url, recorder = ispyb
    extra = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    recorder.answers = [(status, extra, "busy")]

    with pytest.raises(RetryLater) as failure:
        make_client(url).send([mounted()])

    assert str(failure.value) == f"robot action create: {status} busy"
    assert failure.value.retry_after == retry_after
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("status", [301, 307])
def test_redirect_is_not_followed(ispyb: tuple[str, IspybRecorder], status: int) -> None:
    url, recorder = ispyb
    recorder.answers = [(status, {"Location": "https://elsewhere/api/robot-actions"}, "")]

    [result] = make_client(url).send([mounted()])

    assert result.verdict is Verdict.REJECTED
    assert f"{status}" in result.detail and "check key 'url'" in result.detail
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        (200, {}, "<html><body>Please log in</body></html>"),
        (201, {}, {}),
        (201, {}, {"robotActionId": "1001"}),
        (201, {}, {"robotActionId": True}),
        (201, {}, {"robotActionId": 0}),
        (200, {}, [1001]),
        (202, {}, ""),
    ],
)
def test_a_create_answered_without_a_robot_action_id_is_never_a_success(
    ispyb: tuple[str, IspybRecorder], answer: Answer
) -> None:
    url, recorder = ispyb
    recorder.answers = [answer]

    with pytest.raises(RetryLater) as failure:
        make_client(url).send([mounted()])

    assert "without an integer robotActionId" in str(failure.value)
    assert "is key 'url' the ISPyB REST API?" in str(failure.value)
    assert [r.method for r in recorder.requests] == ["POST"]  # no update of an unknown action


@pytest.mark.parametrize(
    "answer",
    [(200, {}, "OK"), (200, {}, "<html>proxy</html>"), (200, {}, {"robotActionId": 999}), (200, {}, [])],
)
def test_an_update_answered_with_garbage_is_retried_alone(
    ispyb: tuple[str, IspybRecorder], answer: Answer
) -> None:
    url, recorder = ispyb
    client = make_client(url)
    event = mounted()
    recorder.answers = [None, answer]

    with pytest.raises(RetryLater) as failure:
        client.send([event])
    assert str(failure.value).startswith(
        "robot action 1001 created (201), but its end update was answered 200"
    )
    assert "(will retry the update only)" in str(failure.value)

    [result] = client.send([event])  # the loop retries the same event: the update only
    assert result == Result(Verdict.DELIVERED, "robot action 1001 created before; ended SUCCESS (200)")
    assert [(r.method, r.path) for r in recorder.requests] == [
        ("POST", CREATE),
        ("PATCH", "/api/robot-actions/1001"),
        ("PATCH", "/api/robot-actions/1001"),
    ]
    assert len(recorder.rows) == 1 and recorder.rows[1001]["status"] == "SUCCESS"


def test_update_retry_and_refusal(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    client = make_client(url)
    event = mounted()
    recorder.answers = [None, (503, {"Retry-After": "7"}, "maintenance"), (422, {}, {"detail": "bad status"})]

    with pytest.raises(RetryLater) as failure:
        client.send([event])
    assert failure.value.retry_after == 7.0
    assert str(failure.value) == (
        "robot action 1001 created (201), but its end update: 503 maintenance (will retry the update only)"
    )
    [result] = client.send([event])
    assert result == Result(
        Verdict.REJECTED,
        'robot action 1001 created before, but its end update was refused: 422 {"detail": "bad status"}',
    )
    assert [r.method for r in recorder.requests] == ["POST", "PATCH", "PATCH"]


def test_an_update_answered_204_without_a_body_is_delivered(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    recorder.answers = [None, (204, {}, "")]
    [result] = make_client(url).send([mounted()])
    assert result == Result(Verdict.DELIVERED, "robot action 1001 created (201); ended SUCCESS (204)")


def test_connection_refused_is_retried() -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}/api")

    with pytest.raises(RetryLater) as failure:
        client.send([mounted()])

    assert str(failure.value).startswith(
        f"robot action create: POST {client.url}/proposals/mx2532/sessions/1/"
    )
    assert "ConnectionError" in str(failure.value)
    assert failure.value.__context__ is None and failure.value.__cause__ is None


def test_hung_server_is_retried_after_the_timeout(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    recorder.hang = 5.0  # far longer than the timeout: an answer would make it DELIVERED
    client = make_client(url, timeout=0.3)

    with pytest.raises(RetryLater) as failure:
        client.send([mounted()])

    assert "no answer within 0.3 s" in str(failure.value)
    assert [r.method for r in recorder.requests] == ["POST"]


def test_batch_stops_at_a_retryable_failure(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    client = make_client(url)
    recorder.answers = [None, None, (502, {}, "bad gateway")]

    results = client.send([mounted(), unmounted(), mounted()])

    assert [r.verdict for r in results] == [Verdict.DELIVERED, Verdict.RETRY, Verdict.RETRY]
    assert results[1].detail == "robot action create: 502 bad gateway"
    assert len(recorder.requests) == 3


# -- secrets and TLS ------------------------------------------------------------------------------


def test_token_never_in_logs_exceptions_details_repr_or_describe(
    ispyb: tuple[str, IspybRecorder], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 logs every request line at DEBUG
    url, recorder = ispyb
    client = make_client(url, timeout=0.3)
    texts = [client.describe(), repr(client)]

    def echo(request: Recorded) -> str:  # a server that echoes the request headers in its error
        return f"bad request, headers were {request.headers}"

    recorder.answers = [(400, {}, echo), None, (500, {}, echo), None, (422, {}, echo)]
    texts += [r.detail for r in client.send([mounted()])]  # create refused
    with pytest.raises(RetryLater) as failure:  # update failed
        client.send([mounted()])
    texts.append(str(failure.value))
    texts += [r.detail for r in client.send([mounted()])]  # update refused
    texts += [r.detail for r in client.send([mounted()])]  # delivered
    recorder.hang = 2.0
    for target in (client, make_client(f"http://127.0.0.1:{free_port()}/api")):
        with pytest.raises(RetryLater) as failure:
            target.send([mounted()])
        texts.append(str(failure.value))

    assert any("'Authorization': 'Bearer ***'" in text for text in texts)  # echoed, redacted
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # the DEBUG lines were captured
    assert any(r.name == "bliss_sampletrack.delivery.ispyb" for r in caplog.records)
    for text in [*texts, caplog.text, *(r.getMessage() for r in caplog.records)]:
        assert TOKEN not in text
    assert "token from $ISPYB_TOKEN" in texts[0]


def test_verification_is_on_by_default(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pki: Pki = make_pki(tmp_path_factory.mktemp("pki"))
    recorder = IspybRecorder()
    with serving(recorder, certfile=str(pki.cert), keyfile=str(pki.key)) as base:
        url = f"{base}/api"
        with pytest.raises(RetryLater) as failure:
            make_client(url).send([mounted()])
        assert "TLS certificate verification failed" in str(failure.value)
        assert recorder.requests == []  # the token never went to the untrusted server
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.endswith(".tls")]

        [result] = make_client(url, verify_tls=str(pki.ca)).send([mounted()])
        assert result.verdict is Verdict.DELIVERED
        assert [r.method for r in recorder.requests] == ["POST", "PATCH"]

        caplog.clear()
        [result] = make_client(url, verify_tls=False).send([mounted()])
        assert result.verdict is Verdict.DELIVERED
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        text = warning.getMessage()
        assert "delivery client 'ispyb'" in text and url in text and "verification is OFF" in text
        assert TOKEN not in str(failure.value) + caplog.text


# -- configuration --------------------------------------------------------------------------------


def test_protocol_describe_and_direct_construction(ispyb: tuple[str, IspybRecorder]) -> None:
    url, recorder = ispyb
    client = make_client(url)
    assert isinstance(client, DeliveryClient)
    assert (client.name, client.max_batch) == ("ispyb", 1)
    assert client.describe() == (
        f"ispyb: ISPyB robot actions {url}, visit mx2532-1 (token from $ISPYB_TOKEN; times in UTC)"
    )
    assert repr(client) == f"IspybClient(name='ispyb', url='{url}', visit='mx2532-1')"
    direct = IspybClient("lims", url + "/", TOKEN, visit="ih-mx1234-12", timezone="UTC", check_proposal=False)
    assert (direct.url, direct.proposal, direct.visit_number) == (url, "ih-mx1234", 12)
    direct.send([mounted()])
    assert recorder.requests[0].path == "/api/proposals/ih-mx1234/sessions/12/robot-actions"


def test_token_from_another_variable_or_the_yaml(
    ispyb: tuple[str, IspybRecorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder = ispyb
    monkeypatch.setenv("ID23_ISPYB_TOKEN", "an0ther-t0ken-value")
    make_client(url, token_env="ID23_ISPYB_TOKEN").send([mounted()])
    make_client(url, token=TOKEN).send([mounted()])
    assert [r.headers["Authorization"] for r in recorder.requests] == [
        "Bearer an0ther-t0ken-value",  # refused by this server (401): not its token
        f"Bearer {TOKEN}",
        f"Bearer {TOKEN}",
    ]
    assert "token from key 'token' of the YAML" in make_client(url, token=TOKEN).describe()


def test_registered_type_ispyb_builds_the_client(ispyb: tuple[str, IspybRecorder]) -> None:
    """Through clients.client_from_config, as the tracker's ``delivery`` list is read."""
    url, _ = ispyb
    client = client_from_config(entry(url), WHERE)
    assert isinstance(client, IspybClient)
    assert client.send([mounted()])[0].verdict is Verdict.DELIVERED


@pytest.mark.parametrize(
    ("extra", "env", "expected"),
    [
        ({"url": None}, {}, "key 'url' is missing"),
        ({"url": "ispyb.example.org/api"}, {}, "key 'url' must start with http:// or https://"),
        ({}, {"ISPYB_TOKEN": None}, "no token: set the environment variable ISPYB_TOKEN"),
        ({"token_env": "NOPE_TOKEN"}, {}, "set the environment variable NOPE_TOKEN"),
        ({"token": "short"}, {}, "does not look like one"),
        ({"visit": None}, {}, "key 'visit' is missing"),
        ({"visit": "mx2532"}, {}, "key 'visit' must be the ISPyB visit <proposal>-<visit number>"),
        ({"visit": 12}, {}, "key 'visit' must be the ISPyB visit"),
        ({"timeout": 0}, {}, "key 'timeout' must be a number of seconds > 0"),
        ({"timeout": "10"}, {}, "key 'timeout' must be a number of seconds > 0"),
        ({"timezone": "Mars/Olympus"}, {}, "key 'timezone' 'Mars/Olympus' is not a time zone"),
        ({"timezone": 1}, {}, "key 'timezone' must be text"),
        ({"timezone": "Europe"}, {}, "key 'timezone' 'Europe' is not a time zone"),
        ({"dewar_location": "puck"}, {}, "key 'dewar_location' must be one of changer_position, none"),
        (
            {"container_location": "x"},
            {},
            "key 'container_location' must be one of changer_position, container",
        ),
        ({"check_proposal": "yes"}, {}, "key 'check_proposal' must be true or false"),
        (
            {"verify_tls": "/nonexistent/ca.pem"},
            {},
            "key 'verify_tls': CA bundle '/nonexistent/ca.pem' does not",
        ),
        ({"api_key": "x"}, {}, "key 'api_key' is not a known key"),
        ({"type": "rest"}, {}, "key 'type' must be ispyb here"),
    ],
)
def test_configuration_errors_name_the_key_and_where(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], env: dict[str, str | None], expected: str
) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    node = {k: v for k, v in entry("https://ispyb.example.org/api", **extra).items() if v is not None}

    with pytest.raises(ConfigurationError) as failure:
        IspybClient.from_config(node, WHERE)

    message = str(failure.value)
    assert expected in message, message
    assert message.startswith(f"{WHERE}: delivery 'ispyb': ")
    assert TOKEN not in message


def test_the_config_example_is_valid_and_shows_every_key_with_its_default() -> None:
    from ruamel.yaml import YAML  # BLISS's own YAML library

    from bliss_sampletrack.delivery.ispyb import TOP_KEYS

    example = REPO / "config_examples" / "delivery" / "ispyb.yml"
    [tracker] = YAML(typ="safe").load(example.read_text())
    [node] = tracker["delivery"]
    assert set(node) == TOP_KEYS - {"token"}  # token: commented out (token_env is the way)
    client = IspybClient.from_config(node, example.name)
    default = IspybClient("ispyb", node["url"], TOKEN, visit=node["visit"])
    for attribute in ("timeout", "timezone", "dewar_location", "container_location", "check_proposal"):
        assert getattr(client, attribute) == getattr(default, attribute), attribute
    assert client._verify is True
