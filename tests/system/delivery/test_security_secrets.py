"""Secrets never appear in logs, ``__info__``, scan metadata, HDF5 files, events, Redis or exception texts.

A tracker in the real BLISS session (ESRF data policy, real scans and HDF5 files) delivers with
known secrets to five clients: the real tracking service with a valid token, the same service with
a token it does not know (401: dead letters), an ICAT+ stand-in that echoes request paths in its
refusals (as Express does: the API key and the session id are in ICAT+ paths), a service that is
down, and ICAT+ over TLS to a plain-HTTP port. Every artefact is then searched for every secret:
the tracker's ``__info__`` and printed status, the log records, the outbox events, dead letters
and last errors, the scan's metadata (in the session and in Redis), its HDF5 file (every dataset
and attribute), every key and value of both beacon Redis databases, the service's log and
database file, and the text (and traceback) of the exceptions the failing clients raise.

The search itself (``tests/helpers/secret_search.py``) also serves test_demo.py, which runs it over
the full demo's artefacts.
"""

from __future__ import annotations

import json
import logging
import secrets as random_secrets
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from secret_search import file_hits, hdf5_texts, redis_hits, secret_forms, text_hits
from service_fixtures import Service, issue_token, start_service

from bliss_sampletrack.core import Event, Sample, Source
from bliss_sampletrack.delivery.clients import RetryLater, Verdict, client_from_config
from bliss_sampletrack.testbed.beacon import free_port

pytest_plugins = ["service_fixtures"]
pytestmark = pytest.mark.bliss

BEAMLINE = "sec00"
TRACKER = "sectracker"
WHERE = f"'{TRACKER}' in the test, key 'delivery'"


# --- a stand-in ICAT+ ----------------------------------------------------------------------------
class EchoingIcat:
    """Answers the first notification 200, then refuses every request with its path (what
    Express answers for an unknown route), so the API key and session id come back in answers."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        self.paths.append(f"{method} {path}")
        if method == "POST" and len(self.paths) == 1:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"_id": uuid.uuid4().hex[:24]}).encode()]
        start_response("404 Not Found", [("Content-Type", "text/html")])
        return [f"<pre>Cannot {method} {path}?{environ.get('QUERY_STRING', '')}</pre>".encode()]


@pytest.fixture
def icat_echo() -> Iterator[tuple[str, EchoingIcat]]:
    from gevent.pywsgi import WSGIServer

    app = EchoingIcat()
    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.stop(timeout=1)


def clear_keys() -> None:
    from bliss.config.conductor.client import get_redis_proxy

    redis = get_redis_proxy()
    for pattern in (f"sampletrack:{TRACKER}:*", f"sampletrack:outbox:{BEAMLINE}*"):
        for key in redis.scan_iter(pattern):
            redis.delete(key)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Service, str]]:
    db_url = f"sqlite:///{tmp_path / 'tracking.db'}"
    token = issue_token(db_url, [BEAMLINE])
    started = start_service(db_url, tmp_path)
    try:
        yield started, token
    finally:
        started.stop()


def test_no_secret_in_any_artefact_of_a_tracker_that_delivers(
    esrf: Any,
    bliss_session: Any,
    beacon: Any,
    service: tuple[Service, str],
    icat_echo: tuple[str, EchoingIcat],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bliss.common.scans import loopscan
    from bliss.config.static import get_config

    from bliss_sampletrack.tracker.controller import SampleTracker

    caplog.set_level(logging.INFO)
    for name in ("bliss_sampletrack", "urllib3", "requests"):
        caplog.set_level(logging.DEBUG, logger=name)
    running, good = service
    bad = "stk_0123456789_" + random_secrets.token_urlsafe(32)  # well formed, unknown to the service
    api_key = "icat-key-" + uuid.uuid4().hex
    session_id = "icat-session-" + uuid.uuid4().hex
    secrets = {
        **secret_forms("service token", good),
        **secret_forms("unknown token", bad),
        **secret_forms("ICAT+ API key", api_key),
        **secret_forms("ICAT+ session id", session_id),
    }
    monkeypatch.setenv("SEC_TOKEN", good)
    monkeypatch.setenv("SEC_BAD_TOKEN", bad)
    monkeypatch.setenv("SEC_ICAT_KEY", api_key)
    monkeypatch.setenv("SEC_ICAT_SESSION", session_id)
    icat_url, icat = icat_echo
    icat_port = icat_url.rsplit(":", 1)[1]
    icat_entry = {
        "type": "icatplus",
        "api_key_env": "SEC_ICAT_KEY",
        "timeout": 5,
        "parcel_status": {"investigation_id": 1234567, "session_id_env": "SEC_ICAT_SESSION"},
    }
    delivery = [
        {"name": "service", "type": "rest", "url": running.base_url, "token_env": "SEC_TOKEN"},
        {"name": "badtoken", "type": "rest", "url": running.base_url, "token_env": "SEC_BAD_TOKEN"},
        {"name": "icat", "url": icat_url, **icat_entry},
        {
            "name": "down",
            "type": "rest",
            "url": f"http://127.0.0.1:{free_port()}/api/v1",
            "token_env": "SEC_TOKEN",
        },
        {"name": "icat_tls", "url": f"https://127.0.0.1:{icat_port}", **icat_entry},
    ]
    node = get_config().get_config("tracker")
    config = {key: node.get(key) for key in node.keys()}
    config.update(beamline=BEAMLINE, delivery=delivery)
    clear_keys()
    tracker = SampleTracker(TRACKER, config)
    try:
        tracker.reader.remove()  # type: ignore[union-attr]
        tracker.mount("LYS-0001")
        scan = loopscan(3, 0.01, bliss_session.env_dict["diode"])
        tracker.unmount()
        outbox = tracker.outbox
        with gevent.Timeout(90, AssertionError("the deliveries did not settle in time")):
            while not (
                outbox.pending("service") == 0
                and len(outbox.dead_letters("badtoken")) == 2
                and len(outbox.dead_letters("icat")) == 2
                and outbox.last_error("down")
                and outbox.last_error("icat_tls")
            ):
                gevent.sleep(0.2)

        texts: list[tuple[str, str | bytes]] = [("__info__", tracker.__info__())]
        tracker.delivery_status()
        tracker.history(10)
        texts.append(("printed status and history", capsys.readouterr().out))
        texts += [(f"event {e.event_id}", e.to_json()) for e in outbox.peek(10)]
        dead = {name: outbox.dead_letters(name) for name in ("badtoken", "icat")}
        texts += [(f"dead letter of {name}", d.to_record()) for name, ds in dead.items() for d in ds]
        last_errors = {name: outbox.last_error(name) or "" for name in ("down", "icat_tls")}
        texts += [(f"last error of {name}", text) for name, text in last_errors.items()]
        texts.append(("scan_info", json.dumps(scan.scan_info, default=str)))
        # exceptions of the failing clients, raised here: message, repr and traceback
        event = outbox.peek(1)[0]
        for entry in delivery[3:]:
            with pytest.raises(RetryLater) as failure:
                client_from_config(entry, WHERE).send([event])
            texts.append(
                (f"exception of {entry['name']}", "".join(traceback.format_exception(failure.value)))
            )
            texts.append((f"repr of {entry['name']}'s exception", repr(failure.value)))
        tracker.close()
        texts.append(("log records", caplog.text))
        texts.append(("service log", running.log_text()))

        hits = [hit for where, text in texts for hit in text_hits(secrets, where, text)]
        h5_path = Path(scan.scan_info["filename"])
        hdf5 = list(hdf5_texts(h5_path))
        hits += [hit for where, text in hdf5 for hit in text_hits(secrets, where, text)]
        file_hit, files = file_hits(secrets, tmp_path)  # the service's database, its log
        hits += file_hit
        keys: dict[str, set[str]] = {}
        for url in (beacon.redis_url, beacon.redis_data_url):
            redis_hit, keys[url] = redis_hits(secrets, url)
            hits += redis_hit
        assert hits == [], "\n".join(hits)

        # the search did look at what it was meant to
        assert (
            any("LYS-0001" in text for _, text in hdf5) and scan.scan_info["sample"]["barcode"] == "LYS-0001"
        )
        assert f"sampletrack:outbox:{BEAMLINE}" in keys[beacon.redis_url] and files >= 2
        assert any("scan" in key for key in keys[beacon.redis_data_url])  # blissdata's scans
        assert all("401" in d.answer and "unauthorized" in d.answer for d in dead["badtoken"])
        answers = " ".join(d.answer for d in dead["icat"])
        assert "Cannot PUT /tracking/***/investigation" in answers
        assert "Cannot POST /dataacquisition/***/notification" in answers
        assert "ConnectionError" in last_errors["down"] and "***" in last_errors["icat_tls"]
        assert any(api_key in path for path in icat.paths)  # the key did travel, in the request
        assert "$SEC_ICAT_KEY" in texts[0][1]  # __info__ says where the key comes from, not what
    finally:
        tracker.close()
        clear_keys()


@pytest.mark.parametrize("kind", ["rest", "icatplus", "ispyb"])
@pytest.mark.parametrize("inside", [1, 6, 20])
def test_an_echoed_secret_cut_by_the_answer_limit_leaves_no_piece(
    kind: str, inside: int, http_server: tuple[str, Any]
) -> None:
    """A refusal whose body echoes the secret so that the 500-character limit of a kept answer
    falls ``inside`` characters into it: the secret is hidden before the cut, so not even its
    first characters reach the dead letter (cut first, the piece no longer matched and stayed)."""
    from bliss_sampletrack.delivery.clients import MAX_ANSWER
    from bliss_sampletrack.delivery.ispyb import IspybClient

    url, recorder = http_server
    secret = "Zq7" + random_secrets.token_hex(16)  # 35 characters, no piece of it anywhere else
    entries = {
        "rest": {"type": "rest", "url": url, "token": secret},
        "icatplus": {"type": "icatplus", "url": url, "api_key": secret},
        "ispyb": {"type": "ispyb", "url": url, "token": secret, "visit": "mx2532-1", "timezone": "UTC"},
    }
    client = client_from_config({"name": "echo", **entries[kind]}, WHERE)
    assert isinstance(client, IspybClient) == (kind == "ispyb")
    # the kept text starts '<status> ' then the answer; the recorder sends the body as a JSON string
    padding = "x" * (MAX_ANSWER - 1 - inside)
    recorder.answers.append((400, {}, padding + secret + " was refused"))
    event = Event.mounted(Sample(barcode="LYS-0042"), beamline=BEAMLINE, session="s", source=Source.MANUAL)
    [result] = client.send([event])
    assert result.verdict is Verdict.REJECTED
    assert padding[-20:] in result.detail  # the answer was kept up to the limit
    assert secret[:inside] not in result.detail, result.detail
    assert len(recorder.requests) == 1
