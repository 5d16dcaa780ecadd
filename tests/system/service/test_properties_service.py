"""Property-based tests of the tracking service's own request parsing, pure and over HTTP.

``test_service_fuzz.py`` drives the whole API from its OpenAPI document (schemathesis); these
tests aim at the service's parsers with values a schema-driven fuzzer rarely makes: unknown and
repeated query parameters, near-miss timestamps and cursors, no-read barcodes, odd path segments
and ``Authorization`` headers.

What they prove, for any input:
- ``parse_list_parameters`` returns parameters within their documented ranges, or raises a
  ``422`` naming every bad parameter (and nothing else), never another exception;
- the real service (a ``sampletrack-service serve`` process on SQLite, loopback) answers
  ``200`` or a ``4xx`` with the JSON error shape and a message, never a ``5xx``, and agrees
  with the pure parser;
- a cursor it hands out decodes to the position it encodes.

A failure prints the falsifying example (hypothesis); run again with it to reproduce.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_fixtures import Service, issue_token, start_service

from bliss_sampletrack.core.barcode import is_no_read, validate_barcode
from bliss_sampletrack.service.params import (
    LIST_PARAMETERS,
    MAX_LIMIT,
    decode_cursor,
    encode_cursor,
    parse_list_parameters,
)
from bliss_sampletrack.service.problems import ApiError

pytest_plugins = ["service_fixtures"]

PURE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HTTP = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
INT64 = 1 << 63

# --- query values: plausible, near misses and garbage ----------------------------------------------
timestamps = st.one_of(
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z"),
    st.sampled_from(
        [
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00 01:00",  # a "+" sent unencoded
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-23:59",
            "2026-02-30T10:00:00Z",
            "2026-11-24T10:00:00Z\n",
        ]
    ),
)
cursors = st.one_of(
    st.tuples(st.integers(-INT64, INT64 - 1), st.integers(0, INT64 - 1)).map(lambda p: encode_cursor(*p)),
    st.text(max_size=40),
    st.sampled_from(["djE6MTox", "v1:1:1", "djE6LTE6LTE", "====", "djE6OTk5OTk5OTk5OTk5OTk5OTk5OTk6MQ"]),
)
PARAMETER_VALUES: dict[str, st.SearchStrategy[str]] = {
    "beamline": st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,33}\Z") | st.text(max_size=10),
    "sample": st.sampled_from(["ERROR", "noread", " BC-1", "BC-1", ""]) | st.text(max_size=70),
    "since": timestamps | st.text(max_size=10),
    "until": timestamps,
    "limit": st.integers(-5, MAX_LIMIT + 5).map(str) | st.sampled_from(["", "1e3", "0x10", "٣", "10 "]),
    "cursor": cursors,
}
names = (
    st.sampled_from(LIST_PARAMETERS) | st.sampled_from(["barcode", "Limit", "x" * 80]) | st.text(max_size=8)
)


@st.composite
def query_args(draw: st.DrawFn) -> dict[str, list[str]]:
    """name -> every value given, as Flask's ``request.args.to_dict(flat=False)`` has them."""
    args: dict[str, list[str]] = {}
    for name in draw(st.lists(names, max_size=5, unique=True)):
        values = PARAMETER_VALUES.get(name, st.text(max_size=10))
        args[name] = draw(st.lists(values, min_size=1, max_size=2 if draw(st.integers(0, 5)) == 0 else 1))
    return args


def expected_bad(args: dict[str, list[str]]) -> set[str]:
    """The parameters a reader of the docs (service/params.py) expects to be refused."""
    return {name for name, values in args.items() if name not in LIST_PARAMETERS or len(values) > 1}


# --- the pure parser ------------------------------------------------------------------------------
@PURE
@given(query_args())
def test_list_parameters_are_in_range_or_a_422_naming_each_bad_one(args: dict[str, list[str]]) -> None:
    try:
        params = parse_list_parameters(args)
    except ApiError as exc:
        assert exc.status == 422 and exc.code == "invalid_request" and exc.message
        assert exc.fields and set(exc.fields) <= {name[:64] for name in args}, (args, exc.fields)
        assert {name[:64] for name in expected_bad(args)} <= set(exc.fields), (args, exc.fields)
        return
    assert not expected_bad(args)
    assert 1 <= params.limit <= MAX_LIMIT
    if params.sample is not None:
        assert validate_barcode(params.sample) == params.sample and not is_no_read(params.sample)
    for bound in (params.since_us, params.until_us):
        assert bound is None or isinstance(bound, int)
    if params.after is not None:
        assert -INT64 <= params.after[0] < INT64 and 0 <= params.after[1] < INT64


@PURE
@given(st.integers(-INT64, INT64 - 1), st.integers(0, INT64 - 1))
def test_a_cursor_decodes_to_the_position_it_encodes(occurred_us: int, seq: int) -> None:
    assert decode_cursor(encode_cursor(occurred_us, seq)) == (occurred_us, seq)


@PURE
@given(cursors | st.binary(max_size=30).map(lambda b: b.decode("latin-1")))
def test_any_cursor_text_is_a_position_or_a_422(text: str) -> None:
    try:
        occurred_us, seq = decode_cursor(text)
    except ApiError as exc:
        assert exc.status == 422 and "cursor" in exc.fields
    else:
        assert -INT64 <= occurred_us < INT64 and 0 <= seq < INT64


# --- the real service ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    workdir = tmp_path_factory.mktemp("service_properties")
    db_url = f"sqlite:///{workdir / 'tracking.db'}"
    reader = issue_token(db_url, [], read_only=True, label="properties")
    started = start_service(db_url, workdir)
    try:
        yield started, reader
    finally:
        started.stop()


def check_answer(response: requests.Response) -> None:
    assert response.status_code < 500, (response.request.url, response.status_code, response.text)
    if response.status_code == 400 and response.headers["Content-Type"].startswith("text/plain"):
        # malformed HTTP (e.g. a DEL in a header) is refused by the HTTP server (waitress) before
        # the application sees it: plain text, but still a 4xx saying what is wrong
        assert "Invalid" in response.text or "Bad Request" in response.text, response.text
        return
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        error = response.json()["error"]
        assert set(error) == {"code", "message", "fields"} and error["message"], error


@HTTP
@given(query_args())
def test_any_query_is_answered_200_or_4xx_as_the_parser_says(
    service: tuple[Service, str], args: dict[str, list[str]]
) -> None:
    server, token = service
    pairs = [(name, value) for name, values in args.items() for value in values]
    response = requests.get(
        server.url("/events") + "?" + urlencode(pairs),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    check_answer(response)
    received = {k: [v for n, v in pairs if n == k] for k, _ in pairs}  # (what Flask decodes)
    try:
        parse_list_parameters(received)
    except ApiError as exc:
        assert response.status_code == 422 and response.json()["error"]["fields"] == dict(exc.fields)
    else:
        assert response.status_code == 200, response.text


segments = st.text(max_size=30) | st.sampled_from(
    ["ERROR", "id23-1", "ID23", "..", "%", "a/b", " ", "x" * 300]
)


@HTTP
@given(segments, st.sampled_from(["/beamlines/{}/mounted", "/samples/{}/history"]))
def test_any_path_segment_is_answered_200_or_4xx(
    service: tuple[Service, str], segment: str, route: str
) -> None:
    server, token = service
    url = server.url(route.format(quote(segment, safe="")))
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    check_answer(response)
    if route.startswith("/samples") and segment and is_no_read(segment):
        assert response.status_code == 422  # a no-read is never looked up as a sample


@HTTP
@given(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60).map(str.lstrip)
    | st.sampled_from(["Bearer", "Bearer ", "bearer x", "Basic abc", "Bearer st_x.y", "Bearer " + "a" * 5000])
)
def test_any_authorization_header_is_a_401_never_a_5xx(service: tuple[Service, str], header: str) -> None:
    server, _ = service
    response = requests.get(server.url("/events"), headers={"Authorization": header}, timeout=30)
    check_answer(response)
    assert response.status_code in (400, 401, 431), response.text


def test_the_service_log_has_no_internal_error(service: tuple[Service, str]) -> None:
    # runs after the tests above (file order): any unexpected exception would be logged
    log = service[0].log_text()
    assert "Traceback" not in log and "internal error" not in log.lower(), log[-3000:]
