"""Talking to ICAT+: the two clients (``requests``, pyicat-plus), the login, the investigation.

What is asked of ICAT+ (one refresh; the whole refresh is bounded by ``timeout``)
---------------------------------------------------------------------------------
1. The ICAT session: either a session id given in the configuration (``session_id_env``), or a
   login ``POST {url}/session`` with ``{"plugin", "username", "password"}`` (answer ``sessionId``),
   done again once when ICAT+ answers 401/403 (expired session).
2. The investigation of the proposal, unless ``investigation_id`` is configured:
   ``GET {url}/dataacquisition/{api_key}/investigation?instrumentName={instrument}``
   ``&investigationName={proposal}`` (beamline API key; as pyicat-plus's ``investigation_info``),
   keeping the investigation that started last before now, else the next one (pyicat-plus's rule).
   Done before the login: a proposal without an investigation needs no session.
3. The parcels: ``GET {url}/tracking/{sessionId}/parcel?investigationId={id}`` (pyicat-plus
   ``get_parcels_by``).
4. Only with ``sample_name: sample_sheet``: the investigation's ICAT samples
   ``GET {url}/catalogue/{sessionId}/samples?investigationId={id}`` (pyicat-plus ``get_samples_by``),
   whose names then replace the parcel items' names.

Through pyicat-plus, where the installed one can (``client: auto``)
-------------------------------------------------------------------
- BLISS 2.4 stack: pyicat-plus 3.1.0 on icat-plus-client 5.7.4 (OpenAPI-generated, urllib3) has
  ``IcatClient.do_log_in``, ``get_parcels_by`` and ``get_samples_by``: they are used for steps 1,
  3 and 4. None of them takes a timeout (urllib3 then waits forever): each call runs under a
  ``gevent.Timeout``. Quirks measured in 5.7.4, and what is done about them:
  - ``Parcel`` declares ``id`` twice (``Field(alias="_id")``, then plain ``id``): the alias is lost,
    so a parcel sent with ``_id`` only comes back with ``id = None``;
  - ``Item`` has no ``_id`` at all, and drops every field it does not declare;
  - ``Item.sampleChangerLocation`` and ``sampleId`` are strict numbers and ``name``/``type``
    required: one item with ``"sampleChangerLocation": "3"`` or without a name makes the whole
    call raise ``pydantic.ValidationError``.
  When pyicat-plus's answer lost an id (a parcel or an item without ``id``), or it refused the
  answer, the same request is made again with ``requests`` and read as JSON (logged at INFO).
  pyicat-plus takes a session id only when its client is made: a new session id (configured, or
  from a login done with ``requests``) makes a new ``IcatClient``.
- BLISS 2.0.3 stack: pyicat-plus 0.1.10 has no restricted ICAT+ client at all (no login, no
  ``get_parcels_by``/``get_samples_by``): the same URLs are requested with ``requests``.
- Step 2 is always requested with ``requests``: pyicat-plus's ``investigation_info`` (both
  versions) logs failures with ``logger.exception``, whose text holds the URL and so the API key,
  and answers ``None`` after a timeout while the query goes on in the background.
- ``client: http`` uses ``requests`` for everything, on both stacks.
- TLS: ``verify_tls`` follows the rule of every HTTP client (:mod:`bliss_sampletrack.delivery.tls`:
  true by default, a CA bundle path that must exist, or ``false`` logged as a WARNING). pyicat-plus
  makes its HTTP client itself and cannot be given a CA bundle nor told not to verify, so with any
  ``verify_tls`` but the default ``true``, ``client: auto`` uses ``requests`` for everything, and
  ``client: pyicatplus`` is refused as a configuration error.
``requests`` and urllib3 are cooperative once BLISS has gevent-patched the sockets; every request
has a timeout and the whole refresh a ``gevent.Timeout``: the hub is never blocked.

Which client answers, the session's renewal and the timeout of the whole refresh are the
registry's (:mod:`bliss_sampletrack.tracker.icatplus.registry`). Texts derived from a request go
through the registry's ``redact`` (session id, password, API key replaced by ``***``), and an
answer is redacted before it is cut to :data:`MAX_ANSWER` characters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bliss_sampletrack import __version__
from bliss_sampletrack.delivery import http_answers, tls
from bliss_sampletrack.delivery.http_answers import kept
from bliss_sampletrack.delivery.icatplus_json import as_text, ident
from bliss_sampletrack.tracker.icatplus.errors import AuthRefused, IcatPlusUnavailable, Quirk
from bliss_sampletrack.tracker.icatplus.parcels import all_items

DEFAULT_AUTH_PLUGIN = "esrf"
#: characters of an ICAT+ error answer kept in a message
MAX_ANSWER = 200


@dataclass(frozen=True)
class Credentials:
    """How the registry gets an ICAT session id; secrets stay out of ``repr``."""

    session_id: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    plugin: str = DEFAULT_AUTH_PLUGIN
    source: str = "the YAML"

    @property
    def login(self) -> bool:
        return self.password is not None

    def secrets(self) -> set[str]:
        return {s for s in (self.session_id, self.password) if s}


class HttpClient:
    """ICAT+ requests with ``requests`` (cooperative under gevent), every one with a timeout."""

    def __init__(
        self,
        url: str,
        timeout: float,
        verify_tls: object,
        redact: Callable[[str], str],
        *,
        name: str,
        context: str,
    ) -> None:
        import requests

        self.url = url
        self.timeout = timeout
        self.redact = redact
        # the rule of every client (tls.py): validated, a WARNING when off; the URL holds no secret
        self._verify = tls.verify_setting(
            verify_tls, client=name, url=url, context=context, kind="sample registry"
        )
        self.session = requests.Session()
        self.session.verify = self._verify
        self.session.headers.update(
            {"Accept": "application/json", "User-Agent": f"bliss-sampletrack/{__version__}"}
        )

    def login(self, credentials: Credentials) -> str:
        body = {
            "plugin": credentials.plugin,
            "username": credentials.username,
            "password": credentials.password,
        }
        answer = self._call("POST", "/session", "login", json=body)
        session_id = answer.get("sessionId") if isinstance(answer, Mapping) else None
        if not isinstance(session_id, str) or not session_id:
            raise IcatPlusUnavailable("ICAT+ login: the answer has no sessionId")
        return session_id

    def investigations(self, api_key: str, instrument: str, proposal: str) -> list[Any]:
        return self._list(
            f"/dataacquisition/{_quote(api_key)}/investigation",
            f"investigations of proposal {proposal!r}",
            params={"instrumentName": instrument, "investigationName": proposal},
        )

    def parcels(self, session_id: str, investigation_id: str) -> list[Any]:
        return self._list(
            f"/tracking/{_quote(session_id)}/parcel",
            f"parcels of investigation {investigation_id}",
            params={"investigationId": investigation_id},
        )

    def samples(self, session_id: str, investigation_id: str) -> list[Any]:
        return self._list(
            f"/catalogue/{_quote(session_id)}/samples",
            f"samples of investigation {investigation_id}",
            params={"investigationId": investigation_id},
        )

    def close(self) -> None:
        self.session.close()

    def _list(self, path: str, what: str, params: Mapping[str, str]) -> list[Any]:
        answer = self._call("GET", path, what, params=params)
        if not isinstance(answer, list):
            raise IcatPlusUnavailable(f"ICAT+ {what}: expected a JSON list, got {type(answer).__name__}")
        return answer

    def _call(self, method: str, path: str, what: str, json: Any = None, **kwargs: Any) -> Any:
        response, failure = http_answers.request(
            self.session, method, self.url + path, json, timeout=self.timeout, verify=self._verify, **kwargs
        )
        if failure is not None:  # raised outside the except clause: no chained text with a secret
            raise IcatPlusUnavailable(self.redact(f"ICAT+ {what}: {method} {self.url}{path}: {failure}"))
        if response.status_code in (401, 403):
            raise AuthRefused(f"ICAT+ {what}: refused ({response.status_code}): the session expired?")
        if not 200 <= response.status_code < 300:
            # redacted before it is cut: a cut through a secret would leave a piece of it
            text = kept((response.text or "").strip(), self.redact, limit=MAX_ANSWER)
            raise IcatPlusUnavailable(self.redact(f"ICAT+ {what}: HTTP {response.status_code} {text}"))
        try:
            return response.json()
        except ValueError:
            raise IcatPlusUnavailable(f"ICAT+ {what}: the answer is not JSON") from None


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def pyicatplus_has_parcels() -> bool:
    """True when the installed pyicat-plus reads ICAT+ parcels (3.x: ``IcatClient.get_parcels_by``)."""
    try:
        from pyicat_plus.client.main import IcatClient
    except ImportError:
        return False
    return all(hasattr(IcatClient, m) for m in ("do_log_in", "get_parcels_by", "get_samples_by"))


class PyIcatPlusClient:
    """Login, parcels and samples through pyicat-plus's ``IcatClient`` (3.x)."""

    def __init__(self, url: str, redact: Callable[[str], str]) -> None:
        from pyicat_plus.client.main import IcatClient

        self.url = url
        self.client = IcatClient(icatplus_restricted_url=url)
        self.session_id: str | None = None
        self.redact = redact

    def use(self, session_id: str) -> None:
        """Ask with ``session_id`` (pyicat-plus takes a session id only when its client is made)."""
        if session_id != self.session_id:
            from pyicat_plus.client.main import IcatClient

            self.client = IcatClient(icatplus_restricted_url=self.url, icat_session_id=session_id)
            self.session_id = session_id

    def login(self, credentials: Credentials) -> str:
        session = self._call(
            "login",
            lambda: self.client.do_log_in(credentials.password, credentials.username, credentials.plugin),
        )
        session_id = getattr(session, "session_id", None)
        if not session_id:
            raise IcatPlusUnavailable("ICAT+ login: the answer has no sessionId")
        self.session_id = str(session_id)  # do_log_in keeps it in the client
        return self.session_id

    def parcels(self, session_id: str, investigation_id: str) -> list[Any]:
        self.use(session_id)
        parcels = self._call(
            f"parcels of investigation {investigation_id}",
            lambda: self.client.get_parcels_by(investigation_id),
        )
        answer = [p.to_dict() for p in parcels or []]
        lost = [p.get("name") for p in answer if not ident(p)]
        lost += [i.get("name") for p in answer for i in all_items(p) if not ident(i)]
        if lost:
            raise Quirk(f"pyicat-plus returned {len(lost)} parcel(s)/item(s) without id ({lost[:3]})")
        return answer

    def samples(self, session_id: str, investigation_id: str) -> list[Any]:
        self.use(session_id)
        samples = self._call(
            f"samples of investigation {investigation_id}",
            lambda: self.client.get_samples_by(investigation_id=investigation_id),
        )
        return [s.to_dict() for s in samples or []]

    def close(self) -> None:
        self.client.disconnect()

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        import pydantic
        import urllib3
        from icat_plus_client.exceptions import ApiException

        failure = None
        try:
            return call()
        except ApiException as exc:
            if exc.status in (401, 403):
                raise AuthRefused(f"ICAT+ {what}: refused ({exc.status}): the session expired?") from None
            failure = f"HTTP {exc.status} {kept(str(exc.body or ''), self.redact, limit=MAX_ANSWER)}"
        except pydantic.ValidationError as exc:
            raise Quirk(f"pyicat-plus refused ICAT+'s answer: {str(exc).splitlines()[0]}") from None
        except urllib3.exceptions.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}"
        raise IcatPlusUnavailable(self.redact(f"ICAT+ {what} (pyicat-plus): {failure}"))


def select_investigation(investigations: list[Any], now: float) -> Any:
    """pyicat-plus's rule: the last one started at or before now, else the first one after."""
    dated = []
    for info in investigations:
        if not isinstance(info, Mapping) or as_text(info.get("id")) is None:
            continue
        try:
            start = datetime.fromisoformat(str(info.get("startDate"))).timestamp()
        except ValueError:
            start = 0.0
        dated.append((start, info))
    if not dated:
        return None
    before = [d for d in dated if d[0] <= now]
    return max(before, key=lambda d: d[0])[1] if before else min(dated, key=lambda d: d[0])[1]
