"""Security of the tracking service, against real ``sampletrack-service serve`` processes.

Fills the gaps test_service_api.py leaves (it covers 401 on three routes, 403 on writes, the
1 MiB 413 and the access log): here every route of the Flask app is walked (its ``url_map``,
checked against the OpenAPI document), so a route added later without a token check fails;
the beamline scope of each kind of token is checked on every read and write; tokens are shown
to be stored as hashes only (every table, and the database files themselves, on SQLite and on
PostgreSQL); size limits hold on a real server (chunked bodies too); and SQL is built from
parameters only (a source scan of the service, and hostile text in every parameter and path
segment on both databases, after which the tables are intact).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from service_fixtures import REPO, Service, issue_token, make_event, start_service

from bliss_sampletrack.service.storage import open_storage

pytest_plugins = ["service_fixtures"]

BASE = "/api/v1"
#: endpoints that answer without a token: they hold no data (api.py's documented decision)
PUBLIC = {"healthz", "openapi", "ui_redirect", "ui_index", "ui_asset", "root"}
PROTECTED = {"post_event", "post_batch", "list_events", "mounted", "history"}
PATH_VALUES = {"beamline": "id23-1", "barcode": "SEC-0001", "name": "app.js"}
MAX_BODY = 2048
MAX_BATCH_BODY = 16384


@dataclass(frozen=True)
class Route:
    endpoint: str
    method: str
    path: str  # with the base path and sample values for the path variables


def route_table() -> list[Route]:
    """Every (endpoint, method) of the application, from its ``url_map``."""
    from bliss_sampletrack.service.api import create_app
    from bliss_sampletrack.service.config import ServiceConfig

    with tempfile.TemporaryDirectory() as folder:
        storage = open_storage(f"sqlite:///{folder}/routes.db")
        storage.migrate()
        try:
            app = create_app(storage, ServiceConfig(validation_workers=0))
            adapter = app.url_map.bind("localhost")
            routes = []
            for rule in app.url_map.iter_rules():
                values = {name: PATH_VALUES[name] for name in rule.arguments}
                for method in sorted(rule.methods or ()):
                    path = adapter.build(rule.endpoint, values, method=method)
                    routes.append(Route(rule.endpoint, method, path))
            app.extensions["sampletrack"].close()
        finally:
            storage.close()
    return routes


@dataclass
class Secured:
    service: Service
    db_url: str
    writer: str  # read and write: id23-1 only
    other: str  # read and write: bm07
    reader_id23: str  # read only: id23-1
    reader: str  # read only: every beamline
    revoked: str  # was id23-1, revoked

    @property
    def root(self) -> str:
        return self.service.base_url[: -len(BASE)]

    def call(
        self, method: str, path: str, token: str | None, body: Any = None, **kwargs: Any
    ) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        return requests.request(
            method, self.root + path, data=data, headers=headers, timeout=30, allow_redirects=False, **kwargs
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("security")
    db_url = f"sqlite:///{workdir / 'tracking.db'}"
    tokens = {
        "writer": issue_token(db_url, ["id23-1"]),
        "other": issue_token(db_url, ["bm07"]),
        "reader_id23": issue_token(db_url, ["id23-1"], read_only=True),
        "reader": issue_token(db_url, [], read_only=True),
        "revoked": issue_token(db_url, ["id23-1"]),
    }
    with open_storage(db_url) as store:
        assert store.revoke_token(tokens["revoked"].split("_")[1])
    limits = {
        "SAMPLETRACK_SERVICE_MAX_BODY_BYTES": str(MAX_BODY),
        "SAMPLETRACK_SERVICE_MAX_BATCH_BODY_BYTES": str(MAX_BATCH_BODY),
    }
    service = start_service(db_url, workdir, env=limits)
    try:
        yield Secured(service, db_url, **tokens)
    finally:
        service.stop()


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's error answer: JSON ``{"error": {"code", "message", "fields"}}``."""
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return dict(body["error"])


def body_for(route: Route, beamline: str = "id23-1", barcode: str = "SEC-0001") -> Any:
    event = make_event(beamline=beamline, sample={"barcode": barcode})
    if route.endpoint == "post_event":
        return event
    if route.endpoint == "post_batch":
        return {"events": [event]}
    return None


# --- every route ---------------------------------------------------------------------------------
def test_every_route_is_classified_and_matches_the_openapi_document(secured: Secured) -> None:
    routes = route_table()
    endpoints = {r.endpoint for r in routes}
    # a new route must be added to one of the two sets here, deciding whether it needs a token
    assert endpoints == PUBLIC | PROTECTED, endpoints ^ (PUBLIC | PROTECTED)
    document = requests.get(secured.service.url("/openapi.json"), timeout=10).json()
    in_app = {(r.method, r.endpoint) for r in routes}
    documented = set()
    for template, operations in document["paths"].items():
        concrete = BASE + re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], template)
        for method, operation in operations.items():
            [endpoint] = [r.endpoint for r in routes if r.path == concrete and r.method == method.upper()]
            documented.add((method.upper(), endpoint))
            # every documented operation but /healthz declares the bearer scheme and its 401
            if template == "/healthz":
                assert operation["security"] == []
            else:
                assert operation.get("security", document["security"]) == [{"bearer": []}]
                assert "401" in operation["responses"]
    protected_operations = {(m, e) for m, e in in_app if e in PROTECTED and m not in ("HEAD", "OPTIONS")}
    assert protected_operations == documented - {("GET", "healthz")}


def bad_authorizations(secured: Secured) -> dict[str, dict[str, str]]:
    forged = secured.writer[:-1] + ("A" if secured.writer[-1] != "A" else "B")
    other_secret = secured.other.split("_", 2)[2]
    spliced = "_".join(secured.writer.split("_", 2)[:2] + [other_secret])  # writer's id, other's secret
    basic = base64.b64encode(b"user:" + secured.writer.encode()).decode()
    return {
        "none": {},
        "empty": {"Authorization": ""},
        "scheme only": {"Authorization": "Bearer"},
        "no scheme": {"Authorization": secured.writer},
        "basic": {"Authorization": f"Basic {basic}"},
        "not a token": {"Authorization": "Bearer not-a-token"},
        "unknown id": {"Authorization": "Bearer stk_0123456789_" + "A" * 43},
        "changed secret": {"Authorization": f"Bearer {forged}"},
        "another token's secret": {"Authorization": f"Bearer {spliced}"},
        "revoked": {"Authorization": f"Bearer {secured.revoked}"},
        "sql": {"Authorization": "Bearer ' OR '1'='1"},
        "cookie": {"Cookie": f"token={secured.writer}; session={secured.writer}"},
    }


def test_every_protected_route_refuses_a_missing_bad_or_revoked_token(secured: Secured) -> None:
    routes = [r for r in route_table() if r.endpoint in PROTECTED and r.method != "OPTIONS"]
    assert {r.method for r in routes} == {"GET", "HEAD", "POST"} and len(routes) == 8
    failures = []
    sent_ids = []
    for route in routes:
        for label, headers in bad_authorizations(secured).items():
            body = body_for(route)
            if isinstance(body, dict):
                sent_ids += [e["event_id"] for e in body.get("events", [body])]
            # the token may not come from the query string either
            response = secured.call(
                route.method,
                route.path,
                None,
                body,
                headers=dict(headers),
                params={"access_token": secured.writer},
            )
            where = f"{route.method} {route.path} ({label})"
            if response.status_code != 401:
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
                continue
            if not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
                failures.append(f"{where}: no WWW-Authenticate: Bearer")
            if route.method == "HEAD":
                continue
            error = assert_error(response, 401, "unauthorized")
            if secured.writer in json.dumps(error) or secured.revoked in json.dumps(error):
                failures.append(f"{where}: the answer repeats the token")
    assert failures == [], "\n".join(failures)
    # the same routes with a valid token are answered (the walk above did reach the handlers)
    for route in routes:
        response = secured.call(route.method, route.path, secured.writer, body_for(route))
        assert response.status_code in (200, 201), (route, response.text)
    # and nothing of what the refused requests carried was stored
    stored = secured.call("GET", BASE + "/events", secured.reader, params={"limit": 1000}).json()["events"]
    assert not {e["event_id"] for e in stored} & set(sent_ids)


def test_public_routes_answer_without_a_token_and_hold_no_data(secured: Secured) -> None:
    barcode = f"PUB-{uuid.uuid4().hex[:8]}"
    event = make_event(sample={"barcode": barcode})
    assert secured.call("POST", BASE + "/events", secured.writer, event).status_code == 201
    for route in route_table():
        if route.endpoint not in PUBLIC and route.method != "OPTIONS":
            continue
        response = secured.call(route.method, route.path, None)
        assert response.status_code in (200, 302), (route, response.status_code)
        for secret in (barcode, event["event_id"], secured.writer):
            assert secret not in response.text, (route, secret)
        if route.method == "OPTIONS":
            assert response.text == ""  # only the Allow header
    # a path out of the asset folder is no asset
    for name in ("..%2f..%2fapi.py", "%2e%2e%2f__init__.py", "__init__.py", "index.html%00.js"):
        response = secured.call("GET", f"{BASE}/ui/{name}", None)
        assert response.status_code == 404, (name, response.status_code)


# --- beamline scope ------------------------------------------------------------------------------
def test_beamline_scope_on_every_read_and_write(secured: Secured) -> None:
    shared = f"SCOPE-{uuid.uuid4().hex[:8]}"
    mine = make_event(
        beamline="id23-1", sample={"barcode": shared}, occurred_at="2026-06-01T10:00:00.000000Z"
    )
    theirs = make_event(
        beamline="bm07", sample={"barcode": shared}, occurred_at="2026-06-01T11:00:00.000000Z"
    )
    assert secured.call("POST", BASE + "/events", secured.writer, mine).status_code == 201
    assert secured.call("POST", BASE + "/events", secured.other, theirs).status_code == 201
    history = f"{BASE}/samples/{shared}/history"

    for token in (secured.writer, secured.reader_id23):
        # reads of bm07: refused when named, left out when not
        assert_error(
            secured.call("GET", BASE + "/events", token, params={"beamline": "bm07"}), 403, "forbidden"
        )
        assert_error(secured.call("GET", BASE + "/beamlines/bm07/mounted", token), 403, "forbidden")
        assert secured.call("HEAD", BASE + "/beamlines/bm07/mounted", token).status_code == 403
        listed = secured.call("GET", BASE + "/events", token, params={"limit": 1000}).json()["events"]
        assert listed and {e["beamline"] for e in listed} == {"id23-1"}
        by_sample = secured.call("GET", BASE + "/events", token, params={"sample": shared}).json()
        assert by_sample == {"events": [mine], "next_cursor": None}
        assert secured.call("GET", history, token).json() == {"events": [mine]}
        # a cursor taken from an every-beamline listing does not widen the scope
        page = secured.call(
            "GET", BASE + "/events", secured.reader, params={"sample": shared, "limit": 1}
        ).json()
        assert page["next_cursor"] and page["events"] == [mine]
        rest = secured.call(
            "GET", BASE + "/events", token, params={"cursor": page["next_cursor"], "limit": 1000}
        )
        assert "bm07" not in {e["beamline"] for e in rest.json()["events"]}
    # the every-beamline reader sees both
    assert secured.call("GET", history, secured.reader).json() == {"events": [mine, theirs]}
    assert secured.call("GET", BASE + "/beamlines/bm07/mounted", secured.reader).json() == {"mounted": theirs}

    # writes of bm07 by the id23-1 writer: refused, even a replay of bm07's own stored event
    foreign = make_event(beamline="bm07")
    assert_error(secured.call("POST", BASE + "/events", secured.writer, foreign), 403, "forbidden")
    assert_error(secured.call("POST", BASE + "/events", secured.writer, theirs), 403, "forbidden")
    batch = secured.call("POST", BASE + "/events/batch", secured.writer, {"events": [foreign, make_event()]})
    assert [r["status"] for r in batch.json()["results"]] == [403, 201]
    # read-only tokens write nothing, not even their own beamline
    for token in (secured.reader_id23, secured.reader):
        assert_error(secured.call("POST", BASE + "/events", token, make_event()), 403, "forbidden")
        results = secured.call("POST", BASE + "/events/batch", token, {"events": [make_event()]}).json()
        assert [r["status"] for r in results["results"]] == [403]
    stored = secured.call("GET", BASE + "/events", secured.reader, params={"limit": 1000}).json()["events"]
    assert foreign["event_id"] not in {e["event_id"] for e in stored}


def test_a_conflict_tells_nothing_of_another_beamlines_event(secured: Secured) -> None:
    """Reusing the event_id of a bm07 event on id23-1 is a 409 (the id is taken) that does not say
    which fields differ: that would let the id23-1 token probe the bm07 event field by field."""
    theirs = make_event(beamline="bm07", sample={"barcode": "BM07-SECRET-1"}, session="bm07_session")
    assert secured.call("POST", BASE + "/events", secured.other, theirs).status_code == 201
    probe = {**theirs, "beamline": "id23-1", "sample": {**theirs["sample"], "barcode": "GUESS-1"}}
    for answer in (
        secured.call("POST", BASE + "/events", secured.writer, probe),
        secured.call("POST", BASE + "/events/batch", secured.writer, {"events": [probe]}),
    ):
        if answer.status_code == 200:  # the batch: the error is in the item's result
            [result] = answer.json()["results"]
            assert result["status"] == 409
            error = result["error"]
        else:
            error = assert_error(answer, 409, "conflict")
        assert error["fields"] == {"event_id": "already used by another event"}
        assert "BM07-SECRET-1" not in json.dumps(error) and "bm07" not in json.dumps(error)
    # its own event's conflict still names the differing fields
    own = make_event(beamline="id23-1")
    assert secured.call("POST", BASE + "/events", secured.writer, own).status_code == 201
    error = assert_error(
        secured.call("POST", BASE + "/events", secured.writer, {**own, "message": "changed"}), 409, "conflict"
    )
    assert set(error["fields"]) == {"message"}


# --- tokens at rest ------------------------------------------------------------------------------
def _rows(store: Any) -> list[tuple[Any, ...]]:
    """Every row of every table of the database (read directly, not through the service)."""
    if store.dialect == "sqlite":
        tables = [r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type = 'table'")]
    else:
        tables = [
            r[0] for r in store._read("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ]
    assert {"events", "tokens", "schema_version"} <= set(tables)
    rows = []
    for table in tables:
        assert re.fullmatch(r"[a-z_]+", table)  # a catalogue name, quoted below all the same
        rows += [(table, *row) for row in store._read(f'SELECT * FROM "{table}"')]
    return rows


def _database_files(db_url: str, request: pytest.FixtureRequest) -> list[Path]:
    """The files that hold the database: SQLite's file and its WAL; PostgreSQL's database folder,
    WAL and server log (after a CHECKPOINT, so that the table pages are on disk)."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
    import psycopg

    cluster = request.getfixturevalue("pg_cluster")
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    with psycopg.connect(db_url, autocommit=True) as conn:
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    folders = [cluster.data / "base" / str(oid), cluster.data / "pg_wal"]
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    return [*files, cluster.root / "server.log"]


def test_tokens_are_stored_as_hashes_only(
    db_url: str, request: pytest.FixtureRequest, service_factory: Any
) -> None:
    token = issue_token(db_url, ["id23-1"], label="at rest")
    token_id, secret = token.split("_", 2)[1:]
    service = service_factory(db_url)
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        requests.post(service.url("/events"), json=make_event(), headers=headers, timeout=30).status_code
        == 201
    )
    near_miss = {"Authorization": f"Bearer {token[:-1]}{'A' if token[-1] != 'A' else 'B'}"}
    assert requests.get(service.url("/events"), headers=near_miss, timeout=30).status_code == 401
    service.stop()

    expected_hash = hashlib.sha256(token.encode()).hexdigest()
    with open_storage(db_url) as store:
        rows = _rows(store)
        [record] = [t for t in store.list_tokens() if t.token_id == token_id]
    assert record.token_hash == expected_hash
    cells = [str(cell) for row in rows for cell in row]
    assert expected_hash in cells  # the dump did read the tokens table
    assert not [c for c in cells if secret in c or token in c]
    files = _database_files(db_url, request)
    found_hash = False
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data, f"the token's secret is in {path}"
        found_hash |= expected_hash.encode() in data
    assert found_hash, f"the stored hash is in none of {files}: the scan read the wrong files"


# --- size limits ---------------------------------------------------------------------------------
def test_size_limits_on_a_real_server(secured: Secured) -> None:
    url = secured.service.url("/events")
    headers = {"Authorization": f"Bearer {secured.writer}", "Content-Type": "application/json"}
    big = make_event(message="x" * 2000)
    assert len(json.dumps(big)) > MAX_BODY
    data = json.dumps(big).encode()
    assert_error(requests.post(url, data=data, headers=headers, timeout=30), 413, "payload_too_large")
    # chunked, so with no Content-Length to refuse it by: counted while read
    chunks = (data[i : i + 1000] for i in range(0, len(data), 1000))
    chunked = requests.post(url, data=chunks, headers=headers, timeout=30)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error(chunked, 413, "payload_too_large")
    # the token comes first: no token and a big body is a 401
    assert_error(
        requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=30),
        401,
        "unauthorized",
    )
    # just under the limit is accepted
    fits = make_event()
    fits["message"] = "x" * (MAX_BODY - len(json.dumps(fits)) - 10)
    assert MAX_BODY - 20 < len(json.dumps(fits)) < MAX_BODY
    assert requests.post(url, data=json.dumps(fits), headers=headers, timeout=30).status_code == 201
    # a batch has its own (larger) limit
    batch_url = secured.service.url("/events/batch")
    events = [make_event(message="y" * 1000) for _ in range(MAX_BATCH_BODY // 1000 + 2)]
    batch = json.dumps({"events": events})
    assert len(batch) > MAX_BATCH_BODY
    assert_error(requests.post(batch_url, data=batch, headers=headers, timeout=30), 413, "payload_too_large")
    half = json.dumps({"events": events[: len(events) // 3]})
    assert requests.post(batch_url, data=half, headers=headers, timeout=30).status_code == 200
    # far over every limit: waitress cuts it off itself (still a 413), the service stays up
    absurd = b"z" * (4 * MAX_BATCH_BODY)
    assert requests.post(batch_url, data=absurd, headers=headers, timeout=30).status_code == 413
    # huge headers and query strings are refused, never a server error
    huge_header = {"Authorization": "Bearer " + "a" * 300_000}
    assert 400 <= requests.get(url, headers=huge_header, timeout=30).status_code < 500
    huge_query = requests.get(url, headers=headers, params={"sample": "S" * 100_000}, timeout=30)
    assert 400 <= huge_query.status_code < 500
    # nothing over a limit was stored
    stored = secured.call("GET", BASE + "/events", secured.reader, params={"limit": 1000}).json()["events"]
    stored_ids = {e["event_id"] for e in stored}
    assert big["event_id"] not in stored_ids
    # of the refused batch's events, only those the smaller batch sent again are stored
    assert stored_ids & {e["event_id"] for e in events} == {e["event_id"] for e in events[: len(events) // 3]}
    assert requests.get(secured.service.url("/healthz"), timeout=10).status_code == 200


# --- SQL only through parameters -----------------------------------------------------------------
SERVICE_SOURCES = REPO / "bliss_sampletrack" / "service"
SQL_TEXT = re.compile(
    r"SELECT\s.*FROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|PRAGMA\s|COPY\s|CREATE\s|DROP\s"
    r"|ALTER\s|\bWHERE\b|\bAND\b|\bIN\s*\(",
    re.S,
)
#: the only values that may be put into SQL text, by module: none is a value from a request
ALLOWED = {
    "storage/base.py": {
        "', '.join('?' * len(query.beamlines))",  # placeholders, one per value
        "', '.join('?' * len(beamlines))",
        "self._TOKEN_COLUMNS",  # a class constant
        '" AND ".join(where)',  # where: a list of literal conditions with placeholders
    },
    "storage/postgres.py": {"columns"},  # a literal column list
    "storage/sqlite.py": {"self.synchronous"},  # checked against SYNCHRONOUS_MODES at init
    "devdb.py": {"name"},  # CREATE DATABASE (no parameters in DDL): letters, digits and _ only
}


def sql_built_from_values(source: str, allowed: set[str]) -> list[str]:
    """SQL text built at run time from anything but the allowed expressions: f-strings, ``%``,
    ``.format()`` and ``+`` on a string that looks like SQL."""
    problems = []
    tree = ast.parse(source)

    def sqlish(node: ast.AST) -> bool:
        text = "".join(
            n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        )
        return bool(SQL_TEXT.search(text))

    for node in ast.walk(tree):
        segment = ast.get_source_segment(source, node) or ""
        if isinstance(node, ast.JoinedStr) and sqlish(node):
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    inner = ast.get_source_segment(source, value.value)
                    if inner not in allowed:
                        problems.append(f"line {node.lineno}: f-string puts {inner} into SQL")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and sqlish(node.left):
            problems.append(f"line {node.lineno}: %-formatted SQL: {segment[:80]}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and sqlish(node):
            for side in (node.left, node.right):
                side_text = ast.get_source_segment(source, side)
                literal = isinstance(side, ast.Constant) or (isinstance(side, ast.BinOp) and sqlish(side))
                if not literal and not isinstance(side, ast.JoinedStr) and side_text not in allowed:
                    problems.append(f"line {node.lineno}: SQL concatenated with {side_text}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and sqlish(node.func.value)
        ):
            problems.append(f"line {node.lineno}: .format() on SQL: {segment[:80]}")
    return problems


def test_the_checker_finds_sql_built_from_values() -> None:
    bad = (
        "def f(cur, barcode, n):\n"
        "    cur.execute(f\"SELECT body FROM events WHERE barcode = '{barcode}'\")\n"
        '    cur.execute("DELETE FROM events WHERE seq = %d" % n)\n'
        "    cur.execute(\"SELECT * FROM tokens WHERE token_id = '{}'\".format(barcode))\n"
        '    cur.execute("SELECT body FROM events WHERE barcode = \'" + barcode + "\'")\n'
    )
    problems = sql_built_from_values(bad, set())
    assert len(problems) == 4, problems
    good = 'def f(cur, b):\n    cur.execute("SELECT body FROM events WHERE barcode = ?", (b,))\n'
    assert sql_built_from_values(good, set()) == []


def test_sql_is_never_built_from_values() -> None:
    checked = []
    for path in sorted(SERVICE_SOURCES.rglob("*.py")):
        name = path.relative_to(SERVICE_SOURCES).as_posix()
        problems = sql_built_from_values(path.read_text(), ALLOWED.get(name, set()))
        assert problems == [], f"{name}: {problems}"
        checked.append(name)
    assert {"storage/base.py", "storage/sqlite.py", "storage/postgres.py", "api.py"} <= set(checked)
    # the allowed run-time pieces are not values: an unknown SQLite option is refused up front
    from bliss_sampletrack.service.storage import StorageError

    with tempfile.TemporaryDirectory() as folder, pytest.raises(StorageError, match="synchronous"):
        open_storage(f"sqlite:///{folder}/x.db?synchronous=OFF;DROP TABLE events")


HOSTILE = [
    "'; DROP TABLE events; --",
    "' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM tokens",
    "') UNION SELECT token_hash, token_id, 1 FROM tokens --",
    "%",
    "_",
    "?",
    "$1",
    "%s",
    "\\",
    "\x00",
    "id23-1' --",
]


def test_hostile_values_in_every_parameter_and_path_segment(db_url: str, service_factory: Any) -> None:
    writer = issue_token(db_url, ["id23-1"])
    reader = issue_token(db_url, [], read_only=True)
    service = service_factory(db_url)
    root = service.base_url[: -len(BASE)]
    auth = {"Authorization": f"Bearer {reader}"}
    seeded = [
        make_event(sample={"barcode": f"SEED-{i}"}, occurred_at=f"2026-06-0{i + 1}T00:00:00.000000Z")
        for i in range(3)
    ]
    for event in seeded:
        answer = requests.post(
            service.url("/events"), json=event, headers={"Authorization": f"Bearer {writer}"}, timeout=30
        )
        assert answer.status_code == 201
    with open_storage(db_url) as store:
        before = (store.count_events(), [t.token_hash for t in store.list_tokens()], store.schema_version())

    failures = []

    def check(response: requests.Response, where: str) -> None:
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.text[:200]}")
        elif response.status_code == 200 and "events" in response.json():
            # a hostile filter matches nothing: an injected "OR 1=1" would return every event
            if response.json()["events"]:
                failures.append(f"{where}: {len(response.json()['events'])} event(s) returned")
        elif response.status_code == 200 and response.json().get("mounted") is not None:
            failures.append(f"{where}: a mounted event returned")
        elif response.status_code not in (200, 404, 422):
            failures.append(f"{where}: {response.status_code}")

    for value in HOSTILE:
        for name in ("beamline", "sample", "since", "until", "limit", "cursor"):
            check(
                requests.get(service.url("/events"), params={name: value}, headers=auth, timeout=30),
                f"{name}={value!r}",
            )
        check(
            requests.get(service.url("/events"), params={value: "1"}, headers=auth, timeout=30),
            f"name {value!r}",
        )
        segment = quote(value, safe="")
        check(
            requests.get(f"{service.url('/beamlines')}/{segment}/mounted", headers=auth, timeout=30),
            f"mounted {value!r}",
        )
        check(
            requests.get(f"{service.url('/samples')}/{segment}/history", headers=auth, timeout=30),
            f"history {value!r}",
        )
        raw = f"{root}{BASE}/samples/{value}/history"  # unencoded, as a careless client sends it
        check(requests.get(raw, headers=auth, timeout=30), f"raw history {value!r}")
    assert failures == [], "\n".join(failures)

    # hostile text inside an event is data: stored and returned exactly as sent
    sent = []
    for value in HOSTILE:
        text_barcode = value if value.isprintable() and value.strip() == value and value else "PLAIN-1"
        event = make_event(
            session=value, message=value, proposal=value, sample={"barcode": text_barcode, "name": value}
        )
        answer = requests.post(
            service.url("/events"), json=event, headers={"Authorization": f"Bearer {writer}"}, timeout=30
        )
        assert answer.status_code == 201, (value, answer.text)
        sent.append(event)
    for event in sent:
        barcode = quote(event["sample"]["barcode"], safe="")
        history = requests.get(f"{service.url('/samples')}/{barcode}/history", headers=auth, timeout=30)
        assert event in history.json()["events"]

    with open_storage(db_url) as store:
        assert store.count_events() == before[0] + len(sent)
        assert [t.token_hash for t in store.list_tokens()] == before[1]
        assert store.schema_version() == before[2]
        _rows(store)  # every table is still there
