"""The ICAT+ delivery client against a recording HTTP server on loopback.

The server is a gevent WSGI server (the test process is gevent-patched as by BLISS, so a thread-based
server would not work): it records method, path, query, headers and JSON body of every request and
answers from a script. The same tests run on both stacks (pyicat-plus 0.1.10 and 3.1.0); one of
them checks that the client's request has the shape the installed pyicat-plus gives it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from http_scripts import Answer, Recorded, ScriptedServer, serving

from bliss_sampletrack.core import Event, Sample, Source, Status
from bliss_sampletrack.delivery.clients import (
    DeliveryClient,
    Result,
    RetryLater,
    Verdict,
    client_from_config,
)
from bliss_sampletrack.delivery.icatplus import IcatPlusClient, notification_text
from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.testbed.beacon import free_port

API_KEY = "k3y-0f-th3-b34mlin3-5ecret"
SESSION_ID = "s3ss10n-5ecret-1234"
WHERE = "'tracker' in sampletrack.yml, key 'delivery'"
T0 = datetime(2026, 11, 24, 12, 30, 5, tzinfo=UTC)

FULL_SAMPLE = Sample(
    barcode="LYS-0042",
    name="lysozyme-3",
    sample_id="77001",
    parcel_id="64f0c2a9e4b0aa11bb22cc33",
    parcel_name="Dewar-MX2532",
    container_id="c-981",
    container_name="puck-7",
    container_position="5",
    changer_name="flex",
    changer_position="3:05",
)


class IcatRecorder(ScriptedServer):
    """Records every request; answers from ``answers`` (then 200 with the stored logbook event)."""

    text_type = "application/json"  # as ICAT+ labels even its text answers

    def default(self, request: Recorded) -> Answer:
        # ICAT+'s answer to a notification: the stored logbook event (pyicat-plus 3 parses it)
        stored = {"_id": uuid.uuid4().hex[:24], **request.body} if request.method == "POST" else "OK"
        return 200, {}, stored


@pytest.fixture
def icat() -> Iterator[tuple[str, IcatRecorder]]:
    recorder = IcatRecorder()
    with serving(recorder) as url:
        yield url, recorder


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICATPLUS_API_KEY", API_KEY)
    monkeypatch.setenv("ICATPLUS_SESSION_ID", SESSION_ID)


def make_client(url: str, **entry: Any) -> IcatPlusClient:
    node = {"name": "icat", "type": "icatplus", "url": url, "timeout": 5, **entry}
    client = client_from_config(node, WHERE)
    assert isinstance(client, IcatPlusClient)
    return client


def mounted(sample: Sample = FULL_SAMPLE, **kwargs: Any) -> Event:
    values = {"beamline": "id23-1", "session": "mx", "source": Source.BARCODE_READER, "occurred_at": T0}
    return Event.mounted(sample, **{"proposal": "mx2532", **values, **kwargs})


def unmounted(sample: Sample = FULL_SAMPLE, **kwargs: Any) -> Event:
    values = {"beamline": "id23-1", "session": "mx", "source": Source.SAMPLE_CHANGER, "occurred_at": T0}
    return Event.unmounted(sample, **{**values, **kwargs})


PARCEL = {"investigation_id": 1234567}


# -- what is sent ---------------------------------------------------------------------------------


def test_mounted_event_is_a_notification_with_the_sample_fields_and_tags(
    icat: tuple[str, IcatRecorder],
) -> None:
    url, recorder = icat
    client = make_client(url)
    event = mounted()

    assert client.send([event]) == [Result(Verdict.DELIVERED, "e-logbook notification 200")]

    [request] = recorder.requests
    assert request.method == "POST"
    assert request.path == f"/dataacquisition/{API_KEY}/notification"
    assert request.query == {"instrumentName": "id23-1", "investigationName": "mx2532"}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("bliss-sampletrack/")
    assert "Authorization" not in request.headers  # ICAT+ takes the key in the path only
    body = request.body
    assert set(body) == {"type", "category", "content", "machine", "software", "tag", "creationDate"}
    assert body["type"] == "notification"
    assert body["category"] == "info"
    assert body["tag"] == [{"name": "sampletrack"}, {"name": "mounted"}, {"name": "LYS-0042"}]
    assert body["creationDate"] == "2026-11-24T12:30:05+00:00"  # when it happened, not when sent
    assert body["machine"] == event.producer.host
    assert body["software"] == f"bliss-sampletrack_v{event.producer.version}"
    [content] = body["content"]
    assert content["format"] == "plainText"
    line, event_line = content["text"].split("\n")
    assert line == (
        "Sample mounted: lysozyme-3 (LYS-0042); barcode LYS-0042; name lysozyme-3; sample id 77001; "
        "parcel Dewar-MX2532 (id 64f0c2a9e4b0aa11bb22cc33); container puck-7 (id c-981), position 5; "
        "sample changer flex, position 3:05; proposal mx2532"
    )
    assert event_line == f"sampletrack event {event.event_id} (barcode_reader, session mx)"
    assert content["text"] == notification_text(event)


def test_unmounted_event_without_proposal_goes_to_the_beamline_logbook(
    icat: tuple[str, IcatRecorder],
) -> None:
    url, recorder = icat
    client = make_client(url, tags=["mx", "sampletrack"])
    event = unmounted(Sample(name="crystal-9"), message="changer unload")

    [result] = client.send([event])

    assert result.verdict is Verdict.DELIVERED
    [request] = recorder.requests
    assert request.query == {"instrumentName": "id23-1"}  # no investigationName: beamline logbook
    assert request.body["category"] == "info"
    # no barcode tag (none known); the extra tags, each once
    assert request.body["tag"] == [{"name": "sampletrack"}, {"name": "unmounted"}, {"name": "mx"}]
    text = request.body["content"][0]["text"]
    assert text.startswith("Sample unmounted: crystal-9; name crystal-9 -- changer unload\n")


def test_failed_mount_is_an_error_notification(icat: tuple[str, IcatRecorder]) -> None:
    url, recorder = icat
    client = make_client(url, parcel_status=PARCEL)
    event = mounted(status=Status.ERROR, message="gripper lost the pin")

    [result] = client.send([event])

    assert result.verdict is Verdict.DELIVERED
    [request] = recorder.requests  # no parcel update for a mount that failed
    assert request.body["category"] == "error"
    assert {"name": "error"} in request.body["tag"]
    assert request.body["content"][0]["text"].startswith("Sample mount FAILED: lysozyme-3 (LYS-0042);")
    assert "-- gripper lost the pin\n" in request.body["content"][0]["text"]


def test_same_request_shape_as_the_installed_pyicat_plus(icat: tuple[str, IcatRecorder]) -> None:
    """The client posts itself, but what pyicat-plus's send_message would post (either version)."""
    from pyicat_plus.client.main import IcatClient

    url, recorder = icat
    event = mounted()
    client = make_client(url)
    client.send([event])
    ours = recorder.requests.pop()

    reference = IcatClient(elogbook_url=url, elogbook_token=API_KEY, elogbook_timeout=5)
    tags = [tag["name"] for tag in ours.body["tag"]]
    reference.send_message(
        notification_text(event), msg_type="info", beamline="id23-1", proposal="mx2532", tags=tags
    )
    theirs = recorder.requests.pop()

    assert (ours.method, ours.path, ours.query) == (theirs.method, theirs.path, theirs.query)
    assert set(ours.body) == set(theirs.body)
    for key in ("type", "category", "content", "tag"):
        assert ours.body[key] == theirs.body[key], key


# -- parcel status --------------------------------------------------------------------------------


def test_parcel_status_on_mount(icat: tuple[str, IcatRecorder]) -> None:
    url, recorder = icat
    client = make_client(url, parcel_status=PARCEL)

    [result] = client.send([mounted()])

    assert result == Result(
        Verdict.DELIVERED,
        "e-logbook notification 200; parcel 64f0c2a9e4b0aa11bb22cc33 status update 200 (BEAMLINE)",
    )
    notification, parcel = recorder.requests
    assert notification.method == "POST"
    assert parcel.method == "PUT"
    assert parcel.path == (
        f"/tracking/{SESSION_ID}/investigation/id/1234567/parcel/id/64f0c2a9e4b0aa11bb22cc33/parcel/status"
    )
    assert parcel.query == {}
    assert parcel.headers["Content-Type"] == "application/json"
    assert parcel.body == {"status": "BEAMLINE", "location": "id23-1"}


def test_parcel_status_on_unmount_when_configured(icat: tuple[str, IcatRecorder]) -> None:
    url, recorder = icat
    client = make_client(url, parcel_status=PARCEL)
    client.send([unmounted()])
    assert [r.method for r in recorder.requests] == ["POST"]  # default: no update on unmount

    recorder.requests.clear()
    config = {
        **PARCEL,
        "status_mounted": "BEAMLINE",
        "status_unmounted": "BACK_STORES",
        "location": "{beamline} {sample_changer} {position}",
    }
    client = make_client(url, parcel_status=config)
    client.send([unmounted()])
    _, parcel = recorder.requests
    assert parcel.body == {"status": "BACK_STORES", "location": "id23-1 flex 3:05"}


def test_no_parcel_update_without_parcel_id_or_when_disabled(icat: tuple[str, IcatRecorder]) -> None:
    url, recorder = icat
    make_client(url, parcel_status=PARCEL).send([mounted(Sample(barcode="NO-PARCEL-1"))])
    make_client(url, parcel_status={**PARCEL, "enabled": False}).send([mounted()])
    make_client(url).send([mounted()])
    assert [r.method for r in recorder.requests] == ["POST", "POST", "POST"]


def test_parcel_update_retry_does_not_repeat_the_notification(icat: tuple[str, IcatRecorder]) -> None:
    url, recorder = icat
    client = make_client(url, parcel_status=PARCEL)
    event = mounted()
    recorder.answers = [(200, {}, {"_id": "e1"}), (503, {"Retry-After": "7"}, "maintenance")]

    with pytest.raises(RetryLater) as failure:
        client.send([event])
    assert failure.value.retry_after == 7.0
    assert "notification 200, but the parcel" in str(failure.value)
    assert "503 maintenance" in str(failure.value)

    [result] = client.send([event])  # the loop retries the same event
    assert result.verdict is Verdict.DELIVERED
    assert result.detail.startswith("e-logbook notification delivered before; parcel")
    assert [r.method for r in recorder.requests] == ["POST", "PUT", "PUT"]


def test_refused_parcel_update_is_a_dead_letter_saying_the_notification_went(
    icat: tuple[str, IcatRecorder],
) -> None:
    url, recorder = icat
    client = make_client(url, parcel_status=PARCEL)
    recorder.answers = [(200, {}, {"_id": "e1"}), (403, {}, "not a participant")]

    [result] = client.send([mounted()])

    assert result.verdict is Verdict.REJECTED
    assert "e-logbook notification 200, but the parcel" in result.detail
    assert result.detail.endswith("was refused: 403 not a participant")


# -- verdicts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_dead_letters_with_the_answer(icat: tuple[str, IcatRecorder], status: int) -> None:
    url, recorder = icat
    recorder.answers = [(status, {}, f"ICAT+ says no ({status})")]

    [result] = make_client(url).send([mounted()])

    assert result == Result(
        Verdict.REJECTED, f"e-logbook notification refused: {status} ICAT+ says no ({status})"
    )


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, 30.0), (429, 2.0)])
def test_server_errors_and_throttling_are_retried(
    icat: tuple[str, IcatRecorder], status: int, retry_after: float | None
) -> None:
    url, recorder = icat
    extra = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    recorder.answers = [(status, extra, "busy")]

    with pytest.raises(RetryLater) as failure:
        make_client(url).send([mounted()])

    assert str(failure.value) == f"e-logbook notification: {status} busy"
    assert failure.value.retry_after == retry_after


def test_redirect_is_not_followed(icat: tuple[str, IcatRecorder]) -> None:
    url, recorder = icat
    recorder.answers = [(301, {"Location": f"https://elsewhere/dataacquisition/{API_KEY}/notification"}, "")]

    [result] = make_client(url).send([mounted()])

    assert result.verdict is Verdict.REJECTED
    assert "301" in result.detail and "check key 'url'" in result.detail
    assert API_KEY not in result.detail
    assert len(recorder.requests) == 1


def test_connection_refused_is_retried() -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}")

    with pytest.raises(RetryLater) as failure:
        client.send([mounted()])

    assert "ConnectionError" in str(failure.value)
    assert failure.value.__context__ is None and failure.value.__cause__ is None


def test_hung_server_is_retried_after_the_timeout(icat: tuple[str, IcatRecorder]) -> None:
    url, recorder = icat
    recorder.hang = 3.0
    client = make_client(url, timeout=0.3)

    start = time.monotonic()
    with pytest.raises(RetryLater) as failure:
        client.send([mounted()])
    elapsed = time.monotonic() - start

    assert 0.3 <= elapsed < 2.5
    assert "no answer within 0.3 s" in str(failure.value)


def test_batch_stops_at_a_retryable_failure(icat: tuple[str, IcatRecorder]) -> None:
    url, recorder = icat
    client = make_client(url)
    first, second, third = mounted(), unmounted(), mounted()
    recorder.answers = [(200, {}, {}), (502, {}, "bad gateway")]

    results = client.send([first, second, third])

    assert [r.verdict for r in results] == [Verdict.DELIVERED, Verdict.RETRY, Verdict.RETRY]
    assert results[1].detail == "e-logbook notification: 502 bad gateway"
    assert len(recorder.requests) == 2


# -- secrets --------------------------------------------------------------------------------------


def test_secrets_never_in_describe_logs_exceptions_or_details(
    icat: tuple[str, IcatRecorder], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 logs request URLs (the key is in the path) at DEBUG
    url, recorder = icat
    client = make_client(url, timeout=0.3, parcel_status=PARCEL)
    texts = [client.describe()]

    def echo(request: Recorded) -> str:  # as Express answers an unknown route: the path, key included
        return f"Cannot {request.method} {request.path}"

    recorder.answers = [(200, {}, {}), (404, {}, echo), (404, {}, echo), (500, {}, echo)]
    texts += [r.detail for r in client.send([mounted()])]  # parcel update refused (echoes session id)
    texts += [r.detail for r in client.send([mounted()])]  # notification refused (echoes key)
    for attempt in ("500", "hang", "refused"):
        if attempt == "hang":
            recorder.hang = 2.0
        if attempt == "refused":
            client = make_client(f"http://127.0.0.1:{free_port()}", parcel_status=PARCEL)
        with pytest.raises(RetryLater) as failure:
            client.send([mounted()])
        texts.append(str(failure.value))

    assert any("Cannot PUT /tracking/***/investigation" in text for text in texts)
    assert any("Cannot POST /dataacquisition/***/notification" in text for text in texts)
    urllib3_lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("/dataacquisition/***/notification" in line for line in urllib3_lines)  # redacted
    for text in [*texts, caplog.text]:
        assert API_KEY not in text
        assert SESSION_ID not in text
    assert "$ICATPLUS_API_KEY" in texts[0] and "$ICATPLUS_SESSION_ID" in texts[0]


# -- configuration --------------------------------------------------------------------------------


def test_protocol_and_describe(icat: tuple[str, IcatRecorder]) -> None:
    url, _ = icat
    client = make_client(url, parcel_status=PARCEL)
    assert isinstance(client, DeliveryClient)
    assert client.max_batch == 1
    assert client.name == "icat"
    assert client.describe() == (
        f"icat: ICAT+ e-logbook {url} (beamline API key from $ICATPLUS_API_KEY); parcel status BEAMLINE "
        "on mount, - on unmount, investigation 1234567 (session id from $ICATPLUS_SESSION_ID)"
    )


def test_api_key_from_another_variable_or_the_yaml(
    icat: tuple[str, IcatRecorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorder = icat
    monkeypatch.setenv("ID23_ICAT_KEY", "an0ther-k3y-value")
    make_client(url, api_key_env="ID23_ICAT_KEY").send([mounted()])
    make_client(url, api_key="yaml-k3y-value").send([mounted()])
    assert [r.path for r in recorder.requests] == [
        "/dataacquisition/an0ther-k3y-value/notification",
        "/dataacquisition/yaml-k3y-value/notification",
    ]


@pytest.mark.parametrize(
    ("entry", "env", "expected"),
    [
        ({"url": None}, {}, "key 'url' is missing"),
        ({"url": "icatplus.esrf.fr"}, {}, "key 'url' must start with http:// or https://"),
        ({}, {"ICATPLUS_API_KEY": None}, "set the environment variable ICATPLUS_API_KEY"),
        ({"api_key_env": "NOPE_KEY"}, {}, "set the environment variable NOPE_KEY"),
        ({"api_key": "elogbook-00000000-0000-0000-0000-000000000000"}, {}, "pyicat-plus's placeholder"),
        ({"api_key": "short"}, {}, "does not look like one"),
        ({"timeout": 0}, {}, "key 'timeout' must be a number of seconds > 0"),
        ({"verify_tls": 3}, {}, "key 'verify_tls' must be true, false or a CA bundle path"),
        ({"tags": [1]}, {}, "key 'tags' must be a list of non-empty strings"),
        ({"token_env": "X"}, {}, "key 'token_env' is not a known key"),
        ({"parcel_status": "yes"}, {}, "key 'parcel_status' must be a mapping"),
        ({"parcel_status": {}}, {}, "key 'parcel_status.investigation_id' is missing"),
        ({"parcel_status": {"investigation_id": "mx2532"}}, {}, "a number (not the proposal name)"),
        ({"parcel_status": {**PARCEL, "enabled": "no"}}, {}, "'parcel_status.enabled' must be true or false"),
        (
            {"parcel_status": {**PARCEL, "statu_mounted": "X"}},
            {},
            "'parcel_status.statu_mounted' is not a known",
        ),
        ({"parcel_status": {**PARCEL, "status_mounted": ""}}, {}, "'parcel_status.status_mounted' must be"),
        ({"parcel_status": {**PARCEL, "location": "{shelf}"}}, {}, "unknown placeholder 'shelf'"),
        ({"parcel_status": {**PARCEL, "status_emptied": " "}}, {}, "'parcel_status.status_emptied' must be"),
        ({"item_corrections": "yes"}, {}, "key 'item_corrections' must be true or false"),
        ({"item_corrections": True}, {}, "item_corrections needs parcel_status"),
        (
            {"parcel_status": PARCEL},
            {"ICATPLUS_SESSION_ID": None},
            "no parcel_status.session_id: set the environment variable ICATPLUS_SESSION_ID",
        ),
    ],
)
def test_configuration_errors_name_the_key_and_where(
    monkeypatch: pytest.MonkeyPatch, entry: dict[str, Any], env: dict[str, str | None], expected: str
) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    node = {"name": "icat", "type": "icatplus", "url": "https://icatplus.esrf.fr", **entry}
    node = {k: v for k, v in node.items() if v is not None}

    with pytest.raises(ConfigurationError) as failure:
        client_from_config(node, WHERE)

    message = str(failure.value)
    assert expected in message
    assert message.startswith(f"{WHERE}: delivery 'icat': ")
    assert API_KEY not in message and SESSION_ID not in message


@pytest.mark.parametrize(
    ("entry", "kinds"),
    [
        ({}, None),
        ({"parcel_status": PARCEL}, None),  # on mount only: nothing written back
        ({"parcel_status": {**PARCEL, "status_emptied": "BACK_STORES"}}, {"parcel_emptied"}),
        ({"parcel_status": PARCEL, "item_corrections": True}, {"item_moved"}),
        (
            {"parcel_status": {**PARCEL, "status_emptied": "X"}, "item_corrections": True},
            {"parcel_emptied", "item_moved"},
        ),
    ],
)
def test_write_back_only_what_is_configured(entry: dict[str, Any], kinds: set[str] | None) -> None:
    """Off by default: the tracker queues an inventory's findings only for a client that writes them."""
    client = make_client("https://icatplus.esrf.fr", **entry)
    writer = client.writeback()
    if kinds is None:
        assert writer is None
        return
    assert {str(kind) for kind in writer.kinds} == kinds
    assert writer.name == client.name and "ICAT+ write-back" in writer.describe()
    assert SESSION_ID not in writer.describe() and API_KEY not in writer.describe()


def test_events_are_remembered_only_once_delivered(icat: tuple[str, IcatRecorder]) -> None:
    """A notification refused or failed is sent again on retry (nothing was stored)."""
    url, recorder = icat
    client = make_client(url)
    event = mounted()
    recorder.answers = [(500, {}, "oops"), (400, {}, "bad")]
    with pytest.raises(RetryLater):
        client.send([event])
    assert client.send([event])[0].verdict is Verdict.REJECTED
    assert client.send([event])[0].verdict is Verdict.DELIVERED
    assert [r.method for r in recorder.requests] == ["POST", "POST", "POST"]
    assert len({uuid.UUID(r.body["content"][0]["text"].split()[-4]) for r in recorder.requests}) == 1
