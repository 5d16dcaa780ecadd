"""The WSGI application: every endpoint of the tracking contract, plus the OpenAPI document and
the web page, under a configurable base path (default ``/api/v1``).

Checks run in the contract's order: token (``401``), body or parameters (``422``; ``413`` for a
body over the size limit or a batch over 1000 events), beamline scope (``403``), then idempotency
(``200`` replay / ``409`` conflict) or ``201``.

Decisions where the contract leaves room (also in the report to the team):
- ``GET /beamlines/{b}/mounted`` answers from the beamline's latest event by ``occurred_at`` (ties:
  arrival order), whatever its ``status``: a latest ``mounted`` event (even ``ERROR``, a doubtful
  mount) is returned, a latest ``unmounted`` (even ``ERROR``, an unobserved unmount) gives null.
- ``POST /events/batch`` processes events in order in one transaction; a duplicate ``event_id``
  later in the same batch is a replay (``200``) or a conflict (``409``) of the earlier one. Each
  result's ``error`` is null for 200/201, else the error object (``code``, ``message``,
  ``fields``); ``event_id`` is echoed as sent (null when it was not a string).
- A batch body with keys besides ``events`` is a ``422``; an empty ``events`` list is a ``200``
  with no results.
- Body limits: 1 MiB for ``POST /events``, 16 MiB for a batch (``max_body_bytes``,
  ``max_batch_body_bytes``); over them, ``413``. The token is checked before the size.
- ``GET /openapi.json``, the web page (``/ui/``) and ``/healthz`` need no token: they hold no data.
- Storage that cannot answer now (locked, connection lost) is a ``503`` with ``Retry-After``,
  which the plugin retries.
- Unknown routes and methods answer the same JSON error shape (``404``, ``405``).

Elsewhere: what each kind of token may read (``auth``), query parameters and the cursor
(``params``), what "identical body" means (``events``), why large batches are validated in worker
processes (``validation``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Flask, Response, g, redirect, request
from werkzeug.exceptions import HTTPException

from bliss_sampletrack.errors import InvalidEventError
from bliss_sampletrack.service import openapi, web
from bliss_sampletrack.service.auth import Authenticator, Principal
from bliss_sampletrack.service.config import ServiceConfig
from bliss_sampletrack.service.events import differing_fields, prepare_event
from bliss_sampletrack.service.params import (
    check_barcode,
    check_beamline,
    encode_cursor,
    parse_list_parameters,
)
from bliss_sampletrack.service.problems import (
    ApiError,
    forbidden,
    invalid_event,
    invalid_request,
    too_large,
)
from bliss_sampletrack.service.storage import (
    EventQuery,
    InsertOutcome,
    InsertResult,
    NewEvent,
    SqlStorage,
    StorageUnavailable,
)
from bliss_sampletrack.service.validation import Validator

log = logging.getLogger(__name__)
access_log = logging.getLogger(__name__ + ".access")

MAX_BATCH = 1000
JSON = "application/json"
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def json_response(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(text, status=status, mimetype=JSON, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class TrackingApi:
    """The request handlers (one instance per application)."""

    def __init__(self, storage: SqlStorage, config: ServiceConfig) -> None:
        self.storage = storage
        self.config = config
        self.auth = Authenticator(storage)
        self.validator = Validator(config.validation_workers)

    def close(self) -> None:
        """Stop the validation workers (the storage belongs to the caller)."""
        self.validator.close()

    # --- helpers -------------------------------------------------------------------------------
    def principal(self) -> Principal:
        principal = self.auth.authenticate(request.headers.get("Authorization"))
        g.token_id = principal.token_id  # the public id only, for the access log
        return principal

    def read_json(self, limit: int) -> Any:
        length = request.content_length
        if length is not None and length > limit:
            raise too_large(f"the body is {length} bytes; at most {limit} are accepted")
        data = request.stream.read(limit + 1)
        if len(data) > limit:
            raise too_large(f"the body is over {limit} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid_request(
                "the body is not UTF-8", {"(body)": f"byte {exc.start} is not UTF-8"}
            ) from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            problem = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            raise invalid_request("the body is not JSON", {"(body)": f"not JSON: {problem}"[:300]}) from None

    @staticmethod
    def check_write(principal: Principal, beamline: str) -> None:
        if not principal.can_write_to(beamline):
            raise forbidden(
                f"this token may not write events of beamline {beamline!r} "
                f"(token {principal.token_id}: {principal.describe_scope()})",
                {"beamline": "not in this token's write scope"},
            )

    @staticmethod
    def check_read(principal: Principal, beamline: str) -> None:
        if not principal.can_read(beamline):
            raise forbidden(
                f"this token may not read beamline {beamline!r} "
                f"(token {principal.token_id}: {principal.describe_scope()})",
                {"beamline": "not in this token's read scope"},
            )

    @staticmethod
    def conflict(result: InsertResult, event: NewEvent, principal: Principal) -> ApiError:
        stored_beamline = json.loads(result.stored_body).get("beamline")
        if not isinstance(stored_beamline, str) or not principal.can_read(stored_beamline):
            # the stored event is another beamline's: which of its fields differ would let this
            # token probe its content, so the answer says only that the event_id is taken
            return ApiError(
                409,
                "conflict",
                f"event_id {event.event_id} is already used by an event this token may not read; "
                "an event_id may only be replayed with an identical body",
                {"event_id": "already used by another event"},
            )
        return ApiError(
            409,
            "conflict",
            f"event {event.event_id} is already stored with a different body; an event_id may only "
            "be replayed with an identical body",
            differing_fields(result.stored_body, event.body),
        )

    # --- endpoints -----------------------------------------------------------------------------
    def healthz(self) -> Response:
        return json_response('{"status":"ok"}')

    def post_event(self) -> Response:
        principal = self.principal()
        data = self.read_json(self.config.max_body_bytes)
        try:
            event = prepare_event(data)
        except InvalidEventError as exc:
            raise invalid_event(exc.fields) from None
        self.check_write(principal, event.beamline)
        [result] = self.storage.insert_events([event], principal.token_id)
        if result.outcome is InsertOutcome.CONFLICT:
            raise self.conflict(result, event, principal)
        status = 201 if result.outcome is InsertOutcome.CREATED else 200
        return json_response('{"event":' + result.stored_body + "}", status)

    def post_batch(self) -> Response:
        principal = self.principal()
        data = self.read_json(self.config.max_batch_body_bytes)
        shape = 'the body must be {"events": [event, ...]} with at most 1000 events'
        if not isinstance(data, dict):
            raise invalid_request(shape, {"(body)": "must be a JSON object with one key, events"})
        problems = {
            key[:64]: "unexpected field: the body has only 'events'" for key in data if key != "events"
        }
        if not isinstance(data.get("events"), list):
            problems["events"] = "required: a list of events"
        if problems:
            raise invalid_request(shape, problems)
        items: list[Any] = data["events"]
        if len(items) > MAX_BATCH:
            raise too_large(f"the batch has {len(items)} events; at most {MAX_BATCH} are accepted")
        results: list[dict[str, Any] | None] = [None] * len(items)
        pending: list[tuple[int, NewEvent]] = []
        for index, (item, event) in enumerate(zip(items, self.validator.prepare_many(items), strict=True)):
            event_id = item.get("event_id") if isinstance(item, dict) else None
            event_id = event_id if isinstance(event_id, str) else None
            if isinstance(event, InvalidEventError):
                results[index] = self._result(event_id, invalid_event(event.fields))
                continue
            try:
                self.check_write(principal, event.beamline)
            except ApiError as exc:
                results[index] = self._result(event_id, exc)
                continue
            pending.append((index, event))
        stored = self.storage.insert_events([event for _, event in pending], principal.token_id)
        for (index, event), result in zip(pending, stored, strict=True):
            event_id = items[index]["event_id"]
            if result.outcome is InsertOutcome.CONFLICT:
                results[index] = self._result(event_id, self.conflict(result, event, principal))
            else:
                status = 201 if result.outcome is InsertOutcome.CREATED else 200
                results[index] = {"event_id": event_id, "status": status, "error": None}
        return json_response(dumps({"results": results}))

    @staticmethod
    def _result(event_id: str | None, error: ApiError) -> dict[str, Any]:
        return {"event_id": event_id, "status": error.status, "error": error.payload()["error"]}

    def list_events(self) -> Response:
        principal = self.principal()
        params = parse_list_parameters(request.args.to_dict(flat=False))
        if params.beamline is not None:
            self.check_read(principal, params.beamline)
            beamlines: tuple[str, ...] | None = (params.beamline,)
        else:
            beamlines = principal.read_scope
        rows = self.storage.query_events(
            EventQuery(
                beamlines=beamlines,
                barcode=params.sample,
                since_us=params.since_us,
                until_us=params.until_us,
                after=params.after,
                limit=params.limit,
            )
        )
        page = rows[: params.limit]
        cursor = encode_cursor(page[-1].occurred_us, page[-1].seq) if len(rows) > params.limit else None
        body = '{"events":[' + ",".join(row.body for row in page) + '],"next_cursor":' + dumps(cursor) + "}"
        return json_response(body)

    def mounted(self, beamline: str) -> Response:
        principal = self.principal()
        check_beamline(beamline)
        self.check_read(principal, beamline)
        latest = self.storage.latest_event(beamline)
        mounted = latest[1] if latest is not None and latest[0] == "mounted" else "null"
        return json_response('{"mounted":' + mounted + "}")

    def history(self, barcode: str) -> Response:
        principal = self.principal()
        barcode = check_barcode(barcode, "barcode")
        bodies = self.storage.history(barcode, principal.read_scope)
        return json_response('{"events":[' + ",".join(bodies) + "]}")


def create_app(storage: SqlStorage, config: ServiceConfig | None = None) -> Flask:
    """The WSGI application for ``storage`` (migrated beforehand: see ``storage.migrate()``)."""
    config = config or ServiceConfig()
    api = TrackingApi(storage, config)
    base = config.base_path
    app = Flask(__name__, static_folder=None)
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = None  # limits are per endpoint, in TrackingApi.read_json
    app.extensions["sampletrack"] = api

    app.add_url_rule(f"{base}/healthz", "healthz", api.healthz, methods=["GET"])
    app.add_url_rule(f"{base}/events", "post_event", api.post_event, methods=["POST"])
    app.add_url_rule(f"{base}/events/batch", "post_batch", api.post_batch, methods=["POST"])
    app.add_url_rule(f"{base}/events", "list_events", api.list_events, methods=["GET"])
    app.add_url_rule(f"{base}/beamlines/<beamline>/mounted", "mounted", api.mounted, methods=["GET"])
    app.add_url_rule(f"{base}/samples/<path:barcode>/history", "history", api.history, methods=["GET"])

    openapi_text = dumps(openapi.build_document(base))
    app.add_url_rule(f"{base}/openapi.json", "openapi", lambda: json_response(openapi_text), methods=["GET"])
    web.register(app, base)
    if base:
        app.add_url_rule("/", "root", lambda: redirect(f"{base}/ui/"), methods=["GET"])

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _access_log(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        started = g.get("started")
        elapsed = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        # path only: no query string, no header (the token lives in a header)
        access_log.info(
            "%s %s %d %.1f ms token=%s",
            request.method,
            request.path[:200],
            response.status_code,
            elapsed,
            g.get("token_id", "-"),
        )
        return response

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return json_response(error.to_json(), error.status, dict(error.headers))

    @app.errorhandler(StorageUnavailable)
    def _unavailable(error: StorageUnavailable) -> Response:
        log.warning("storage unavailable on %s %s: %s", request.method, request.path[:200], error)
        problem = ApiError(503, "unavailable", "the database cannot answer now; retry later")
        return json_response(problem.to_json(), 503, {"Retry-After": "2"})

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        problem = ApiError(status, _HTTP_CODES.get(status, "http_error"), error.description or error.name)
        headers = {k: v for k, v in error.get_headers() if k.lower() == "allow"}
        return json_response(problem.to_json(), status, headers)

    @app.errorhandler(Exception)
    def _internal_error(error: Exception) -> Response:
        # the WSGI top level: a bug becomes a logged 500 (the traceback, never a header or body)
        log.error(
            "unhandled %s on %s %s",
            type(error).__name__,
            request.method,
            request.path[:200],
            exc_info=error,
        )
        problem = ApiError(500, "internal_error", "internal error; the service log has the details")
        return json_response(problem.to_json(), 500)

    return app
