"""TLS verification of every delivery client, against a real HTTPS server on loopback.

A CA and a server certificate for 127.0.0.1 are made by ``tests/helpers/tls_fixtures.py``; the
server is a gevent WSGI server with that certificate (the test process is gevent-patched as in a
BLISS session). For the REST client and the ICAT+ client alike: verification is on by default and
the untrusted server is refused with a clear error (and never sees the request, so never the token
or the API key); the CA bundle path makes it trusted; ``verify_tls: false`` works only when
written, with one WARNING naming the client and the URL. A scan of the package's sources checks
that no other HTTP client was added without the same rule.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_scripts import serving
from recorder import Recorder
from tls_fixtures import Pki, make_pki

from bliss_sampletrack.core import Event, Sample, Source
from bliss_sampletrack.delivery.clients import RetryLater, Verdict, client_from_config
from bliss_sampletrack.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "bliss_sampletrack"
WHERE = "'tracker' in sampletrack.yml, key 'delivery'"
TOKEN = "stk_0123456789_" + "T" * 43
API_KEY = "k3y-0f-th3-b34mlin3-tls-5ecret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https(pki: Pki) -> Iterator[tuple[str, Recorder]]:
    """A contract-shaped HTTPS server on loopback (``tests/recorder.py``) with the test CA's cert."""
    recorder = Recorder()
    with serving(recorder, certfile=str(pki.cert), keyfile=str(pki.key)) as url:
        yield url, recorder


@pytest.fixture(autouse=True)
def no_ca_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # the environment's CA bundle (if any) must not decide these tests
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


def entry(kind: str, url: str, **extra: Any) -> dict[str, Any]:
    if kind == "rest":
        return {"name": "service", "type": "rest", "url": url + "/api/v1", "token": TOKEN, **extra}
    return {"name": "icat", "type": "icatplus", "url": url, "api_key": API_KEY, "timeout": 5, **extra}


def client_for(kind: str, url: str, **extra: Any) -> Any:
    """A REST or ICAT+ client for the server at ``url``, from its delivery entry."""
    return client_from_config(entry(kind, url, **extra), WHERE)


def event() -> Event:
    sample = Sample(barcode="LYS-0042", name="lysozyme-3")
    return Event.mounted(sample, beamline="id23-1", session="mx", source=Source.BARCODE_READER)


KINDS = ["rest", "icatplus"]


@pytest.mark.parametrize("kind", KINDS)
def test_verification_is_on_by_default_and_refuses_an_unknown_ca(
    kind: str, https: tuple[str, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url, recorder = https
    client = client_for(kind, url)
    assert client._session.verify is True  # type: ignore[attr-defined]
    with pytest.raises(RetryLater) as failure:
        client.send([event()])
    message = str(failure.value)
    assert "TLS certificate verification failed" in message, message
    assert "verify_tls" in message  # says what to set
    assert re.search(r"self.signed|unable to get local issuer", message), message
    assert recorder.requests == []  # nothing was sent over the untrusted connection
    assert TOKEN not in message + caplog.text and API_KEY not in message + caplog.text
    assert not [r for r in caplog.records if r.name.endswith(".tls")]  # no warning: it is on


@pytest.mark.parametrize("kind", KINDS)
def test_the_ca_bundle_path_makes_the_server_trusted(
    kind: str, https: tuple[str, Recorder], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    url, recorder = https
    client = client_for(kind, url, verify_tls=str(pki.ca))
    assert client._session.verify == str(pki.ca)  # type: ignore[attr-defined]
    assert [r.verdict for r in client.send([event()])] == [Verdict.DELIVERED]
    assert len(recorder.requests) == 1
    path, headers, _ = recorder.requests[0]
    if kind == "rest":
        assert headers["Authorization"] == f"Bearer {TOKEN}"
    else:
        assert API_KEY in path
    assert caplog.records == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_ca_bundle_wins_over_requests_ca_bundle(
    kind: str, https: tuple[str, Recorder], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``requests`` lets REQUESTS_CA_BUNDLE replace a session's ``verify``: the configured bundle
    (and ``false``) must hold whatever the environment says."""
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # does not hold the test CA
    url, _ = https
    client = client_for(kind, url, verify_tls=str(pki.ca))
    assert [r.verdict for r in client.send([event()])] == [Verdict.DELIVERED]
    # and with the default (true), the environment's bundle is used: still refused
    with pytest.raises(RetryLater, match="TLS certificate verification failed"):
        client_for(kind, url).send([event()])


@pytest.mark.parametrize("kind", KINDS)
def test_verify_tls_false_works_only_when_written_and_warns_once(
    kind: str, https: tuple[str, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    url, recorder = https
    client = client_for(kind, url, verify_tls=False)
    for _ in range(3):
        assert [r.verdict for r in client.send([event()])] == [Verdict.DELIVERED]
    assert len(recorder.requests) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text  # once, when the client was made
    text = warnings[0].getMessage()
    name = "service" if kind == "rest" else "icat"
    assert f"delivery client {name!r}" in text and url in text
    assert "verification is OFF" in text and "verify_tls: false" in text
    assert TOKEN not in caplog.text and API_KEY not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "value,expected",
    [
        (
            "/nonexistent/ca-bundle.pem",
            "key 'verify_tls': CA bundle '/nonexistent/ca-bundle.pem' does not exist",
        ),
        ("false", "key 'verify_tls' is the text 'false': write true or false without quotes"),
        ("", "key 'verify_tls' must be true, false or a CA bundle path, got ''"),
        (0, "key 'verify_tls' must be true, false or a CA bundle path, got 0"),
        (None, "key 'verify_tls' must be true, false or a CA bundle path, got None"),
    ],
)
def test_a_bad_verify_tls_is_a_configuration_error_naming_the_key(
    kind: str, value: Any, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigurationError) as failure:
        client_for(kind, "https://127.0.0.1:9", verify_tls=value)
    message = str(failure.value)
    name = "service" if kind == "rest" else "icat"
    assert message.startswith(f"{WHERE}: delivery {name!r}: "), message
    assert expected in message
    assert TOKEN not in message and API_KEY not in message


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_http_client_escapes_the_rule() -> None:
    """Every module that makes an HTTP session uses tls.verify_setting; nothing anywhere turns
    verification off by itself, nor silences urllib3's warning about it."""
    client_modules = []
    for path in _sources():
        text = path.read_text()
        where = path.relative_to(REPO)
        assert not re.search(r"verify\s*=\s*False", text), f"{where} turns TLS verification off"
        assert "disable_warnings" not in text, f"{where} silences urllib3's warnings"
        assert not re.search(r"import\s+(httpx|aiohttp|pycurl)|from\s+(httpx|aiohttp)\b", text), where
        assert "ssl._create_unverified_context" not in text and "CERT_NONE" not in text, where
        if re.search(r"requests\.Session\(|urllib3\.PoolManager\(|HTTPSConnection\(", text):
            client_modules.append(where)
            assert "verify_setting(" in text, f"{where} makes an HTTP session without tls.verify_setting"
    for known in (
        "delivery/rest.py",
        "delivery/icatplus.py",
        "delivery/ispyb.py",
        "tracker/icatplus/client.py",
    ):
        assert Path("bliss_sampletrack", known) in client_modules, known  # the scan does see them
