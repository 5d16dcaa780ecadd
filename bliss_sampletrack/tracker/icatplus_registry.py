"""A sample registry backed by the ICAT+ parcels of the current proposal (ESRF sample tracking).

Users declare what they ship in ICAT+: parcel -> containers (pucks) -> sample items. For the
proposal of the ESRF data policy, :class:`IcatPlusRegistry` reads the investigation's parcels,
flattens them and resolves a barcode (:meth:`~IcatPlusRegistry.resolve`) or a sample changer
address (:meth:`~IcatPlusRegistry.resolve_location`) to a :class:`Sample`: name, ICAT sample id,
parcel id/name, container id/name, position in the container. Those fill the event and the ICAT
dataset fields ``SampleTrackingParcel_*`` and ``SampleTrackingContainer_*``.

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

Flattening the parcels
----------------------
An item's children are in ``content`` (else ``items``). An item of type ``SAMPLE`` is a sample;
any other item with children is a container, and the nearest one holds the sample. Ids: ``_id``,
else ``id`` (ICAT+ sends both; pyicat-plus keeps ``id`` only). ``sampleChangerLocation`` is the
container's (the sample's own if it has one), ``sampleContainerPosition`` the sample's; numbers
become text (``3.0`` -> ``"3"``). ICAT+ items have no barcode field: ``barcode_fields`` says
which item fields carry the code that readers see (default ``name``; also ``id``, ``sampleId``,
``description``, ``comments``). A value that is not a valid barcode, or a no-read string, is not
indexed; a code or an address that several items share resolves to nothing (ambiguous), never to
one of them at random.

Cache and staleness
-------------------
The flattened samples are cached in the beacon Redis, one JSON value per beamline and proposal
(key ``sampletrack:registry:icatplus:<beamline>:<proposal>``, with the fetch time; kept 30 days),
so every BLISS process of the beamline shares them. A cache younger than ``cache_ttl`` is used as
is; an older one, or a new proposal, makes the next resolve refresh it (bounded by ``timeout``),
and :meth:`~IcatPlusRegistry.refresh` does it on demand (:meth:`~IcatPlusRegistry.prefetch` in a
background greenlet, e.g. when the tracker starts). When ICAT+ cannot be reached (error,
timeout, refused session), the previous cache still answers and the resolution says the record
may be stale (:attr:`~IcatPlusRegistry.last`, and the sample's ``registry_note`` once
:class:`Sample` has that field); automatic retries then wait ``RETRY_AFTER`` seconds. With no
cache at all, resolve returns None and :attr:`~IcatPlusRegistry.reason` says why.

Secrets (password, session id, API key) never appear in ``repr``, ``describe()``, this module's
logs or exceptions: texts derived from a request have them replaced by ``***``, and urllib3's
loggers get the same filter as the ICAT+ delivery client.

Configuration: one item of the tracker's ``registries:`` list, ``type: icatplus`` (see
config_examples/tracker/icatplus_registry.yml and :meth:`IcatPlusRegistry.from_config`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

import gevent
import gevent.lock

from bliss_sampletrack import __version__
from bliss_sampletrack.core import Sample
from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.delivery import tls
from bliss_sampletrack.delivery.secrets import protect, redact, secret_forms
from bliss_sampletrack.errors import ConfigurationError, InvalidBarcodeError, SampleTrackError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_CACHE_TTL = 600.0
DEFAULT_SESSION_ID_ENV = "ICATPLUS_SESSION_ID"
DEFAULT_PASSWORD_ENV = "ICATPLUS_PASSWORD"
DEFAULT_API_KEY_ENV = "ICATPLUS_API_KEY"
DEFAULT_AUTH_PLUGIN = "esrf"
#: after a failed refresh, automatic refreshes wait this long (refresh() does not)
RETRY_AFTER = 30.0
#: how long Redis keeps a proposal's cache
CACHE_KEEP = 30 * 24 * 3600
CACHE_VERSION = 1
KEY_PREFIX = "sampletrack:registry:icatplus"
#: ICAT+ item fields that may carry the code a reader sees -> record key
BARCODE_FIELDS = {
    "name": "item_name",
    "id": "item_id",
    "sampleId": "sample_id",
    "description": "description",
    "comments": "comments",
}
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
MAX_ANSWER = 200
#: the longest note put on a sample (the proposed ``Sample.registry_note`` allows 512)
NOTE_MAX = 500


class IcatPlusUnavailable(SampleTrackError):
    """ICAT+ could not give the parcels now (unreachable, timeout, refused, unexpected answer)."""


class _AuthRefused(IcatPlusUnavailable):
    """ICAT+ answered 401/403: the session expired or the credentials are wrong."""


class _Quirk(Exception):
    """pyicat-plus lost or refused part of the answer: read it again as JSON."""


# --- the flattened parcels ----------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """ICAT+ values as text: numbers without a spurious ``.0``, blank as None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _ident(node: Mapping[str, Any]) -> str | None:
    return _text(node.get("_id")) or _text(node.get("id"))


def _children(node: Mapping[str, Any]) -> list[Any]:
    children = node.get("content")
    if children is None:
        children = node.get("items")
    return list(children) if isinstance(children, list) else []


def _position(value: str | int | None) -> str | None:
    """A changer location or container position, compared without leading zeros (``05`` = ``5``)."""
    text = _text(value)
    if text is None:
        return None
    return str(int(text)) if text.isdigit() else text


def flatten(parcels: Iterable[Any], sheet_names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One record per sample item of ``parcels`` (ICAT+ JSON), with its parcel and container."""
    records: list[dict[str, Any]] = []
    for parcel in parcels:
        if not isinstance(parcel, Mapping):
            raise IcatPlusUnavailable(f"unexpected parcel in ICAT+'s answer: {str(parcel)[:80]!r}")
        where = {"parcel_id": _ident(parcel), "parcel_name": _text(parcel.get("name"))}
        for item in _children(parcel):
            _walk(item, where, None, records, sheet_names or {})
    return records


def _walk(
    item: Any,
    where: Mapping[str, Any],
    container: Mapping[str, Any] | None,
    records: list[dict[str, Any]],
    sheet_names: Mapping[str, str],
) -> None:
    if not isinstance(item, Mapping):
        return
    if str(item.get("type") or "").upper() == "SAMPLE":
        holder = container or {}
        sample_id = _text(item.get("sampleId"))
        records.append(
            {
                **where,
                "item_name": _text(item.get("name")),
                "sheet_name": sheet_names.get(sample_id) if sample_id else None,
                "item_id": _ident(item),
                "sample_id": sample_id,
                "container_id": _ident(holder) if container else None,
                "container_name": _text(holder.get("name")),
                "container_position": _text(item.get("sampleContainerPosition")),
                "changer_location": _text(item.get("sampleChangerLocation"))
                or _text(holder.get("sampleChangerLocation")),
                "description": _text(item.get("description")),
                "comments": _text(item.get("comments")),
            }
        )
        return
    children = _children(item)
    for child in children:
        _walk(child, where, item, records, sheet_names)


@dataclass
class ParcelCache:
    """The flattened samples of one proposal's parcels, as fetched at ``fetched_at`` (epoch s)."""

    proposal: str
    investigation_id: str
    fetched_at: float
    records: list[dict[str, Any]]
    parcels: int
    by_barcode: dict[str, set[int]] = field(default_factory=dict, repr=False)
    by_location: dict[tuple[str, str], set[int]] = field(default_factory=dict, repr=False)

    def index(self, barcode_fields: Iterable[str], no_read: Iterable[str]) -> ParcelCache:
        self.by_barcode.clear()
        self.by_location.clear()
        for i, record in enumerate(self.records):
            for name in barcode_fields:
                code = record.get(BARCODE_FIELDS[name])
                if code is None:
                    continue
                try:
                    validate_barcode(code, no_read=no_read)
                except InvalidBarcodeError:  # e.g. a name with non-ASCII letters, or "NOREAD"
                    continue
                self.by_barcode.setdefault(code, set()).add(i)
            location = _position(record.get("changer_location"))
            position = _position(record.get("container_position"))
            if location is not None and position is not None:
                self.by_location.setdefault((location, position), set()).add(i)
        return self

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": CACHE_VERSION,
                "proposal": self.proposal,
                "investigation_id": self.investigation_id,
                "fetched_at": self.fetched_at,
                "parcels": self.parcels,
                "records": self.records,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ParcelCache:
        data = json.loads(text)
        if data.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {data.get('version')!r}, expected {CACHE_VERSION}")
        return cls(
            proposal=str(data["proposal"]),
            investigation_id=str(data["investigation_id"]),
            fetched_at=float(data["fetched_at"]),
            records=list(data["records"]),
            parcels=int(data["parcels"]),
        )

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.fetched_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of the last resolve: the sample (or None), whether it may be stale, and why."""

    query: str
    sample: Sample | None
    stale: bool = False
    note: str | None = None
    fetched_at: float | None = None


# --- talking to ICAT+ -----------------------------------------------------------------------------


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


class _Http:
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

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        import requests

        failure = None
        try:
            response = self.session.request(
                method,
                self.url + path,
                timeout=self.timeout,
                allow_redirects=False,
                verify=self._verify,  # per request: REQUESTS_CA_BUNDLE overrides the session's (tls.py)
                **kwargs,
            )
        except requests.Timeout:
            failure = f"no answer within {self.timeout:g} s"
        except requests.RequestException as exc:
            failure = tls.certificate_problem(exc) or f"{type(exc).__name__}: {exc}"
        if failure is not None:  # raised outside the except clause: no chained text with a secret
            raise IcatPlusUnavailable(self.redact(f"ICAT+ {what}: {method} {self.url}{path}: {failure}"))
        if response.status_code in (401, 403):
            raise _AuthRefused(f"ICAT+ {what}: refused ({response.status_code}): the session expired?")
        if not 200 <= response.status_code < 300:
            # redacted before it is cut: a cut through a secret would leave a piece of it
            text = self.redact((response.text or "").strip())[:MAX_ANSWER]
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


class _PyIcatPlus:
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
        lost = [p.get("name") for p in answer if not _ident(p)]
        lost += [i.get("name") for p in answer for i in _all_items(p) if not _ident(i)]
        if lost:
            raise _Quirk(f"pyicat-plus returned {len(lost)} parcel(s)/item(s) without id ({lost[:3]})")
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
                raise _AuthRefused(f"ICAT+ {what}: refused ({exc.status}): the session expired?") from None
            failure = f"HTTP {exc.status} {self.redact(str(exc.body or ''))[:MAX_ANSWER]}"
        except pydantic.ValidationError as exc:
            raise _Quirk(f"pyicat-plus refused ICAT+'s answer: {str(exc).splitlines()[0]}") from None
        except urllib3.exceptions.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}"
        raise IcatPlusUnavailable(self.redact(f"ICAT+ {what} (pyicat-plus): {failure}"))


def _all_items(node: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for item in _children(node):
        if isinstance(item, Mapping):
            yield item
            yield from _all_items(item)


def _select_investigation(investigations: list[Any], now: float) -> Any:
    """pyicat-plus's rule: the last one started at or before now, else the first one after."""
    dated = []
    for info in investigations:
        if not isinstance(info, Mapping) or _text(info.get("id")) is None:
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


# --- the registry ----------------------------------------------------------------------------------


def current_proposal() -> str | None:
    """The proposal of the current BLISS session under the ESRF data policy, else None."""
    from bliss import current_session

    from bliss_sampletrack.tagging import data_policy

    # a proxy: "is None" is never true of it, even outside a session
    session = getattr(current_session, "__wrapped__", current_session)
    return data_policy.proposal_name(session) if session is not None else None


def _has_note_field() -> bool:
    return "registry_note" in {f.name for f in fields(Sample)}


class IcatPlusRegistry:
    """Samples declared in the ICAT+ parcels of the current proposal (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        redis: Any,
        beamline: str,
        credentials: Credentials,
        proposal: Callable[[], str | None] = current_proposal,
        api_key: str | None = None,
        investigation_id: str | None = None,
        instrument: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        barcode_fields: Iterable[str] = ("name",),
        sample_name: str = "item",
        client: str = "auto",
        no_read: Iterable[str] = (),
        verify_tls: object = True,
        name: str = "icatplus",
        clock: Callable[[], float] = time.time,
        context: str | None = None,
    ) -> None:
        context = context or f"registry {name!r}"
        if api_key is None and investigation_id is None:
            raise ConfigurationError(
                f"{context}: give api_key (to find the investigation) or investigation_id"
            )
        if client not in CLIENTS:
            raise ConfigurationError(
                f"{context}: key 'client' must be one of {', '.join(CLIENTS)}, got {client!r}"
            )
        if client == "pyicatplus" and verify_tls is not True:
            raise ConfigurationError(
                f"{context}: key 'client' is pyicatplus, which cannot take 'verify_tls' (pyicat-plus "
                "makes its HTTP client itself, always verifying against the system's CAs): use "
                "client 'auto' or 'http' with this verify_tls"
            )
        self.name = name
        self.url = url.rstrip("/")
        self.redis = redis
        self.beamline = beamline
        self.instrument = instrument or beamline
        self.investigation_id = investigation_id
        self.timeout = float(timeout)
        self.cache_ttl = float(cache_ttl)
        self.barcode_fields = tuple(barcode_fields)
        self.sample_name = sample_name
        self.no_read = tuple(no_read)
        self._proposal = proposal
        self._credentials = credentials
        self._api_key = api_key
        self._clock = clock
        self._secrets: list[str] = []
        self._hide(credentials.secrets() | ({api_key} if api_key else set()))
        self._http = _Http(self.url, self.timeout, verify_tls, self._redact, name=name, context=context)
        # pyicat-plus cannot be given verify_tls: with anything but the default, only requests
        use_pyicat = client == "pyicatplus" or (
            client == "auto" and verify_tls is True and pyicatplus_has_parcels()
        )
        if client == "pyicatplus" and not pyicatplus_has_parcels():
            raise ConfigurationError(
                f"{context}: key 'client' pyicatplus needs pyicat-plus >= 3 (get_parcels_by); "
                f"the installed one has none: use 'auto' or 'http'"
            )
        self._pyicat = _PyIcatPlus(self.url, self._redact) if use_pyicat else None
        self.client = "pyicat-plus" if use_pyicat else "requests"
        self._session_id = credentials.session_id
        self._cache: ParcelCache | None = None
        self._failure: tuple[str, float, str] | None = None  # proposal, when, why
        self._lock = gevent.lock.Semaphore()
        #: the outcome of the last resolve / resolve_location
        self.last: Resolution | None = None

    # -- the SampleRegistry protocol ------------------------------------------------------------------

    def resolve(self, barcode: str) -> Sample | None:
        """The sample whose barcode field holds ``barcode``, or None (see :attr:`reason`)."""
        try:
            code = validate_barcode(barcode, no_read=self.no_read)
        except InvalidBarcodeError as exc:
            return self._none(str(barcode), f"not a barcode: {exc}")
        return self._lookup(code, lambda cache: cache.by_barcode.get(code, set()), barcode=code)

    def resolve_location(self, location: str | int, position: str | int | None = None) -> Sample | None:
        """The sample at a changer address: ``(sampleChangerLocation, sampleContainerPosition)``,
        or one text ``"3:05"`` (puck 3, position 5, the changers' address form)."""
        query = f"{location}" if position is None else f"{location}:{position}"
        if position is None:
            from bliss_sampletrack.changers.protocol import parse_address

            parsed = parse_address(str(location))
            if parsed is None:
                return self._none(query, f"{query!r} is not a changer address like '3:05'")
            location, position = parsed
        key = (_position(location), _position(position))
        if None in key:
            return self._none(query, f"{query!r} is not a changer address")
        return self._lookup(query, lambda cache: cache.by_location.get(key, set()))  # type: ignore[arg-type]

    def describe(self) -> str:
        proposal = self._current_proposal()
        head = f"ICAT+ {self.url}"
        if proposal is None:
            return f"{head} (no proposal: the ESRF data policy is off)"
        cache = self._cached(proposal)
        if cache is None:
            text = f"{head} (proposal {proposal}: no cache yet"
        else:
            age = self._clock() - cache.fetched_at
            text = (
                f"{head} (proposal {proposal}, investigation {cache.investigation_id}: "
                f"{len(cache.records)} samples in {cache.parcels} parcels, "
                f"fetched {cache.when}, {age:.0f} s ago"
            )
        if self._failure is not None and self._failure[0] == proposal:
            text += f"; last refresh failed: {self._failure[2]}"
            if cache is not None:
                text += "; serving the cache, may be stale"
        return text + ")"

    # -- cache ------------------------------------------------------------------------------------------

    def age(self) -> float | None:
        """Seconds since the current proposal's parcels were fetched; None without a cache."""
        proposal = self._current_proposal()
        cache = self._cached(proposal) if proposal else None
        return None if cache is None else self._clock() - cache.fetched_at

    @property
    def reason(self) -> str | None:
        """Why the last resolve gave no sample (None when it gave one)."""
        if self.last is None or self.last.sample is not None:
            return None
        return self.last.note

    def refresh(self) -> ParcelCache:
        """Fetch the current proposal's parcels now; raises :class:`IcatPlusUnavailable` on failure."""
        proposal = self._current_proposal()
        if proposal is None:
            raise IcatPlusUnavailable(f"registry {self.name!r}: no proposal (the ESRF data policy is off)")
        if not self._lock.acquire(timeout=self.timeout + 1):
            raise IcatPlusUnavailable(f"registry {self.name!r}: another refresh is under way")
        try:
            return self._fetch(proposal)
        finally:
            self._lock.release()

    def prefetch(self) -> gevent.Greenlet:
        """Refresh in the background if the cache is missing or old (e.g. after a proposal change)."""

        def run() -> None:
            proposal = self._current_proposal()
            if proposal is not None:
                self._ensure(proposal)

        greenlet = gevent.spawn(run)
        greenlet.name = f"sampletrack-{self.name}-prefetch"
        return greenlet

    def close(self) -> None:
        self._http.close()
        if self._pyicat is not None:
            self._pyicat.close()

    def __repr__(self) -> str:
        return f"IcatPlusRegistry({self.name!r}, {self.url!r}, client={self.client})"

    # -- internals ---------------------------------------------------------------------------------------

    def _current_proposal(self) -> str | None:
        proposal = self._proposal()
        return str(proposal) if proposal else None

    def _none(self, query: str, why: str, stale: bool = False) -> None:
        log.info("registry %r: %s: %s", self.name, query, why)
        self.last = Resolution(query, None, stale=stale, note=why)
        return None

    def _lookup(
        self, query: str, find: Callable[[ParcelCache], set[int]], barcode: str | None = None
    ) -> Sample | None:
        proposal = self._current_proposal()
        if proposal is None:
            return self._none(query, "no proposal: the ESRF data policy is off")
        cache, note = self._ensure(proposal)
        if cache is None:
            return self._none(query, note or "no parcels")
        found = sorted(find(cache))
        if not found:
            why = f"not in the ICAT+ parcels of proposal {proposal} (fetched {cache.when})"
            return self._none(query, f"{why}; {note}" if note else why, stale=note is not None)
        if len(found) > 1:
            where = ", ".join(self._where(cache.records[i]) for i in found[:4])
            return self._none(query, f"ambiguous: {len(found)} ICAT+ sample items match ({where})")
        try:
            sample = self._sample(cache.records[found[0]], barcode)
        except SampleTrackError as exc:
            return self._none(query, f"the ICAT+ record cannot be a sample: {exc}")
        if note is not None and _has_note_field():
            sample = replace(sample, registry_note=note[:NOTE_MAX])  # type: ignore[call-arg]
        self.last = Resolution(query, sample, stale=note is not None, note=note, fetched_at=cache.fetched_at)
        return sample

    @staticmethod
    def _where(record: Mapping[str, Any]) -> str:
        return f"{record.get('item_name')} in {record.get('container_name')} of {record.get('parcel_name')}"

    def _sample(self, record: Mapping[str, Any], barcode: str | None) -> Sample:
        if barcode is None:  # by location: the first barcode field that holds a valid code
            for name in self.barcode_fields:
                code = record.get(BARCODE_FIELDS[name])
                try:
                    barcode = validate_barcode(code, no_read=self.no_read) if code else None
                except InvalidBarcodeError:
                    continue
                if barcode:
                    break
        name = record.get("item_name")
        if self.sample_name == "sample_sheet":
            name = record.get("sheet_name") or name
        return Sample(
            barcode=barcode,
            name=name,
            sample_id=record.get("sample_id"),
            parcel_id=record.get("parcel_id"),
            parcel_name=record.get("parcel_name"),
            container_id=record.get("container_id"),
            container_name=record.get("container_name"),
            container_position=record.get("container_position"),
        )

    def _fresh(self, cache: ParcelCache | None) -> bool:
        return cache is not None and self._clock() - cache.fetched_at <= self.cache_ttl

    def _cached(self, proposal: str) -> ParcelCache | None:
        """The newest cache of ``proposal``: this process's, or the one in Redis."""
        mine = self._cache if self._cache is not None and self._cache.proposal == proposal else None
        if self._fresh(mine):
            return mine
        shared = self._load(proposal)
        if shared is not None and (mine is None or shared.fetched_at > mine.fetched_at):
            self._cache = shared
            return shared
        return mine

    def _ensure(self, proposal: str) -> tuple[ParcelCache | None, str | None]:
        """(cache, note): a fresh cache and None, or the old one (or None) and why it is not fresh."""
        cache = self._cached(proposal)
        if self._fresh(cache):
            return cache, None
        failure = self._failure
        if failure is not None and failure[0] == proposal and self._clock() - failure[1] < RETRY_AFTER:
            return cache, self._stale_note(cache, failure[2])
        if not self._lock.acquire(timeout=self.timeout + 1):  # another greenlet is fetching
            return cache, self._stale_note(cache, "a refresh is under way")
        try:
            cache = self._cached(proposal)  # it may have fetched it meanwhile
            if self._fresh(cache):
                return cache, None
            return self._fetch(proposal), None
        except IcatPlusUnavailable as exc:
            return cache, self._stale_note(cache, str(exc))
        finally:
            self._lock.release()

    @staticmethod
    def _stale_note(cache: ParcelCache | None, why: str) -> str:
        if cache is None:
            return f"no ICAT+ parcels cached; {why}"
        return f"from the ICAT+ cache of {cache.when}, may be stale: {why}"

    def _fetch(self, proposal: str) -> ParcelCache:
        """Ask ICAT+ (the whole exchange bounded by ``timeout``), then cache; raises on failure."""
        timer = gevent.Timeout(self.timeout)
        timer.start()
        try:
            try:
                investigation_id, parcels, sheet_names = self._ask(proposal)
            finally:
                timer.close()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            why = f"ICAT+ gave no complete answer within {self.timeout:g} s"
        except IcatPlusUnavailable as exc:
            why = str(exc)
        else:
            return self._keep(proposal, investigation_id, parcels, sheet_names)
        self._failure = (proposal, self._clock(), why)
        log.warning("registry %r: refreshing proposal %s failed: %s", self.name, proposal, why)
        raise IcatPlusUnavailable(why)

    def _keep(
        self, proposal: str, investigation_id: str, parcels: list[Any], sheet_names: dict[str, str]
    ) -> ParcelCache:
        records = flatten(parcels, sheet_names)
        cache = ParcelCache(proposal, investigation_id, self._clock(), records, len(parcels))
        self._cache = cache.index(self.barcode_fields, self.no_read)
        self._failure = None
        self._store(cache)
        log.info(
            "registry %r: %d samples in %d parcels of proposal %s (investigation %s) from ICAT+ %s",
            self.name,
            len(records),
            cache.parcels,
            proposal,
            investigation_id,
            self.url,
        )
        return cache

    def _ask(self, proposal: str) -> tuple[str, list[Any], dict[str, str]]:
        investigation_id = self.investigation_id or self._investigation(proposal)
        parcels = self._with_session(lambda sid: self._via("parcels", sid, investigation_id))
        sheet_names: dict[str, str] = {}
        if self.sample_name == "sample_sheet":
            samples = self._with_session(lambda sid: self._via("samples", sid, investigation_id))
            sheet_names = {
                _text(s.get("id")): _text(s.get("name"))  # type: ignore[misc]
                for s in samples
                if isinstance(s, Mapping) and _text(s.get("id")) and _text(s.get("name"))
            }
        return investigation_id, parcels, sheet_names

    def _via(self, method: str, *args: Any) -> Any:
        """``method`` through pyicat-plus when it is used; as JSON with ``requests`` when pyicat-plus
        lost or refused part of the answer (the quirks in the module docstring), or is not used."""
        if self._pyicat is not None:
            try:
                return getattr(self._pyicat, method)(*args)
            except _Quirk as exc:
                log.info("registry %r: %s; asking again as JSON", self.name, exc)
        return getattr(self._http, method)(*args)

    def _with_session(self, call: Callable[[str], Any]) -> Any:
        credentials = self._credentials
        if self._session_id is None:
            self._session_id = self._login()
        try:
            return call(self._session_id)
        except _AuthRefused:
            if not credentials.login:
                raise _AuthRefused(
                    f"ICAT+ refused the session id from {credentials.source} (expired?): renew it"
                ) from None
            log.info("registry %r: ICAT+ refused the session; logging in again", self.name)
            self._session_id = self._login()
            return call(self._session_id)

    def _login(self) -> str:
        credentials = self._credentials
        if not credentials.login:
            raise IcatPlusUnavailable(f"no ICAT session id (from {credentials.source})")
        try:
            session_id = self._via("login", credentials)
            self._hide({session_id})  # a session id from a login is as secret as a configured one
            return session_id
        except _AuthRefused:
            raise IcatPlusUnavailable(
                f"ICAT+ refused the login of {credentials.username!r} (password from {credentials.source})"
            ) from None

    def _investigation(self, proposal: str) -> str:
        assert self._api_key is not None
        try:
            found = self._http.investigations(self._api_key, self.instrument, proposal)
        except _AuthRefused:
            raise IcatPlusUnavailable(
                "ICAT+ refused the beamline API key (api_key / api_key_env) when looking up the investigation"
            ) from None
        chosen = _select_investigation(found, self._clock())
        if chosen is None:
            raise IcatPlusUnavailable(
                f"ICAT+ knows no investigation of proposal {proposal} on {self.instrument}"
            )
        return str(_text(chosen.get("id")))

    def _key(self, proposal: str) -> str:
        return f"{KEY_PREFIX}:{self.beamline}:{proposal}"

    def _load(self, proposal: str) -> ParcelCache | None:
        from redis.exceptions import RedisError

        try:
            raw = self.redis.get(self._key(proposal))
        except RedisError as exc:
            log.warning("registry %r: cannot read the cache from Redis: %s", self.name, exc)
            return None
        if raw is None:
            return None
        try:
            return ParcelCache.from_json(raw).index(self.barcode_fields, self.no_read)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "registry %r: ignoring the unreadable cache %s: %s", self.name, self._key(proposal), exc
            )
            return None

    def _store(self, cache: ParcelCache) -> None:
        from redis.exceptions import RedisError

        try:
            self.redis.set(self._key(cache.proposal), cache.to_json(), ex=CACHE_KEEP)
        except RedisError as exc:  # the cache then lives in this process only
            log.warning("registry %r: cannot write the cache to Redis: %s", self.name, exc)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _hide(self, secrets: set[str]) -> None:
        """Keep ``secrets`` out of this registry's texts and of urllib3's logs (URL paths)."""
        forms = set(self._secrets).union(*(secret_forms(s) for s in secrets))
        self._secrets = sorted(forms, key=len, reverse=True)
        protect(secrets)

    # -- configuration -------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        node: Mapping[str, Any],
        where: str,
        *,
        redis: Any,
        beamline: str,
        proposal: Callable[[], str | None] = current_proposal,
        no_read: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> IcatPlusRegistry:
        """Build the registry from one item of a tracker's ``registries:`` list (``type: icatplus``).

        ``where`` names the tracker and its file, for the messages; ``proposal`` gives the current
        proposal (default: the ESRF data policy's); ``no_read``: the tracker's extra no-read strings.
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
                raise bad(
                    "username", "must be the ICAT user name to log in with (password from password_env)"
                )
            if not isinstance(plugin, str) or not plugin.strip():
                raise bad("auth_plugin", f"must name an ICAT authenticator (e.g. esrf), got {plugin!r}")
            password, source = _secret(node, "password", "password_env", DEFAULT_PASSWORD_ENV, context)
            credentials = Credentials(
                username=username.strip(), password=password, plugin=plugin, source=source
            )
        else:
            session_id, source = _secret(
                node, "session_id", "session_id_env", DEFAULT_SESSION_ID_ENV, context
            )
            credentials = Credentials(session_id=session_id, source=source)
        raw_id, api_key = node.get("investigation_id"), None
        investigation_id = None if raw_id is None else str(raw_id).strip()
        if investigation_id is None:
            api_key, _ = _secret(node, "api_key", "api_key_env", DEFAULT_API_KEY_ENV, context)
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
        return cls(
            url.strip(),
            redis=redis,
            beamline=beamline,
            credentials=credentials,
            proposal=proposal,
            api_key=api_key,
            investigation_id=investigation_id,
            instrument=instrument,
            barcode_fields=barcode_fields,
            sample_name=node.get("sample_name", "item"),
            client=node.get("client", "auto"),
            no_read=no_read,
            verify_tls=node.get("verify_tls", True),  # checked by tls.verify_setting
            name=name,
            clock=clock,
            context=context,
            **seconds,
        )


def _secret(
    node: Mapping[str, Any], key: str, env_key: str, default_env: str, context: str
) -> tuple[str, str]:
    """A secret from the YAML (``key``) or, better, an environment variable (``env_key``).

    Returns (secret, where it came from); messages never contain the value.
    """
    value = node.get(key)
    if value is not None:
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{context}: key {key!r} must be non-empty text")
        return value, f"key {key!r} of the YAML"
    env = node.get(env_key, default_env)
    if not isinstance(env, str) or not env:
        raise ConfigurationError(f"{context}: key {env_key!r} must be the name of an environment variable")
    value = os.environ.get(env)
    if not value:
        raise ConfigurationError(
            f"{context}: no {key}: set the environment variable {env} "
            f"(or {env_key!r} to another variable's name)"
        )
    return value, f"${env}"


def resolve_location(registry: Any, location: str | int, position: str | int | None = None) -> Sample | None:
    """``resolve_location`` through a registry or a chain of them (``ChainRegistry.registries``):
    the first registry that can resolve addresses and knows this one answers."""
    for member in getattr(registry, "registries", [registry]):
        finder = getattr(member, "resolve_location", None)
        if finder is not None:
            sample = finder(location, position)
            if sample is not None:
                return sample
    return None
