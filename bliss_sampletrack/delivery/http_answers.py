"""The HTTP requests and answers of every client (REST contract, ICAT+, ISPyB, the ICAT+ sample
registry): one place for what each of them does alike.

- :func:`retryable`: the contract's statuses worth retrying (408, 429, 5xx);
- :func:`kept` / :func:`answer`: the part of an answer kept in a message or a dead letter, with
  the client's secrets hidden *before* it is cut (a cut through a secret would leave a piece of it
  that no longer matches);
- :func:`retry_after`: the server's ``Retry-After`` hint in seconds (a number or an HTTP date);
- :func:`gateway_down`: 502/503/504, "the service cannot answer now" (the loop probes its health);
- :func:`request`: one request, never following redirects (a redirected POST becomes a GET: what
  was sent would be lost), with a failure (timeout, connection, TLS) turned into text.

The verdicts themselves (:class:`~bliss_sampletrack.delivery.clients.Verdict`) stay in clients.py.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bliss_sampletrack.delivery import tls

RETRYABLE_STATUS = {408, 429}
MAX_ANSWER = 500  # characters of a service answer kept in a dead letter


def retryable(status: int) -> bool:
    """True for the statuses the contract says to retry: 408, 429 and any 5xx."""
    return status in RETRYABLE_STATUS or status >= 500


def gateway_down(status: int) -> bool:
    """502, 503, 504: a gateway (or the service itself) says the service cannot answer now."""
    return status in (502, 503, 504)


def kept(text: str, hide: Callable[[str], str], limit: int = MAX_ANSWER) -> str:
    """``text`` with its secrets hidden, then cut to ``limit`` characters (in that order)."""
    return hide(text)[:limit]


def answer(response: Any, hide: Callable[[str], str]) -> str:
    """``"<status> <body>"`` for a message, secrets hidden; a redirect names where it pointed."""
    text = kept((response.text or "").strip(), hide)
    result = f"{response.status_code} {text}".strip()
    if 300 <= response.status_code < 400:
        result += f" (redirect to {response.headers.get('Location')}; check key 'url')"
    return hide(result)


def retry_after(response: Any) -> float | None:
    """The ``Retry-After`` header in seconds from now (RFC 9110 10.2.3: a number of seconds or an
    HTTP date), or None (absent or unreadable). A date in the past is 0."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, number) if math.isfinite(number) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a date without a zone is read as such
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def request(
    session: Any,
    method: str,
    url: str,
    body: Mapping[str, Any] | str | None = None,
    *,
    timeout: float,
    verify: object,
    **kwargs: Any,
) -> tuple[Any, str | None]:
    """Send ``body`` (a mapping: as JSON; text: as it is, already JSON; None: no body):
    ``(response, None)``, or ``(None, what went wrong)`` when no answer came.

    The failure is returned, not raised: the caller raises its own error outside this except
    clause, so no chained exception (whose text or request holds the URL, maybe a secret in its
    path) travels with it. ``verify`` is passed per request too: REQUESTS_CA_BUNDLE would override
    the session's (tls.py).
    """
    import requests  # a BLISS dependency; cooperative once gevent has patched sockets

    data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    if data is not None:
        kwargs["headers"] = {"Content-Type": "application/json", **kwargs.get("headers", {})}
    try:
        response = session.request(
            method,
            url,
            data=data,
            timeout=timeout,
            allow_redirects=False,
            verify=verify,
            **kwargs,
        )
    except requests.Timeout:
        return None, f"no answer within {timeout:g} s"
    except requests.RequestException as exc:
        return None, tls.certificate_problem(exc) or f"{type(exc).__name__}: {exc}"
    return response, None
