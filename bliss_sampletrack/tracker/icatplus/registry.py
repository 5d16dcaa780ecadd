"""The ICAT+ sample registry: :class:`IcatPlusRegistry` resolves a barcode or a changer address
through the cached, flattened ICAT+ parcels of the current proposal, refreshing them when old.

Cache and staleness
-------------------
A cache (:mod:`bliss_sampletrack.tracker.icatplus.cache`) younger than ``cache_ttl`` is used as
is; an older one, or a new proposal, makes the next resolve refresh it (bounded by ``timeout``),
and :meth:`~IcatPlusRegistry.refresh` does it on demand (:meth:`~IcatPlusRegistry.prefetch` in a
background greenlet, e.g. when the tracker starts). When ICAT+ cannot be reached (error,
timeout, refused session), the previous cache still answers and the resolution says the record
may be stale (:attr:`~IcatPlusRegistry.last`, and the sample's ``registry_note`` once
:class:`Sample` has that field); automatic retries then wait ``RETRY_AFTER`` seconds. With no
cache at all, resolve returns None and :attr:`~IcatPlusRegistry.reason` says why.

Secrets (password, session id, API key) never appear in ``repr``, ``describe()``, this package's
logs or exceptions: texts derived from a request have them replaced by ``***``, and urllib3's
loggers get the same filter as the ICAT+ delivery client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import gevent
import gevent.lock

from bliss_sampletrack.core import Sample
from bliss_sampletrack.core.barcode import validate_barcode
from bliss_sampletrack.delivery.icatplus_json import as_position, as_text
from bliss_sampletrack.delivery.secrets import protect, redact, secret_forms
from bliss_sampletrack.errors import ConfigurationError, InvalidBarcodeError, SampleTrackError
from bliss_sampletrack.tracker.icatplus.cache import ParcelCache, cache_key, load, store
from bliss_sampletrack.tracker.icatplus.client import (
    Credentials,
    HttpClient,
    PyIcatPlusClient,
    pyicatplus_has_parcels,
    select_investigation,
)
from bliss_sampletrack.tracker.icatplus.config import CLIENTS, DEFAULT_CACHE_TTL, DEFAULT_TIMEOUT, options
from bliss_sampletrack.tracker.icatplus.errors import AuthRefused, IcatPlusUnavailable, Quirk
from bliss_sampletrack.tracker.icatplus.parcels import BARCODE_FIELDS, flatten
from bliss_sampletrack.tracker.registry import ChainRegistry, Locating

log = logging.getLogger(__name__)

#: after a failed refresh, automatic refreshes wait this long (refresh() does not)
RETRY_AFTER = 30.0
#: the longest note put on a sample (the proposed ``Sample.registry_note`` allows 512)
NOTE_MAX = 500


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of the last resolve: the sample (or None), whether it may be stale, and why."""

    query: str
    sample: Sample | None
    stale: bool = False
    note: str | None = None
    fetched_at: float | None = None


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
    """Samples declared in the ICAT+ parcels of the current proposal (see the package docstring)."""

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
        self._http = HttpClient(self.url, self.timeout, verify_tls, self._redact, name=name, context=context)
        # pyicat-plus cannot be given verify_tls: with anything but the default, only requests
        use_pyicat = client == "pyicatplus" or (
            client == "auto" and verify_tls is True and pyicatplus_has_parcels()
        )
        if client == "pyicatplus" and not pyicatplus_has_parcels():
            raise ConfigurationError(
                f"{context}: key 'client' pyicatplus needs pyicat-plus >= 3 (get_parcels_by); "
                f"the installed one has none: use 'auto' or 'http'"
            )
        self._pyicat = PyIcatPlusClient(self.url, self._redact) if use_pyicat else None
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
            from bliss_sampletrack.core.address import parse_address

            parsed = parse_address(str(location))
            if parsed is None:
                return self._none(query, f"{query!r} is not a changer address like '3:05'")
            location, position = parsed
        key = (as_position(location), as_position(position))
        if None in key:
            return self._none(query, f"{query!r} is not a changer address")
        return self._lookup(query, lambda cache: cache.by_location.get(key, set()))  # type: ignore[arg-type]

    def item_of(self, barcode: str) -> dict[str, Any] | None:
        """The cached ICAT+ item of ``barcode`` (its flattened record and ``investigation_id``), or
        None: no proposal, no cache, or not exactly one item. Never fetches: an inventory asks
        after resolving the same barcodes (tracker/writeback.py)."""
        proposal = self._current_proposal()
        cache = None if proposal is None else self._cached(proposal)
        found = set() if cache is None else cache.by_barcode.get(barcode, set())
        if cache is None or len(found) != 1:
            return None
        return {**cache.records[next(iter(found))], "investigation_id": cache.investigation_id}

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
                as_text(s.get("id")): as_text(s.get("name"))  # type: ignore[misc]
                for s in samples
                if isinstance(s, Mapping) and as_text(s.get("id")) and as_text(s.get("name"))
            }
        return investigation_id, parcels, sheet_names

    def _via(self, method: str, *args: Any) -> Any:
        """``method`` through pyicat-plus when it is used; as JSON with ``requests`` when pyicat-plus
        lost or refused part of the answer (the quirks in client.py's docstring), or is not used."""
        if self._pyicat is not None:
            try:
                return getattr(self._pyicat, method)(*args)
            except Quirk as exc:
                log.info("registry %r: %s; asking again as JSON", self.name, exc)
        return getattr(self._http, method)(*args)

    def _with_session(self, call: Callable[[str], Any]) -> Any:
        credentials = self._credentials
        if self._session_id is None:
            self._session_id = self._login()
        try:
            return call(self._session_id)
        except AuthRefused:
            if not credentials.login:
                raise AuthRefused(
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
        except AuthRefused:
            raise IcatPlusUnavailable(
                f"ICAT+ refused the login of {credentials.username!r} (password from {credentials.source})"
            ) from None

    def _investigation(self, proposal: str) -> str:
        assert self._api_key is not None
        try:
            found = self._http.investigations(self._api_key, self.instrument, proposal)
        except AuthRefused:
            raise IcatPlusUnavailable(
                "ICAT+ refused the beamline API key (api_key / api_key_env) when looking up the investigation"
            ) from None
        chosen = select_investigation(found, self._clock())
        if chosen is None:
            raise IcatPlusUnavailable(
                f"ICAT+ knows no investigation of proposal {proposal} on {self.instrument}"
            )
        return str(as_text(chosen.get("id")))

    def _key(self, proposal: str) -> str:
        return cache_key(self.beamline, proposal)

    def _load(self, proposal: str) -> ParcelCache | None:
        return load(self.redis, self._key(proposal), self.barcode_fields, self.no_read, name=self.name)

    def _store(self, cache: ParcelCache) -> None:
        store(self.redis, self._key(cache.proposal), cache, name=self.name)

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
        return cls(
            **options(node, where),
            redis=redis,
            beamline=beamline,
            proposal=proposal,
            no_read=no_read,
            clock=clock,
        )


def resolve_location(registry: Any, location: str | int, position: str | int | None = None) -> Sample | None:
    """``resolve_location`` through a registry or a chain of them (``ChainRegistry.registries``):
    the first registry that can resolve addresses and knows this one answers."""
    members = registry.registries if isinstance(registry, ChainRegistry) else [registry]
    for member in members:
        if isinstance(member, Locating):
            sample = member.resolve_location(location, position)
            if sample is not None:
                return sample
    return None
