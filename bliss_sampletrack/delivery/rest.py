"""The tracking service's REST contract client (``POST /events``, ``POST /events/batch``), and
the no-op client of beamlines without a service.

A 200/201 counts only with the contract's body: ``{"event": ...}`` with the event's ``event_id``
(one event), ``{"results": [...]}`` with one integer ``status`` per event, in order (a batch).
Anything else (a proxy's HTML page, text, an empty or other body) is :class:`RetryLater`: a
gateway answering 200 in the service's place must never make an event count as delivered.

Secrets: the REST token comes from the YAML (``token``) or, better, from an environment variable
(``token_env``, default ``SAMPLETRACK_TOKEN``); it is only ever put in the Authorization header,
never in a log, an exception or ``describe()``, and a service answer that echoes it (a proxy page
showing the request headers) has it replaced by ``***`` (secrets.REDACTED) before it is kept anywhere.
"""

from __future__ import annotations

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
        response = self._post("/events/batch", body)
        if response.status_code == 413:
            raise RetryLater(
                f"{self.url}/events/batch: batch of {len(events)} too large (413)", batch_too_large=True
            )
        verdict = classify_status(response.status_code)
        if verdict is Verdict.RETRY:
            raise RetryLater(
                self._answer(response), retry_after(response), unreachable=gateway_down(response.status_code)
            )
        if response.status_code != 200:
            # the batch itself refused (e.g. 401/422): every event gets the answer
            return [Result(Verdict.REJECTED, self._answer(response)) for _ in events]
        try:
            results = response.json()["results"]
        except (ValueError, KeyError, TypeError):
            raise RetryLater(f"{self.url}/events/batch answered 200 without a results list") from None
        if len(results) != len(events):
            raise RetryLater(
                f"{self.url}/events/batch answered {len(results)} results for {len(events)} events"
            )
        out = []
        for event, result in zip(events, results, strict=True):
            if not isinstance(result, dict) or result.get("event_id") != str(event.event_id):
                raise RetryLater(f"{self.url}/events/batch answered results out of order")
            status = result.get("status")
            if isinstance(status, bool) or not isinstance(status, int):
                raise RetryLater(
                    f"{self.url}/events/batch answered 200 with a result whose status is not a number "
                    f"(event {event.event_id})"
                )
            out.append(Result(classify_status(status), f"{status} {result.get('error') or ''}".strip()))
        return out

    def _send_one(self, event: Event) -> Result:
        response = self._post("/events", event.to_json())
        verdict = classify_status(response.status_code)
        if verdict is Verdict.RETRY:
            raise RetryLater(
                self._answer(response), retry_after(response), unreachable=gateway_down(response.status_code)
            )
        if verdict is Verdict.DELIVERED and not self._stored(response, event):
            # e.g. a proxy or login page answering 200 in the service's place: never a delivery
            raise RetryLater(
                f"{self.url}/events answered {response.status_code} without the stored event: "
                f"{self._answer(response)}"
            )
        return Result(verdict, self._answer(response))

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
