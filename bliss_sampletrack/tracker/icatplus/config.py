"""The configuration of an ICAT+ registry: one item of the tracker's ``registries:`` list,
``type: icatplus`` (see config_examples/tracker/icatplus_registry.yml).

:func:`options` checks the item and turns it into the keyword arguments of
:class:`~bliss_sampletrack.tracker.icatplus.registry.IcatPlusRegistry` (what
:meth:`~bliss_sampletrack.tracker.icatplus.registry.IcatPlusRegistry.from_config` builds it
with). Secrets (password, session id, API key) are better given through environment variables
(``password_env``, ``session_id_env``, ``api_key_env``); no message ever contains their value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bliss_sampletrack.delivery.secrets import secret
from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.tracker.icatplus.client import DEFAULT_AUTH_PLUGIN, Credentials
from bliss_sampletrack.tracker.icatplus.parcels import BARCODE_FIELDS

DEFAULT_TIMEOUT = 5.0
DEFAULT_CACHE_TTL = 600.0
DEFAULT_SESSION_ID_ENV = "ICATPLUS_SESSION_ID"
DEFAULT_PASSWORD_ENV = "ICATPLUS_PASSWORD"
DEFAULT_API_KEY_ENV = "ICATPLUS_API_KEY"
CLIENTS = ("auto", "pyicatplus", "http")
SAMPLE_NAMES = ("item", "sample_sheet")
KEYS = frozenset(
    {
        "type",
        "name",
        "url",
        "client",
        "username",
        "password",
        "password_env",
        "auth_plugin",
        "session_id",
        "session_id_env",
        "api_key",
        "api_key_env",
        "investigation_id",
        "instrument",
        "timeout",
        "cache_ttl",
        "barcode_fields",
        "sample_name",
        "verify_tls",
    }
)


def options(node: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The registry's keyword arguments from one ``type: icatplus`` item of ``registries:``
    (all but those the tracker gives: redis, beamline, proposal, no_read, clock).

    ``where`` names the tracker and its file, for the messages.
    """
    name = str(node.get("name") or "icatplus")
    context = f"{where}: registry {name!r}"

    def bad(key: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"{context}: key {key!r} {problem}")

    unknown = sorted(str(k) for k in node if k not in KEYS)
    if unknown:
        raise bad(unknown[0], f"is not known (known: {', '.join(sorted(KEYS))})")
    url = node.get("url")
    if not isinstance(url, str) or not url.strip().startswith(("http://", "https://")):
        raise bad("url", f"must be the ICAT+ base URL (http:// or https://), got {url!r}")
    if {"username", "password", "password_env"} & set(node):
        username, plugin = node.get("username"), node.get("auth_plugin", DEFAULT_AUTH_PLUGIN)
        if not isinstance(username, str) or not username.strip():
            raise bad("username", "must be the ICAT user name to log in with (password from password_env)")
        if not isinstance(plugin, str) or not plugin.strip():
            raise bad("auth_plugin", f"must name an ICAT authenticator (e.g. esrf), got {plugin!r}")
        password, source = secret(
            node, "password", "password_env", DEFAULT_PASSWORD_ENV, context, token_like=False
        )
        credentials = Credentials(username=username.strip(), password=password, plugin=plugin, source=source)
    else:
        session_id, source = secret(
            node, "session_id", "session_id_env", DEFAULT_SESSION_ID_ENV, context, token_like=False
        )
        credentials = Credentials(session_id=session_id, source=source)
    raw_id, api_key = node.get("investigation_id"), None
    investigation_id = None if raw_id is None else str(raw_id).strip()
    if investigation_id is None:
        api_key, _ = secret(node, "api_key", "api_key_env", DEFAULT_API_KEY_ENV, context, token_like=False)
    elif isinstance(raw_id, bool) or not investigation_id.isdigit():
        raise bad("investigation_id", f"must be the ICAT investigation id (a number), got {raw_id!r}")
    barcode_fields = node.get("barcode_fields", ["name"])
    barcode_fields = [barcode_fields] if isinstance(barcode_fields, str) else barcode_fields
    if (
        not (isinstance(barcode_fields, Sequence) and not isinstance(barcode_fields, bytes))
        or not barcode_fields
        or set(barcode_fields) - set(BARCODE_FIELDS)
    ):
        raise bad("barcode_fields", f"must list ICAT+ item fields among {', '.join(BARCODE_FIELDS)}")
    for key, allowed in (("sample_name", SAMPLE_NAMES), ("client", CLIENTS)):
        if node.get(key, allowed[0]) not in allowed:
            raise bad(key, f"must be one of {', '.join(allowed)}, got {node[key]!r}")
    seconds = {}
    for key, default, least in (("timeout", DEFAULT_TIMEOUT, 0.001), ("cache_ttl", DEFAULT_CACHE_TTL, 0)):
        value = node.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
            raise bad(key, f"must be a number of seconds ({'>' if least else '>='} 0), got {value!r}")
        seconds[key] = float(value)
    instrument = node.get("instrument")
    if instrument is not None and (not isinstance(instrument, str) or not instrument.strip()):
        raise bad("instrument", f"must be the ICAT instrument name, got {instrument!r}")
    return {
        "url": url.strip(),
        "credentials": credentials,
        "api_key": api_key,
        "investigation_id": investigation_id,
        "instrument": instrument,
        "barcode_fields": barcode_fields,
        "sample_name": node.get("sample_name", "item"),
        "client": node.get("client", "auto"),
        "verify_tls": node.get("verify_tls", True),  # checked by tls.verify_setting
        "name": name,
        "context": context,
        **seconds,
    }
