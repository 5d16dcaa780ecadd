"""The ICAT+ parcel registry against a recording HTTP server on loopback that answers like ICAT+.

The server (a gevent WSGI server: the test process is gevent-patched by BLISS) logs users in
(``POST /session``), finds investigations with the beamline API key, and lists the parcels of an
investigation (parcel -> container -> sample items, with both ``_id`` and ``id`` as ICAT+ sends
them, or ``_id`` only, and numbers where icat-plus-client 5.7.4 expects them, or text). It records
every request, so the tests check exactly what the registry asks. The cache lives in the test bed's
real Redis. The same tests run on both stacks: through pyicat-plus 3.1.0 on BLISS 2.4 (``client:
auto``), with ``requests`` on BLISS 2.0.3 (pyicat-plus 0.1.10 has no parcel call).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gevent
import pytest
from http_scripts import Answer, Recorded, ScriptedServer, serving
from tls_fixtures import make_pki

from bliss_sampletrack.core import Sample
from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.tracker.icatplus import (
    DEFAULT_CACHE_TTL,
    KEY_PREFIX,
    RETRY_AFTER,
    IcatPlusRegistry,
    IcatPlusUnavailable,
    flatten,
    pyicatplus_has_parcels,
    resolve_location,
)
from bliss_sampletrack.tracker.registry import ChainRegistry, ManifestRegistry

USER, PASSWORD = "opid23", "pa55-w0rd with spaces"
API_KEY = "beamline-api-k3y-5ecret"
SESSION_ID = "c0nfigured-s3ss10n-5ecret"
SECRETS = (PASSWORD, API_KEY, SESSION_ID, "s3ss10n-")
WHERE = "'tracker' in sampletrack.yml"
PYICAT = pyicatplus_has_parcels()  # True on the BLISS 2.4 stack (pyicat-plus 3.1.0)

PARCEL_A = "64f0c2a9e4b0aa11bb22cc33"
PARCEL_B = "65aa11bb22cc33dd44ee55ff"


def sample_item(oid: str, name: str, sample_id: int, position: str, **extra: Any) -> dict[str, Any]:
    return {"_id": oid, "id": oid, "name": name, "type": "SAMPLE", "sampleId": sample_id,
            "sampleContainerPosition": position, **extra}  # fmt: skip


def parcels_123() -> list[dict[str, Any]]:
    """Proposal mx2532's parcels, as ICAT+ lists them (``_id`` and ``id`` on everything)."""
    return [
        {
            "_id": PARCEL_A, "id": PARCEL_A, "name": "Dewar-MX2532", "investigationId": 123,
            "investigationName": "MX2532", "status": "BEAMLINE", "shipmentId": "5f00aa",
            "content": [
                {
                    "_id": "c0000000000000000000007a", "id": "c0000000000000000000007a", "name": "puck-7",
                    "type": "CONTAINER", "containerType": {"name": "UNIPUCK", "capacity": 16},
                    "sampleChangerLocation": 3,
                    "content": [
                        sample_item("5a0000000000000000000001", "LYS-0042", 77001, "5", comments="cryo"),
                        sample_item("5a0000000000000000000002", "THA-0007", 77002, "6"),
                        sample_item("5a0000000000000000000003", "NOREAD", 77003, "7"),  # never a barcode
                    ],
                },
                {"_id": "t0000000000000000000001", "id": "t0000000000000000000001", "name": "tools",
                 "type": "TOOL"},
            ],
        },
        {
            "_id": PARCEL_B, "id": PARCEL_B, "name": "Box-2", "investigationId": 123,
            "investigationName": "MX2532",
            "content": [
                {
                    "_id": "c0000000000000000000009b", "id": "c0000000000000000000009b", "name": "puck-9",
                    "type": "CONTAINER", "sampleChangerLocation": 4.0,
                    "content": [
                        sample_item("5b0000000000000000000001", "INS-0001", 77010, "1"),
                        sample_item("5b0000000000000000000002", "DUP-0001", 77011, "2"),
                        sample_item("5b0000000000000000000003", "DUP-0001", 77012, "3"),
                    ],
                },
                sample_item("5b0000000000000000000009", "LOOSE-01", 77019, "1"),  # in no container
            ],
        },
    ]  # fmt: skip


def parcels_456() -> list[dict[str, Any]]:
    return [
        {"_id": "66bb", "id": "66bb", "name": "Dewar-MX9999", "investigationId": 456,
         "investigationName": "MX9999",
         "content": [{"_id": "c456", "id": "c456", "name": "puck-1", "type": "CONTAINER",
                      "sampleChangerLocation": 1,
                      "content": [sample_item("5c01", "FER-0001", 88001, "1")]}]},
    ]  # fmt: skip


LYS_0042 = Sample(
    barcode="LYS-0042",
    name="LYS-0042",
    sample_id="77001",
    parcel_id=PARCEL_A,
    parcel_name="Dewar-MX2532",
    container_id="c0000000000000000000007a",
    container_name="puck-7",
    container_position="5",
)


class IcatPlus(ScriptedServer):
    """Answers like ICAT+ (the routes the registry uses); records every request."""

    text_type = "application/json"
    reason = "ICAT+"

    def __init__(self) -> None:
        super().__init__()
        self.sessions = {SESSION_ID}
        self.logins = 0
        self.parcels = {"123": parcels_123(), "456": parcels_456()}
        self.samples = {"123": [{"id": 77001, "name": "lysozyme"}, {"id": 77002, "name": "thaumatin"}]}
        self.investigations = {
            ("id23-1", "mx2532"): [
                {"id": 999, "name": "MX2532", "startDate": "2099-01-01T08:00:00.000+01:00"},
                {"id": 123, "name": "MX2532", "startDate": "2020-01-01T08:00:00.000+01:00"},
            ],
            ("id23-1", "mx9999"): [{"id": 456, "name": "MX9999", "startDate": "2021-01-01T08:00:00+01:00"}],
        }

    def default(self, request: Recorded) -> Answer:
        status, answer = self.answer(request)
        return status, {}, json.dumps(answer)  # text too as JSON ("Forbidden" quoted), as ICAT+ does

    def answer(self, request: Recorded) -> tuple[int, Any]:
        path, query = request.path, request.query
        if request.method == "POST" and path == "/session":
            body = request.body or {}
            if (body.get("username"), body.get("password"), body.get("plugin")) != (USER, PASSWORD, "esrf"):
                return 403, {"message": "Authentication failed"}
            self.logins += 1
            session = f"s3ss10n-{self.logins}-{uuid.uuid4().hex[:8]}"
            self.sessions.add(session)
            return 200, {
                "sessionId": session,
                "username": USER,
                "fullName": "Op Id23",
                "lifeTimeMinutes": 720,
            }
        if match := re.fullmatch(r"/dataacquisition/([^/]+)/investigation", path):
            if match.group(1) != API_KEY:
                return 403, "Forbidden"
            return 200, self.investigations.get((query["instrumentName"], query["investigationName"]), [])
        if match := re.fullmatch(r"/(tracking|catalogue)/([^/]+)/(parcel|samples)", path):
            if match.group(2) not in self.sessions:
                return 403, {"message": "Session not found or expired"}
            table = self.parcels if match.group(3) == "parcel" else self.samples
            return 200, table.get(query.get("investigationId"), [])
        return 404, {"message": f"no route {path}"}

    def lines(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r.line for r in self.requests]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Proposal:
    def __init__(self, value: str | None = "mx2532") -> None:
        self.value = value

    def __call__(self) -> str | None:
        return self.value


@pytest.fixture
def icat() -> Iterator[tuple[str, IcatPlus]]:
    app = IcatPlus()
    with serving(app) as url:
        yield url, app


@pytest.fixture
def redis_client(beacon: Any) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(beacon.redis_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICATPLUS_PASSWORD", PASSWORD)
    monkeypatch.setenv("ICATPLUS_API_KEY", API_KEY)
    monkeypatch.setenv("ICATPLUS_SESSION_ID", SESSION_ID)


@pytest.fixture
def env(icat: tuple[str, IcatPlus], redis_client: Any) -> Iterator[Env]:
    beamline = f"t{uuid.uuid4().hex[:8]}"
    environment = Env(icat[0], icat[1], redis_client, beamline, Proposal(), Clock(), [])
    yield environment
    for registry in environment.made:
        registry.close()
    for key in redis_client.scan_iter(f"{KEY_PREFIX}:{beamline}:*"):
        redis_client.delete(key)


@dataclass
class Env:
    url: str
    server: IcatPlus
    redis: Any
    beamline: str
    proposal: Proposal
    clock: Clock
    made: list[IcatPlusRegistry]

    def registry(self, **entry: Any) -> IcatPlusRegistry:
        node = {"type": "icatplus", "url": self.url, "username": USER, "instrument": "id23-1", **entry}
        node = {key: value for key, value in node.items() if value is not None}
        registry = IcatPlusRegistry.from_config(
            node, WHERE, redis=self.redis, beamline=self.beamline, proposal=self.proposal, clock=self.clock
        )
        self.made.append(registry)
        return registry

    def cached(self, proposal: str = "mx2532") -> dict[str, Any] | None:
        raw = self.redis.get(f"{KEY_PREFIX}:{self.beamline}:{proposal}")
        return None if raw is None else json.loads(raw)


LOGIN = ("POST", "/session", {})
FIND_123 = ("GET", f"/dataacquisition/{API_KEY}/investigation", {"instrumentName": "id23-1",
            "investigationName": "mx2532"})  # fmt: skip


def parcels_of(session: str, investigation: str = "123") -> tuple[str, str, dict[str, str]]:
    return "GET", f"/tracking/{session}/parcel", {"investigationId": investigation}


def stale_note_field() -> bool:
    return "registry_note" in {f.name for f in fields(Sample)}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret {secret[:6]}... in {text[:200]!r}"


# --- flattening (no server) --------------------------------------------------------------------------


def test_flatten_follows_the_nesting_and_both_id_variants() -> None:
    parcels = parcels_123()
    del parcels[1]["id"]  # a parcel with "_id" only (pyicat-plus 3.1 would drop it, see below)
    del parcels[0]["content"][0]["_id"]  # a container with "id" only
    records = {r["item_name"]: r for r in flatten(parcels)}
    assert len(records) == 6  # the duplicated name counts twice below, the tool box not at all
    assert records["LYS-0042"]["parcel_id"] == PARCEL_A and records["LYS-0042"]["container_id"] == (
        "c0000000000000000000007a"
    )
    assert records["INS-0001"]["parcel_id"] == PARCEL_B  # from "_id"
    assert (records["INS-0001"]["changer_location"], records["INS-0001"]["container_position"]) == ("4", "1")
    assert records["INS-0001"]["sample_id"] == "77010"  # a number in ICAT+, text in the record
    loose = records["LOOSE-01"]
    assert (loose["container_id"], loose["container_name"], loose["changer_location"]) == (None, None, None)
    assert len([r for r in flatten(parcels) if r["item_name"] == "DUP-0001"]) == 2


# --- resolving, and what is asked of ICAT+ ----------------------------------------------------------


def test_a_barcode_resolves_to_the_full_record_with_exactly_these_requests(env: Env) -> None:
    registry = env.registry(password_env="ICATPLUS_PASSWORD")
    assert registry.client == ("pyicat-plus" if PYICAT else "requests")
    sample = registry.resolve("LYS-0042")
    assert sample is not None and sample.to_dict() == LYS_0042.to_dict()
    assert registry.last is not None and not registry.last.stale
    session = env.server.requests[2].path.split("/")[2]
    assert env.server.lines() == [FIND_123, LOGIN, parcels_of(session)]
    assert env.server.requests[1].body == {"plugin": "esrf", "username": USER, "password": PASSWORD}
    cached = env.cached()
    assert cached is not None and cached["investigation_id"] == "123" and cached["parcels"] == 2
    assert cached["fetched_at"] == env.clock.now and len(cached["records"]) == 7
    # answered from the cache now: nothing more is asked
    assert registry.resolve("THA-0007").container_position == "6"  # type: ignore[union-attr]
    assert registry.resolve("UNKNOWN-1") is None
    assert "not in the ICAT+ parcels of proposal mx2532" in str(registry.reason)
    assert len(env.server.requests) == 3
    assert registry.age() == 0
    env.clock.advance(42)
    assert registry.age() == 42 and "42 s ago" in registry.describe()
    assert "7 samples in 2 parcels" in registry.describe()


def test_a_configured_session_id_needs_no_login(env: Env) -> None:
    registry = env.registry(username=None)  # no username: the session id from $ICATPLUS_SESSION_ID
    assert registry.resolve("INS-0001").parcel_name == "Box-2"  # type: ignore[union-attr]
    assert env.server.lines() == [FIND_123, parcels_of(SESSION_ID)]


def test_a_fixed_investigation_id_needs_no_api_key(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICATPLUS_API_KEY")
    registry = env.registry(username=None, investigation_id=456)
    assert registry.resolve("FER-0001").parcel_name == "Dewar-MX9999"  # type: ignore[union-attr]
    assert env.server.lines() == [parcels_of(SESSION_ID, "456")]


def test_a_parcel_with_only_an_underscore_id_keeps_its_id(env: Env) -> None:
    """icat-plus-client 5.7.4's Parcel loses "_id" (it declares ``id`` twice): read again as JSON."""
    del env.server.parcels["123"][1]["id"]
    registry = env.registry(username=None)
    assert registry.resolve("INS-0001").parcel_id == PARCEL_B  # type: ignore[union-attr]
    read_again = [parcels_of(SESSION_ID)] if PYICAT else []
    assert env.server.lines() == [FIND_123, parcels_of(SESSION_ID), *read_again]


def test_text_where_icat_plus_client_wants_numbers_is_read_anyway(env: Env) -> None:
    """5.7.4's strict types refuse ``"sampleChangerLocation": "3"``: the JSON is read again."""
    container = env.server.parcels["123"][0]["content"][0]
    container["sampleChangerLocation"] = "3"
    container["content"][0]["sampleId"] = "77001"
    registry = env.registry(username=None)
    assert registry.resolve("LYS-0042").to_dict() == LYS_0042.to_dict()  # type: ignore[union-attr]
    assert registry.resolve_location("3:05").barcode == "LYS-0042"  # type: ignore[union-attr]
    read_again = [parcels_of(SESSION_ID)] if PYICAT else []
    assert env.server.lines() == [FIND_123, parcels_of(SESSION_ID), *read_again]


def test_sample_sheet_names_come_from_the_investigations_samples(env: Env) -> None:
    registry = env.registry(username=None, sample_name="sample_sheet")
    sample = registry.resolve("LYS-0042")
    assert sample is not None and (sample.name, sample.barcode, sample.sample_id) == (
        "lysozyme",
        "LYS-0042",
        "77001",
    )
    assert registry.resolve("INS-0001").name == "INS-0001"  # type: ignore[union-attr]  # no sheet: item name
    samples = ("GET", f"/catalogue/{SESSION_ID}/samples", {"investigationId": "123"})
    assert env.server.lines() == [FIND_123, parcels_of(SESSION_ID), samples]


def test_no_read_ambiguous_and_unknown_never_map_to_a_sample(env: Env) -> None:
    registry = env.registry(username=None, barcode_fields=["name", "comments"])
    assert registry.resolve("NOREAD") is None and "no-read" in str(registry.reason)
    assert registry.resolve("ERROR") is None
    assert registry.resolve(" LYS-0042") is None and "not a barcode" in str(registry.reason)
    assert registry.resolve("DUP-0001") is None
    assert "ambiguous: 2 ICAT+ sample items match" in str(registry.reason)
    assert registry.resolve("cryo").barcode == "cryo"  # type: ignore[union-attr]  # from "comments"
    # the item whose name is a no-read string is still found by its changer address
    at_7 = registry.resolve_location(3, 7)
    assert at_7 is not None and at_7.name == "NOREAD" and at_7.barcode is None


def test_changer_addresses_resolve_through_a_chain_too(env: Env, tmp_path: Path) -> None:
    registry = env.registry(username=None)
    assert registry.resolve_location(3, "05").to_dict() == LYS_0042.to_dict()  # type: ignore[union-attr]
    assert registry.resolve_location("3:5").barcode == "LYS-0042"  # type: ignore[union-attr]
    assert registry.resolve_location("4:01").name == "INS-0001"  # type: ignore[union-attr]  # 4.0 in ICAT+
    assert registry.resolve_location("9:01") is None and "not in the ICAT+ parcels" in str(registry.reason)
    assert registry.resolve_location("puck three") is None and "not a changer address" in str(registry.reason)
    manifest = tmp_path / "samples.csv"
    manifest.write_text("barcode,name\nMAN-1,from-manifest\n")
    chain = ChainRegistry([ManifestRegistry(manifest), registry])
    assert resolve_location(chain, "3:06").barcode == "THA-0007"  # type: ignore[union-attr]
    assert resolve_location(chain, "8:08") is None


def test_chain_order_decides_who_answers(env: Env, tmp_path: Path) -> None:
    manifest = tmp_path / "samples.csv"
    manifest.write_text(
        "barcode,name,parcel_name\nLYS-0042,lyso-from-manifest,Local\nMAN-1,local-only,Local\n"
    )
    registry = env.registry(username=None)
    manifest_first = ChainRegistry([ManifestRegistry(manifest), registry])
    icat_first = ChainRegistry([registry, ManifestRegistry(manifest)])
    assert manifest_first.resolve("LYS-0042").name == "lyso-from-manifest"  # type: ignore[union-attr]
    assert icat_first.resolve("LYS-0042").parcel_name == "Dewar-MX2532"  # type: ignore[union-attr]
    for chain in (manifest_first, icat_first):
        assert chain.resolve("MAN-1").name == "local-only"  # type: ignore[union-attr]
        assert chain.resolve("THA-0007").parcel_id == PARCEL_A  # type: ignore[union-attr]
        assert chain.resolve("NOPE-1") is None
    assert "ICAT+ http://127.0.0.1" in icat_first.describe().split(" -> ")[0]
    assert len([r for r in env.server.requests if r.path.endswith("/parcel")]) == 1  # one fetch for all


# --- cache, refresh, proposals ----------------------------------------------------------------------


def test_a_new_proposal_is_fetched_and_cached_on_its_own(env: Env) -> None:
    registry = env.registry(username=None)
    assert registry.resolve("LYS-0042") is not None
    env.proposal.value = "mx9999"
    assert registry.resolve("LYS-0042") is None  # not a sample of this proposal
    assert registry.resolve("FER-0001").parcel_name == "Dewar-MX9999"  # type: ignore[union-attr]
    find_9999 = ("GET", f"/dataacquisition/{API_KEY}/investigation", {"instrumentName": "id23-1",
                 "investigationName": "mx9999"})  # fmt: skip
    assert env.server.lines()[2:] == [find_9999, parcels_of(SESSION_ID, "456")]
    assert env.cached("mx9999")["investigation_id"] == "456"  # type: ignore[index]
    env.proposal.value = "mx2532"  # back: its cache is still fresh, nothing asked
    assert registry.resolve("LYS-0042") is not None and len(env.server.requests) == 4
    env.proposal.value = None  # the data policy switched off
    assert registry.resolve("LYS-0042") is None and "ESRF data policy is off" in str(registry.reason)
    assert "no proposal" in registry.describe() and registry.age() is None


def test_refresh_on_demand_and_when_the_cache_expires(env: Env) -> None:
    registry = env.registry(username=None, cache_ttl=60)
    assert registry.resolve("NEW-0001") is None
    env.server.parcels["123"][0]["content"][0]["content"].append(sample_item("5a09", "NEW-0001", 77009, "9"))
    registry.refresh()  # on demand, although the cache is fresh
    assert registry.resolve("NEW-0001").container_position == "9"  # type: ignore[union-attr]
    assert len(env.server.requests) == 4  # two lookups, two parcel lists
    env.clock.advance(61)
    assert registry.resolve("NEW-0001") is not None and len(env.server.requests) == 6  # expired: fetched
    # another process of the beamline (a new registry) uses the shared cache in Redis
    other = env.registry(username=None, cache_ttl=60)
    assert other.resolve("LYS-0042") is not None and len(env.server.requests) == 6
    assert other.age() == 0


def test_server_down_serves_the_cache_marked_stale(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    registry = env.registry(cache_ttl=60)
    assert registry.resolve("LYS-0042") is not None
    env.server.sessions.clear()  # the login will work, ...
    env.server.investigations.clear()  # ... but the investigation is gone: a refresh fails
    env.clock.advance(61)
    caplog.set_level(logging.DEBUG)
    sample = registry.resolve("LYS-0042")
    assert sample is not None and sample.parcel_id == PARCEL_A
    last = registry.last
    assert last is not None and last.stale and "may be stale" in str(last.note)
    assert "knows no investigation of proposal mx2532" in str(last.note)
    if stale_note_field():  # once Sample carries the note (proposed in the report)
        assert sample.registry_note == last.note  # type: ignore[attr-defined]
    assert "last refresh failed" in registry.describe() and "may be stale" in registry.describe()
    assert registry.age() == 61
    with pytest.raises(IcatPlusUnavailable, match="knows no investigation"):
        registry.refresh()
    assert_no_secret(str(last.note), registry.describe(), repr(registry), caplog.text)


def test_unreachable_icat_with_a_cache_in_redis_only(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    first = env.registry(username=None)
    assert first.resolve("LYS-0042") is not None
    env.clock.advance(DEFAULT_CACHE_TTL + 1)
    caplog.set_level(logging.DEBUG)
    down = env.registry(username=None, url="http://127.0.0.1:9")  # nothing listens there
    sample = down.resolve("LYS-0042")
    assert sample is not None and sample.container_name == "puck-7"
    assert down.last is not None and down.last.stale and "may be stale" in str(down.last.note)
    assert down.resolve("NOPE-0001") is None and "may be stale" in str(down.reason)
    assert_no_secret(str(down.last.note), down.describe(), caplog.text)


def test_no_cache_and_no_icat_resolves_nothing_and_says_why(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = env.registry(url="http://127.0.0.1:9")
    assert registry.resolve("LYS-0042") is None
    reason = str(registry.reason)
    assert reason.startswith("no ICAT+ parcels cached;") and "refused" in reason.lower()
    assert "no cache yet" in registry.describe() and registry.age() is None
    assert_no_secret(reason, registry.describe(), caplog.text)


def test_a_slow_icat_times_out_without_blocking_the_hub(env: Env) -> None:
    env.server.hang, env.server.hang_on = 60, "/parcel"  # the parcels: no answer for a minute
    registry = env.registry(username=None, timeout=0.5)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(10_000)])
    try:
        with gevent.Timeout(20):  # a bound on the test, not a speed measurement
            assert registry.resolve("LYS-0042") is None
    finally:
        ticker.kill()
    assert ticks, "the hub was blocked while waiting for ICAT+"
    # pyicat-plus has no timeout: the registry's gevent.Timeout ends it ("no complete answer ..."); with
    # requests, its own timeout of the same length may come first ("no answer within ...")
    assert re.search(r"no (complete )?answer within 0.5 s", str(registry.reason))
    # automatic refreshes then wait RETRY_AFTER: the next mount does not wait again
    asked = len(env.server.requests)
    assert registry.resolve("LYS-0042") is None and len(env.server.requests) == asked
    env.server.hang = 0
    env.clock.advance(RETRY_AFTER + 1)
    assert registry.resolve("LYS-0042") is not None


def test_an_expired_session_logs_in_again(env: Env) -> None:
    registry = env.registry(cache_ttl=0)  # every resolve refreshes
    assert registry.resolve("LYS-0042") is not None
    env.server.sessions.clear()  # ICAT+ forgot the session
    env.clock.advance(1)
    assert registry.resolve("LYS-0042") is not None and registry.last is not None and not registry.last.stale
    paths = [line[:2] for line in env.server.lines()]
    assert paths[3][0] == "GET" and paths[4] == ("GET", paths[2][1])  # refused once with the old session
    assert paths[5] == ("POST", "/session") and env.server.logins == 2
    assert paths[6][1] != paths[2][1] and paths[6][1].startswith("/tracking/s3ss10n-2-")


def test_an_expired_configured_session_says_to_renew_it(env: Env) -> None:
    registry = env.registry(username=None, cache_ttl=0)
    assert registry.resolve("LYS-0042") is not None
    env.server.sessions.clear()
    env.clock.advance(1)
    sample = registry.resolve("LYS-0042")
    assert sample is not None and registry.last is not None and registry.last.stale
    assert "refused the session id from $ICATPLUS_SESSION_ID" in str(registry.last.note)


# --- configuration and secrets ------------------------------------------------------------------------


def test_configuration_errors_name_the_key(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        ({"colour": "red"}, "key 'colour' is not known"),
        ({"url": "icatplus.esrf.fr"}, "key 'url' must be the ICAT+ base URL"),
        ({"username": ""}, "key 'username' must be the ICAT user name"),
        ({"password_env": "NO_SUCH_VARIABLE_X"}, "set the environment variable NO_SUCH_VARIABLE_X"),
        ({"investigation_id": "MX2532"}, "key 'investigation_id' must be the ICAT investigation id"),
        ({"barcode_fields": ["barcode"]}, "key 'barcode_fields' must list ICAT+ item fields"),
        ({"timeout": 0}, "key 'timeout' must be a number of seconds"),
        ({"cache_ttl": "1h"}, "key 'cache_ttl' must be a number of seconds"),
        ({"client": "curl"}, "key 'client' must be one of auto, pyicatplus, http"),
        ({"sample_name": "label"}, "key 'sample_name' must be one of item, sample_sheet"),
    ]
    if not PYICAT:
        cases.append(({"client": "pyicatplus"}, "needs pyicat-plus >= 3"))
    for entry, message in cases:
        with pytest.raises(ConfigurationError, match=re.escape(message)) as raised:
            env.registry(**entry)
        assert str(raised.value).startswith(f"{WHERE}: registry 'icatplus'")
        assert_no_secret(str(raised.value))
    monkeypatch.delenv("ICATPLUS_API_KEY")
    with pytest.raises(ConfigurationError, match="set the environment variable ICATPLUS_API_KEY"):
        env.registry()


def test_tls_follows_the_rule_of_every_client(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Over HTTPS: an unknown CA is refused before any request reaches the server, a CA bundle
    path makes it trusted (then ``requests`` only: pyicat-plus cannot take one), ``false`` works
    with one WARNING naming the registry and the URL; a bad setting names the key."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)  # the environment's CA bundle must not decide this
    pki = make_pki(tmp_path)
    app = IcatPlus()
    with serving(app, certfile=str(pki.cert), keyfile=str(pki.key)) as url:
        caplog.set_level(logging.INFO)
        untrusted = env.registry(url=url)
        with pytest.raises(IcatPlusUnavailable, match="TLS certificate verification failed"):
            untrusted.refresh()
        assert app.requests == []  # nothing (no API key, no password) reached the server

        caplog.clear()
        # another CA in the environment: requests would let it replace the session's setting
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(make_pki(tmp_path / "other").ca))
        trusted = env.registry(url=url, verify_tls=str(pki.ca))
        assert trusted.client == "requests"
        assert trusted.refresh().proposal == "mx2532"
        assert [r.line for r in app.requests][:2] == [FIND_123, LOGIN]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

        caplog.clear()
        unverified = env.registry(url=url, verify_tls=False, username=None)
        assert unverified.client == "requests"
        [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        text = warning.getMessage()
        assert "sample registry 'icatplus'" in text and url in text and "verification is OFF" in text
        assert unverified.resolve("LYS-0042") is not None
    cases = [
        ({"verify_tls": str(tmp_path / "no-such-ca.pem")}, "key 'verify_tls': CA bundle"),
        ({"verify_tls": "false"}, "key 'verify_tls' is the text 'false'"),
        ({"verify_tls": 1}, "key 'verify_tls' must be true, false or a CA bundle path"),
        ({"verify_tls": False, "client": "pyicatplus"}, "key 'client' is pyicatplus, which cannot take"),
    ]
    for entry, message in cases:
        with pytest.raises(ConfigurationError, match=re.escape(message)) as raised:
            env.registry(**entry)
        assert str(raised.value).startswith(f"{WHERE}: registry 'icatplus': key ")
        assert_no_secret(str(raised.value))
    assert_no_secret(caplog.text)


def test_secrets_stay_out_of_repr_describe_errors_and_logs(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = env.registry(password=None)  # password from $ICATPLUS_PASSWORD
    assert registry.resolve("LYS-0042") is not None
    env.server.sessions.clear()
    env.server.parcels.clear()
    env.server.investigations[("id23-1", "mx2532")][1]["id"] = 124  # the next fetch: another investigation
    env.clock.advance(DEFAULT_CACHE_TTL + 1)
    registry.resolve("LYS-0042")
    texts = [repr(registry), registry.describe(), str(registry.last), repr(registry._credentials)]
    assert_no_secret(*texts, caplog.text)
    stopped = env.registry(url="http://127.0.0.1:9", username=None)
    with pytest.raises(IcatPlusUnavailable) as raised:
        stopped.refresh()
    assert "***" in str(raised.value) or "/tracking/" not in str(raised.value)
    assert_no_secret(str(raised.value), caplog.text)


def test_the_configuration_example_builds(env: Env) -> None:
    from ruamel.yaml import YAML

    example = Path(__file__).resolve().parents[3] / "config_examples" / "tracker" / "icatplus_registry.yml"
    (tracker,) = YAML(typ="safe").load(example.read_text())
    (entry,) = [e for e in tracker["registries"] if e["type"] == "icatplus"]
    registry = IcatPlusRegistry.from_config(
        entry, str(example), redis=env.redis, beamline=tracker["beamline"]
    )
    env.made.append(registry)
    assert (registry.timeout, registry.cache_ttl, registry.barcode_fields) == (5.0, 600.0, ("name",))
    assert registry.describe().startswith("ICAT+ https://icatplus.esrf.fr")
