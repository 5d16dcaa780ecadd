"""TLS certificate verification of the delivery clients' HTTPS requests: one rule for every client.

The ``verify_tls`` key of a delivery client is

- ``true`` (the default): the server's certificate must chain to a trusted CA (the system's, or
  ``REQUESTS_CA_BUNDLE`` when set, as ``requests`` does);
- the path of a CA bundle (a PEM file, or a folder prepared with ``c_rehash``): trust only those
  CAs, e.g. a site CA that signs internal servers; the path must exist when the client is made;
- ``false``: no verification at all. Anyone on the network path can then read the token or API
  key and answer in the server's place, so this must be written explicitly and is logged as a
  WARNING naming the client and the URL, once, when the client is made.

The resulting value is passed on every request (``verify=``), not only set on the session:
``requests`` lets ``REQUESTS_CA_BUNDLE`` override a session's ``verify`` (a configured CA bundle
would be silently replaced, and ``false`` too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from bliss_sampletrack.errors import ConfigurationError

log = logging.getLogger(__name__)

KEY = "verify_tls"


def verify_setting(
    value: object, *, client: str, url: str, context: str, key: str = KEY, kind: str = "delivery client"
) -> bool | str:
    """The ``verify`` argument for ``requests`` from a client's ``verify_tls`` setting.

    ``context`` says where the setting was read (e.g. "'tracker' in sampletrack.yml, key 'delivery':
    delivery 'service'") for the error message; ``kind`` and ``client`` name the client in the
    warning (``url`` must hold no secret). Raises :class:`ConfigurationError` naming the key for
    anything but true, false or an existing path; logs a WARNING when verification is off.
    """
    if value is True:
        return True
    if value is False:
        log.warning(
            "%s %r: TLS certificate verification is OFF for %s (%s: false): the server is not "
            "authenticated and its certificate is not checked; use a CA bundle path instead",
            kind,
            client,
            url,
            key,
        )
        return False
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.lower() in ("true", "false", "yes", "no", "on", "off"):
            raise ConfigurationError(
                f"{context}: key '{key}' is the text {value!r}: write true or false without quotes, "
                "or the path of a CA bundle"
            )
        path = Path(text).expanduser()
        if not (path.is_file() or path.is_dir()):
            raise ConfigurationError(
                f"{context}: key '{key}': CA bundle {text!r} does not exist; give the path of the PEM "
                "file (or c_rehash folder) of the CA that signs the server's certificate, or true"
            )
        return str(path)
    raise ConfigurationError(f"{context}: key '{key}' must be true, false or a CA bundle path, got {value!r}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (requests -> urllib3 -> ssl keep the cause in args or reason)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        inner = [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
        todo.extend(x for x in inner if isinstance(x, BaseException))


def certificate_problem(exc: BaseException) -> str | None:
    """A clear sentence when ``exc`` (from ``requests``) is a refused server certificate, else None."""
    import ssl  # here, not at import time: gevent must patch ssl before the first import of it

    for item in _chain(exc):
        if isinstance(item, ssl.SSLCertVerificationError):
            reason = item.verify_message or item.reason or "certificate verify failed"
            return (
                f"TLS certificate verification failed ({reason}): the server's certificate is not "
                f"signed by a trusted CA; set '{KEY}' to the path of the CA bundle that signed it"
            )
    return None
