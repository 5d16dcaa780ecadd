"""The tracking service's REST contract client (``POST /events``, ``POST /events/batch``), and
the no-op client of beamlines without a service.

A 200/201 counts only with the contract's body: ``{"event": ...}`` with the event's ``event_id``
(one event), ``{"results": [...]}`` with one integer ``status`` per event, in order (a batch).
Anything else (a proxy's HTML page, text, an empty or other body) is :class:`RetryLater`: a
gateway answering 200 in the service's place must never make an event count as delivered.

Every answer and what becomes of the event (RETRY: :class:`RetryLater`, the loop retries with
capped backoff, later events wait, ``last_error`` says why; DEAD: a dead letter with the text
shown, the cursor moves on; the full table with examples is ``docs/delivery-answers.md``, each
row tested against a real server in ``tests/system/delivery/test_answer_table.py``)::

    answer                                       verdict   text kept (last_error / dead letter)
    200/201 + the contract's body                DELIVERED
    connection refused, reset (before or         RETRY     "<url>/events[/batch]: ConnectionError:
      mid-answer), no answer within timeout                 ..." / "ChunkedEncodingError: ..." /
                                                            "no answer within 10 s"
    200 not the contract's body (HTML, text,     RETRY     "<url>/events answered 200 without the
      empty, other JSON, truncated)                         stored event: 200 <body>"; a batch:
                                                            "... without a results list: ..."
    another 2xx (202, 204; 201 to a batch)       RETRY     "<url>/events answered 204 without ..."
    408, 429 (Retry-After honoured), any 5xx     RETRY     "503 <body>"
    413 to a batch                               RETRY     "<url>/events/batch: batch of N too
                                                            large (413)": smaller requests next
    3xx (never followed)                         DEAD      "302 a redirect to <Location>, not
                                                            followed; check key 'url' ..."
    other 4xx, the service's JSON error          DEAD      "409 {"error":{"code":"conflict",...}}"
      (401, 403, 409, 413 single, 422)
    other 4xx, any other body (a proxy's         DEAD      "404 not the tracking service's answer
      400/404/405/410 page)                                 ...: a proxy, a gateway or a wrong url
                                                            answered; check key 'url' and any
                                                            proxy on the way, then ... `sampletrack
                                                            deliver --retry-dead-letters` ...
                                                            Its answer: <page>"
    a batch's per-event statuses                 each      201/200 DELIVERED; 403/409/422 DEAD
                                                            ("422 {"error":{...}}", as one event's);
                                                            408/429/5xx: RETRY from that event on

A whole-batch 4xx (401, 422, a proxy's page) dead-letters every event of the batch. Bodies are
kept up to 500 characters, the token replaced by ``***``.

Secrets: the REST token comes from the YAML (``token``) or, better, from an environment variable
(``token_env``, default ``SAMPLETRACK_TOKEN``); it is only ever put in the Authorization header,
never in a log, an exception or ``describe()``, and a service answer that echoes it (a proxy page
showing the request headers) has it replaced by ``***`` (secrets.REDACTED) before it is kept anywhere.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bliss_sampletrack.core import Event
from bliss_sampletrack.delivery import http_answers, tls
from bliss_sampletrack.delivery.base import (
    Health,
    Result,
    RetryLater,
    Verdict,
    batch_size,
    classify_status,
    seconds,
)
from bliss_sampletrack.delivery.http_answers import gateway_down, retry_after
from bliss_sampletrack.delivery.secrets import REDACTED, redact, secret
from bliss_sampletrack.errors import ConfigurationError

log = logging.getLogger(__name__)

TOKEN_HIDDEN = REDACTED  # what replaces the token in a service's answer (the one marker)
#: a dead letter whose answer is not the service's: what it was, and what to do about it
NOT_THE_SERVICE = (
    'not the tracking service\'s answer (its errors are JSON {"error": {"code": ...}}): '
    "a proxy, a gateway or a wrong url answered"
)
FIX_THEN_REPLAY = (
    "check key 'url' and any proxy on the way, then send the dead letters again with "
    "`sampletrack deliver --retry-dead-letters` (or tracker.retry_dead_letters())"
)


class NoopClient:
    """For beamlines without a tracking service: every event counts as delivered at once.

    The events stay visible in the tracker's history (and the service-less outbox is trimmed).
    """

    max_batch = 1000

    def __init__(self, name: str = "none") -> None:
        self.name = name

    def send(self, events: list[Event]) -> list[Result]:
        return [Result(Verdict.DELIVERED, "no tracking service configured") for _ in events]

    @classmethod
    def from_config(cls, node: Any, where: str) -> NoopClient:
        """``type: none``."""
        return cls(node.get("name") or "none")

    def describe(self) -> str:
        return self.describe_config({"name": self.name})

    @classmethod
    def describe_config(cls, node: Any) -> str:
        return f"{node.get('name') or 'none'}: no tracking service (events kept in the history only)"


class RestClient:
    """The tracking service's REST contract (``POST /events``, ``POST /events/batch``)."""

    def __init__(
        self,
        name: str,
        url: str,
        token: str,
        *,
        verify_tls: object = True,
        timeout: float = 10.0,
        max_batch: int = 200,
        context: str | None = None,
    ) -> None:
        import requests  # a BLISS dependency; cooperative once gevent has patched sockets

        context = context or f"delivery client {name!r}"
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{context}: url must start with http:// or https://, got {url!r}")
        if not 1 <= max_batch <= 1000:
            raise ConfigurationError(f"{context}: max_batch must be 1..1000 (the contract's limit)")
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            # never the value in the message; requests would put it in an InvalidHeader error
            raise ConfigurationError(
                f"{context}: the token must be ASCII text without spaces or control characters"
            )
        self.name = name
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_batch = max_batch
        self._token = token  # private: only for the header and to hide it in answers
        # validated (and a WARNING when off) before the session holds the token
        self._verify = tls.verify_setting(verify_tls, client=name, url=self.url, context=context)
        self._session = requests.Session()
        self._session.verify = self._verify
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._session.headers["Content-Type"] = "application/json"

    @classmethod
    def from_config(cls, node: Any, where: str) -> RestClient:
        """``type: rest``: ``url``, ``token`` or ``token_env``, ``verify_tls``, ``timeout``,
        ``max_batch``; anything wrong raises :class:`ConfigurationError` starting with ``where``."""
        name = node.get("name") or "rest"
        url = node.get("url")
        if not isinstance(url, str):
            raise ConfigurationError(
                f"{where}: delivery {name!r}: key 'url' is missing (e.g. http://host:8090/api/v1)"
            )
        token, _ = secret(
            node, "token", "token_env", "SAMPLETRACK_TOKEN", f"{where}: delivery {name!r}", token_like=False
        )
        return cls(
            name,
            url,
            str(token),
            verify_tls=node.get("verify_tls", True),
            timeout=seconds(node, "timeout", 10.0, where, name),
            max_batch=batch_size(node, "max_batch", 200, where, name),
            context=f"{where}: delivery {name!r}",
        )

    def describe(self) -> str:
        return self.describe_config({"name": self.name, "url": self.url})

    @classmethod
    def describe_config(cls, node: Any) -> str:
        """The description of a ``type: rest`` entry, from the YAML alone (no secret read)."""
        return f"{node.get('name') or 'rest'}: REST {str(node.get('url') or '?').rstrip('/')}"

    def probe(self, timeout: float) -> Health:
        """``GET /healthz`` (no token needed, none sent): UP on the contract's 200."""
        response, failure = http_answers.request(
            self._session,
            "GET",
            self.url + "/healthz",
            timeout=timeout,
            verify=self._verify,
            headers={"Authorization": None},  # requests drops a header set to None: no token sent
        )
        if failure is not None:
            return Health.UNREACHABLE
        return Health.UP if response.status_code == 200 else Health.DOWN

    def send(self, events: list[Event]) -> list[Result]:
        if len(events) == 1:
            return [self._send_one(events[0])]
        body = '{"events":[' + ",".join(e.to_json() for e in events) + "]}"
        where = f"{self.url}/events/batch"
        response = self._post("/events/batch", body)
        status = response.status_code
        if status == 413:
            raise RetryLater(f"{where}: batch of {len(events)} too large (413)", batch_too_large=True)
        verdict = classify_status(status)
        if verdict is Verdict.RETRY:
            raise RetryLater(self._answer(response), retry_after(response), unreachable=gateway_down(status))
        if 200 <= status < 300 and status != 200:
            # 201, 202, 204...: not the contract's answer to a batch, never a delivery nor a dead letter
            raise RetryLater(
                f"{where} answered {status}, not 200 with a results list: {self._answer(response)}"
            )
        if status != 200:
            # the batch itself refused (401, 422; a proxy's 404, a redirect): every event gets the answer
            return [Result(Verdict.REJECTED, self._refusal(response)) for _ in events]
        try:
            results = response.json()["results"]
        except (ValueError, KeyError, TypeError):
            results = None
        if not isinstance(results, list):
            raise RetryLater(f"{where} answered 200 without a results list: {self._answer(response)}")
        if len(results) != len(events):
            raise RetryLater(f"{where} answered {len(results)} results for {len(events)} events")
        out = []
        for event, result in zip(events, results, strict=True):
            if not isinstance(result, dict) or result.get("event_id") != str(event.event_id):
                raise RetryLater(f"{where} answered results out of order")
            code = result.get("status")
            if isinstance(code, bool) or not isinstance(code, int):
                raise RetryLater(
                    f"{where} answered 200 with a result whose status is not a number "
                    f"(event {event.event_id})"
                )
            out.append(Result(classify_status(code), self._result_detail(code, result.get("error"))))
        return out

    def _send_one(self, event: Event) -> Result:
        response = self._post("/events", event.to_json())
        status = response.status_code
        verdict = classify_status(status)
        if verdict is Verdict.RETRY:
            raise RetryLater(self._answer(response), retry_after(response), unreachable=gateway_down(status))
        if 200 <= status < 300 and not (verdict is Verdict.DELIVERED and self._stored(response, event)):
            # e.g. a proxy or login page answering 200 (or 204) in the service's place: never a
            # delivery, and never a dead letter either (the contract dead-letters 4xx answers only)
            raise RetryLater(
                f"{self.url}/events answered {status} without the stored event: {self._answer(response)}"
            )
        if verdict is Verdict.DELIVERED:
            return Result(verdict, self._answer(response))
        return Result(Verdict.REJECTED, self._refusal(response))

    def _refusal(self, response: Any) -> str:
        """A dead letter's answer to a 3xx or 4xx, its status first: the service's JSON error as
        it came; anything else (a proxy's or gateway's page, a redirect) says that it is not the
        service's answer and what to do about it."""
        status = response.status_code
        redirect = 300 <= status < 400
        if not redirect and self._service_error(response):
            return self._answer(response)
        if redirect:  # never followed: a 301/302 would turn the POST into a GET (http_answers)
            what = f"a redirect to {response.headers.get('Location')}, not followed"
        else:
            what = NOT_THE_SERVICE
        body = http_answers.kept((response.text or "").strip(), self._hide_token) or "(empty)"
        return self._hide_token(f"{status} {what}; {FIX_THEN_REPLAY}. Its answer: {body}")

    @staticmethod
    def _service_error(response: Any) -> bool:
        """True when the body is the contract's error, ``{"error": {"code": ..., "message": ...}}``."""
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):  # requests' JSONDecodeError is a ValueError
            return False
        return (
            isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
        )

    def _result_detail(self, status: int, error: Any) -> str:
        """One batch result as text, as a single event's answer reads: ``409 {"error":{...}}``."""
        if error is None:
            return str(status)
        text = json.dumps({"error": error}, separators=(",", ":"))
        return self._hide_token(f"{status} {http_answers.kept(text, self._hide_token)}")

    @staticmethod
    def _stored(response: Any, event: Event) -> bool:
        """True when the answer is the contract's ``{"event": {...}}`` for this very event."""
        try:
            stored = response.json()["event"]
        except (ValueError, KeyError, TypeError):  # requests' JSONDecodeError is a ValueError
            return False
        return isinstance(stored, dict) and stored.get("event_id") == str(event.event_id)

    def _post(self, path: str, body: str) -> Any:
        # never follows a redirect (as every client): a redirected POST becomes a GET, and the
        # answer (3xx, naming where it points) is a rejection that says to check the url
        response, failure = http_answers.request(
            self._session, "POST", self.url + path, body, timeout=self.timeout, verify=self._verify
        )
        if failure is not None:  # raised outside the except clause: no chained exception
            raise RetryLater(self._hide_token(f"{self.url}{path}: {failure}"), unreachable=True)
        return response

    def _answer(self, response: Any) -> str:
        # the token hidden before the cut: a cut through it would leave a piece that no longer matches
        return http_answers.answer(response, self._hide_token)

    def _hide_token(self, text: str) -> str:
        return redact(text, [self._token])
