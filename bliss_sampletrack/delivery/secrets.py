"""Secrets of the HTTP clients (API keys, tokens, session ids, passwords): read, check, hide.

The one place for them: the REST, ICAT+ and ISPyB delivery clients and the ICAT+ sample registry
all read, check and hide their secrets here:

- :func:`secret` reads one from the YAML or, better, from an environment variable, and checks it
  looks like one, with messages that never contain the value;
- :func:`check_known` refuses unknown keys (a typo must not silently disable something);
- :func:`redact` and :func:`secret_forms` replace a secret, as written or percent-encoded in a URL
  path, by ``***`` in a text derived from a request;
- :func:`protect` does the same in the records of the third-party loggers that print request
  URLs (urllib3's DEBUG lines and retry warnings), for as long as the process runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from bliss_sampletrack.errors import ConfigurationError

REDACTED = "***"
MIN_SECRET_LENGTH = 8
#: third-party loggers that print request URLs (DEBUG lines, retry warnings)
URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "requests.packages.urllib3.connectionpool")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***`` (give the longest first)."""
    for item in secrets:
        text = text.replace(item, REDACTED)
    return text


def secret_forms(value: str) -> set[str]:
    """The secret as written and as it appears percent-encoded in a URL path."""
    return {value, quote(value, safe="")}


class _SecretFilter(logging.Filter):
    """Replaces the secrets of the live clients in the records of the loggers that print URLs."""

    def __init__(self) -> None:
        super().__init__("")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            text = record.getMessage()
        except (TypeError, ValueError, KeyError):
            return True  # a malformed record: logging reports it itself
        redacted = redact(text, self.secrets)
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


_FILTER = _SecretFilter()


def protect(secrets: Iterable[str]) -> None:
    """Keep ``secrets`` (and their URL forms) out of the records of :data:`URL_LOGGERS`."""
    for item in secrets:
        _FILTER.secrets |= secret_forms(item)
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def check_known(node: Mapping[str, Any], known: frozenset[str], context: str, prefix: str = "") -> None:
    """Raise :class:`ConfigurationError` naming the first key of ``node`` that is not in ``known``."""
    unknown = sorted(str(key) for key in node if key not in known)
    if unknown:
        raise ConfigurationError(
            f"{context}: key '{prefix}{unknown[0]}' is not a known key (known: {', '.join(sorted(known))})"
        )


def secret(
    node: Mapping[str, Any],
    key: str,
    env_key: str,
    default_env: str,
    context: str,
    prefix: str = "",
    *,
    placeholders: Mapping[str, str] | None = None,
    token_like: bool = True,
) -> tuple[str, str]:
    """A secret from the YAML (``key``) or, better, from an environment variable (``env_key``).

    Returns (secret, where it came from, for describe()). Refused with a
    :class:`ConfigurationError` naming the key or the variable, never the value: missing, not
    text, shorter than :data:`MIN_SECRET_LENGTH`, containing spaces, or equal to a known
    placeholder (``placeholders``: value -> what it is, e.g. pyicat-plus's default API key).
    ``prefix`` names the parent mapping in the messages (``"parcel_status."``).
    ``token_like=False`` (a person's password, a bearer token of the site's own format): only
    non-empty text is required, taken as written (no strip, spaces allowed); an int from the YAML
    is taken as its text.
    """
    value = node.get(key)
    if not token_like and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is not None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"{context}: key '{prefix}{key}' must be non-empty text")
        source = f"key '{prefix}{key}' of the YAML"
    else:
        env = node.get(env_key, default_env)
        if not isinstance(env, str) or not env:
            raise ConfigurationError(
                f"{context}: key '{prefix}{env_key}' must be the name of an environment variable"
            )
        value = os.environ.get(env)
        if not value or not value.strip():
            raise ConfigurationError(
                f"{context}: no {prefix}{key}: set the environment variable {env} (or '{prefix}{env_key}' "
                "to another variable's name)"
            )
        source = f"${env}"
    if not token_like:
        return value, source
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH or any(c.isspace() for c in value):
        raise ConfigurationError(
            f"{context}: the {prefix}{key} from {source} does not look like one "
            f"(at least {MIN_SECRET_LENGTH} characters, no spaces)"
        )
    what = (placeholders or {}).get(value)
    if what is not None:
        raise ConfigurationError(f"{context}: the {prefix}{key} from {source} is {what}")
    return value, source
