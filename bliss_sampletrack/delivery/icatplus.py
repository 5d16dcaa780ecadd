"""ICAT+ delivery client: each event as an e-logbook notification, and optionally a parcel status update.

What is sent, per event (``max_batch = 1``)
-------------------------------------------
1. The e-logbook notification: the path, query and body keys pyicat-plus's ``IcatClient.send_message(
   text, msg_type="info", beamline=..., proposal=..., tags=[...])`` uses (API key in the path)::

       POST {url}/dataacquisition/{api_key}/notification
            ?instrumentName={beamline}[&investigationName={proposal}]
       {"type": "notification", "category": "info" | "error",
        "content": [{"format": "plainText", "text": "Sample mounted: ...\\nsampletrack event ..."}],
        "machine": <host that made the event>, "software": "bliss-sampletrack_v<version>",
        "tag": [{"name": "sampletrack"}, {"name": "mounted"}, {"name": <barcode>}, ...],
        "creationDate": <when the event occurred, ISO 8601 with its offset>}

   ``investigationName`` is left out when the event has no proposal (beamline logbook only). The
   category is ``error`` for a failed mount/unmount (``status: ERROR``), ``info`` otherwise.
   ``creationDate`` is the event's ``occurred_at`` (pyicat-plus puts "now"), so an event delivered
   late, after an outage, lands at the right place in the logbook.

2. When ``parcel_status`` is configured (and not ``enabled: false``), the event succeeded, the
   sample's ``parcel_id`` is known and a status is configured for this event type (by default on
   mount only), the parcel's status and location::

       PUT {url}/tracking/{session_id}/investigation/id/{investigation_id}/parcel/id/{parcel_id}/parcel/status
       {"status": "BEAMLINE", "location": "id23-1"}

Why the requests are made here with ``requests`` and not through pyicat-plus
-----------------------------------------------------------------------------
Both pyicat-plus versions of the two test stacks were read and tried against a loopback server:

- 0.1.10 (BLISS 2.0.3): ``IcatElogbookClient`` posts with ``requests.post(json=..., timeout=0.1)``
  to ``urljoin(url, "dataacquisition/{key}/notification")``; an HTTP error raises
  ``requests.HTTPError`` and a connection error ``requests.ConnectionError`` (both with the full URL,
  API key included, in their text), but a ``ReadTimeout`` is *swallowed*: ``send_message`` returns
  ``None`` exactly as on success ("we have no confirmation that the call succeeded"). Body tags are
  ``[{"name": ...}]``, ``creationDate`` is naive local time. No parcel/tracking call at all.
- 3.1.0 (BLISS 2.4): the same path and body through the generated ``icat_plus_client``
  (urllib3): 4xx/5xx raise ``icat_plus_client.exceptions.ApiException`` subclasses
  (``NotFoundException``, ``ServiceException``...), connection errors ``urllib3`` ``MaxRetryError``
  (the key in its text, and in urllib3's "Retrying ..." warnings), and again any
  ``urllib3.exceptions.TimeoutError`` is swallowed. pyicat-plus 3.1.0 has no parcel status call
  either (only ``get_parcels_by``); the underlying ``icat_plus_client.TrackingApi`` has a generated
  ``..._parcel_status_put``, not used so that both stacks share one code path and one error mapping.

With a swallowed timeout a hung or slow ICAT+ would count as DELIVERED while nothing was stored,
so this client never calls ``send_message``: it builds the same path and body itself and posts
them with ``requests`` (cooperative under gevent), reading the status code of every answer. So the
behaviour does not depend on the installed pyicat-plus version; only the base URL is joined as
3.1.0 does (``url`` + ``/dataacquisition/...``, keeping a path prefix such as ``/icatplus``, which
0.1.10's ``urljoin`` would drop unless the URL ends with ``/``).

Verdicts (the contract's delivery rules)
----------------------------------------
2xx: delivered. Connection errors, timeouts (``timeout``, default 10 s; pyicat-plus's default is
0.1 s), 408, 429 and 5xx: :class:`RetryLater` (with the ``Retry-After`` hint). Any other answer
(400, 401, 403, 404, a 3xx redirect: never followed, a POST turned into a GET would be lost):
REJECTED, a dead letter carrying the answer. If the notification went through but the parcel
update fails: retryable -> ``RetryLater`` (the retry sends only the parcel update, see below);
refused -> REJECTED, with a detail saying the notification itself was delivered.

What a retry can duplicate in ICAT+ (it has no idempotency key)
---------------------------------------------------------------
ICAT+ creates a new logbook entry for every notification POST and has no way to recognise a
repeated one, so the same notification appears twice in the e-logbook when:

- ICAT+ stored it but the answer was lost: a timeout, a dropped connection, or a 5xx from a proxy
  in front of an ICAT+ that did store it (502/504). The event is retried and posted again.
- the process delivering it stopped (crash, kill, lost lock) after ICAT+ stored it and before the
  outbox marked it done: the next deliverer sends it again.
- the notification was delivered but the parcel update was refused (dead letter) and the dead
  letter is retried by *another* process (``sampletrack deliver``, a restarted session). Within the
  process that delivered it, the client remembers (in memory, the last 1000 events) which
  notifications ICAT+ confirmed, and a retry of such an event sends the parcel update only.

The parcel ``PUT`` sets a value, so repeating it leaves the same status and location, but ICAT+
keeps a history of a parcel's statuses: a repeated PUT (lost answer, restart, each mount of another
sample of the same parcel) adds another identical entry to that history. A PUT is retried only
while later events wait (in order), so an old status never overwrites a newer one sent from here;
it can overwrite a change made meanwhile by someone else in the ICAT+ web interface.

Each notification ends with a line ``sampletrack event <event_id>``, so duplicates are easy to spot.

Secrets
-------
The beamline API key (``api_key``, better ``api_key_env``, default ``ICATPLUS_API_KEY``) and the
ICAT session id of the parcel updates (``session_id_env``, default ``ICATPLUS_SESSION_ID``) are part
of the URL *paths* (ICAT+'s design). They never appear in ``describe()``, this module's logs,
exceptions or dead-letter details: every text derived from a request (exception, answer body,
redirect location) has them replaced by ``***``, and a logging filter does the same on urllib3's
loggers, which print request URLs at DEBUG level (and in retry warnings).

Configuration (one item of the tracker's ``delivery:`` list; see config_examples/delivery/icatplus.yml)
--------------------------------------------------------------------------------------------------------
``name``, ``type: icatplus``, ``url`` (ICAT+ base URL, http:// or https://), ``api_key`` or
``api_key_env``, ``timeout`` (s, 10), ``verify_tls`` (true, false or a CA bundle path: see tls.py),
``tags`` (extra tags for every notification), ``parcel_status`` (optional mapping): ``enabled`` (true),
``investigation_id`` (required: the ICAT investigation id, a number), ``session_id`` or
``session_id_env``, ``status_mounted`` ("BEAMLINE"), ``status_unmounted`` (null: no update on
unmount), ``status_emptied`` (null: an inventory's emptied parcel is not written back),
``location`` ("{beamline}"; placeholders ``{beamline}``, ``{sample_changer}``, ``{position}``);
``item_corrections`` (false; true needs ``parcel_status``: an inventory's moved samples corrected
in their ICAT+ items). Those two are written back from the write-back outbox by
:mod:`~bliss_sampletrack.delivery.icatplus_writeback` (``writeback()``). Status values are ICAT+'s
and not checked here: one it refuses dead-letters the event. Unknown keys are refused (a typo
must not silently disable something).

Caveat: the ICAT session id expires (ICAT sessions last hours); once it has, ICAT+ answers 403 and
every event with a parcel dead-letters (notification delivered, parcel update refused) until the
variable is renewed and the process restarted.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bliss_sampletrack import __version__
from bliss_sampletrack.core import Event, EventType, Status
from bliss_sampletrack.delivery import http_answers, tls
from bliss_sampletrack.delivery.base import Result, RetryLater, Verdict, classify_2xx, send_each
from bliss_sampletrack.delivery.http_answers import MAX_ANSWER, retry_after
from bliss_sampletrack.delivery.secrets import check_known, protect, redact, secret, secret_forms
from bliss_sampletrack.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "ICATPLUS_API_KEY"
DEFAULT_SESSION_ID_ENV = "ICATPLUS_SESSION_ID"
DEFAULT_TIMEOUT = 10.0
DEFAULT_STATUS_MOUNTED = "BEAMLINE"
DEFAULT_LOCATION = "{beamline}"
LOCATION_FIELDS = ("beamline", "sample_changer", "position")
#: pyicat-plus's default ``elogbook_token``: a placeholder, never a real key
PLACEHOLDER_API_KEY = "elogbook-00000000-0000-0000-0000-000000000000"
PLACEHOLDER_WHAT = "pyicat-plus's placeholder (elogbook-0000...), not a beamline API key"
TAG = "sampletrack"
REMEMBERED_EVENTS = 1000

TOP_KEYS = frozenset(
    {
        "name",
        "type",
        "url",
        "api_key",
        "api_key_env",
        "timeout",
        "verify_tls",
        "tags",
        "parcel_status",
        "item_corrections",
    }
)
PARCEL_KEYS = frozenset(
    {
        "enabled",
        "investigation_id",
        "session_id",
        "session_id_env",
        "status_mounted",
        "status_unmounted",
        "status_emptied",
        "location",
    }
)


@dataclass(frozen=True, slots=True)
class ParcelStatusConfig:
    """What to set on a sample's parcel when it is mounted or unmounted."""

    investigation_id: str
    session_id: str = field(repr=False)
    session_id_source: str = "the YAML"
    status_mounted: str | None = DEFAULT_STATUS_MOUNTED
    status_unmounted: str | None = None
    location: str | None = DEFAULT_LOCATION
    status_emptied: str | None = None  # set when an inventory finds none of its samples left

    def status_for(self, event: Event) -> str | None:
        return self.status_mounted if event.type is EventType.MOUNTED else self.status_unmounted

    def location_for(self, event: Event) -> str | None:
        if not self.location:
            return None
        sample = event.sample
        text = self.location.format(
            beamline=event.beamline,
            sample_changer=sample.changer_name or "",
            position=sample.changer_position or "",
        ).strip()
        return text or None

    @classmethod
    def from_config(cls, node: Any, context: str) -> ParcelStatusConfig | None:
        """``node``: the ``parcel_status`` mapping; None when absent or ``enabled: false``."""
        if node is None:
            return None
        if not isinstance(node, Mapping):
            raise ConfigurationError(
                f"{context}: key 'parcel_status' must be a mapping (investigation_id, session_id_env, "
                f"status_mounted, status_unmounted, location), got {type(node).__name__}"
            )
        check_known(node, PARCEL_KEYS, context, "parcel_status.")
        enabled = node.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigurationError(f"{context}: key 'parcel_status.enabled' must be true or false")
        if not enabled:
            return None
        investigation_id = node.get("investigation_id")
        if isinstance(investigation_id, bool) or not isinstance(investigation_id, int | str):
            raise ConfigurationError(
                f"{context}: key 'parcel_status.investigation_id' is missing: the ICAT investigation id "
                "(a number, as in the data portal's investigation URL) whose parcels are updated"
            )
        investigation_id = str(investigation_id).strip()
        if not investigation_id.isdigit():
            raise ConfigurationError(
                f"{context}: key 'parcel_status.investigation_id' must be the ICAT investigation id, "
                f"a number (not the proposal name), got {investigation_id!r}"
            )
        session_id, source = secret(
            node, "session_id", "session_id_env", DEFAULT_SESSION_ID_ENV, context, "parcel_status."
        )
        statuses = {}
        for key, default in (
            ("status_mounted", DEFAULT_STATUS_MOUNTED),
            ("status_unmounted", None),
            ("status_emptied", None),
        ):
            value = node.get(key, default)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(
                    f"{context}: key 'parcel_status.{key}' must be an ICAT+ parcel status (e.g. BEAMLINE) "
                    f"or null for no update, got {value!r}"
                )
            statuses[key] = value.strip() if value else None
        location = node.get("location", DEFAULT_LOCATION)
        if location is not None and not isinstance(location, str):
            raise ConfigurationError(
                f"{context}: key 'parcel_status.location' must be text or null, got {location!r}"
            )
        if location:
            try:
                location.format(**{key: "x" for key in LOCATION_FIELDS})
            except (KeyError, IndexError, ValueError) as exc:
                problem = f"unknown placeholder {exc}" if isinstance(exc, KeyError | IndexError) else str(exc)
                raise ConfigurationError(
                    f"{context}: key 'parcel_status.location' {location!r}: {problem}; the placeholders "
                    f"are {', '.join('{' + key + '}' for key in LOCATION_FIELDS)}"
                ) from None
        return cls(
            investigation_id=investigation_id,
            session_id=session_id,
            session_id_source=source,
            status_mounted=statuses["status_mounted"],
            status_unmounted=statuses["status_unmounted"],
            location=location or None,
            status_emptied=statuses["status_emptied"],
        )


def notification_text(event: Event) -> str:
    """The e-logbook text: one readable line with every known sample field, then the event id."""
    sample = event.sample
    verb = str(event.type)
    if event.status is Status.ERROR:
        head = f"Sample {'mount' if event.type is EventType.MOUNTED else 'unmount'} FAILED"
    else:
        head = f"Sample {verb}"
    parts = [f"{head}: {sample.label}"]
    if sample.barcode:
        parts.append(f"barcode {sample.barcode}")
    if sample.name:
        parts.append(f"name {sample.name}")
    if sample.sample_id:
        parts.append(f"sample id {sample.sample_id}")
    if sample.parcel_name or sample.parcel_id:
        parcel = sample.parcel_name or sample.parcel_id
        if sample.parcel_name and sample.parcel_id:
            parcel += f" (id {sample.parcel_id})"
        parts.append(f"parcel {parcel}")
    if sample.container_name or sample.container_id or sample.container_position:
        container = sample.container_name or sample.container_id or "?"
        if sample.container_name and sample.container_id:
            container += f" (id {sample.container_id})"
        if sample.container_position:
            container += f", position {sample.container_position}"
        parts.append(f"container {container}")
    if sample.changer_name:
        changer = sample.changer_name
        if sample.changer_position:
            changer += f", position {sample.changer_position}"
        parts.append(f"sample changer {changer}")
    if event.proposal:
        parts.append(f"proposal {event.proposal}")
    line = "; ".join(parts)
    if event.message:
        line += f" -- {event.message}"
    return f"{line}\n{TAG} event {event.event_id} ({event.source}, session {event.session})"


class IcatPlusClient:
    """Delivers each event as an ICAT+ e-logbook notification (and optionally a parcel status)."""

    max_batch = 1  # one notification per event

    def __init__(
        self,
        name: str,
        url: str,
        api_key: str,
        *,
        api_key_source: str = "the YAML",
        timeout: float = DEFAULT_TIMEOUT,
        verify_tls: object = True,
        tags: Iterable[str] = (),
        parcel_status: ParcelStatusConfig | None = None,
        item_corrections: bool = False,
        context: str | None = None,
    ) -> None:
        import requests  # a BLISS dependency; cooperative once gevent has patched sockets

        context = context or f"delivery client {name!r}"
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{context}: url must start with http:// or https://, got {url!r}")
        if timeout <= 0:
            raise ConfigurationError(f"{context}: timeout must be > 0, got {timeout!r}")
        self.name = name
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.tags = tuple(tags)
        self.parcel_status = parcel_status
        if item_corrections and parcel_status is None:
            raise ConfigurationError(
                f"{context}: item_corrections needs parcel_status (its investigation_id and session id: "
                "the item edit is an ICAT+ tracking call like the parcel status)"
            )
        self.item_corrections = item_corrections
        self._api_key = api_key
        self._api_key_source = api_key_source
        secrets = {api_key} | ({parcel_status.session_id} if parcel_status else set())
        self._secrets = sorted(set().union(*(secret_forms(s) for s in secrets)), key=len, reverse=True)
        protect(secrets)
        self._notified: OrderedDict[uuid.UUID, None] = OrderedDict()
        # the URL has no secret (the key goes in request paths only): safe in the warning
        self._verify = tls.verify_setting(verify_tls, client=name, url=self.url, context=context)
        self._session = requests.Session()
        self._session.verify = self._verify
        self._session.headers.update(
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"bliss-sampletrack/{__version__}",
            }
        )

    @classmethod
    def from_config(cls, node: Any, where: str) -> IcatPlusClient:
        """Build the client from a tracker's ``delivery`` entry (``type: icatplus``)."""
        name = node.get("name") or "icatplus"
        context = f"{where}: delivery {name!r}"
        check_known(node, TOP_KEYS, context)
        url = node.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(
                f"{context}: key 'url' is missing (the ICAT+ base URL, e.g. https://icatplus.esrf.fr)"
            )
        url = url.strip()
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{context}: key 'url' must start with http:// or https://, got {url!r}")
        api_key, source = secret(
            node,
            "api_key",
            "api_key_env",
            DEFAULT_API_KEY_ENV,
            context,
            placeholders={PLACEHOLDER_API_KEY: PLACEHOLDER_WHAT},
        )
        timeout = node.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(
                f"{context}: key 'timeout' must be a number of seconds > 0, got {timeout!r}"
            )
        verify_tls = node.get("verify_tls", True)  # checked by tls.verify_setting
        tags = node.get("tags") or []
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, Iterable) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise ConfigurationError(
                f"{context}: key 'tags' must be a list of non-empty strings, got {tags!r}"
            )
        parcel_status = ParcelStatusConfig.from_config(node.get("parcel_status"), context)
        item_corrections = node.get("item_corrections", False)
        if not isinstance(item_corrections, bool):
            raise ConfigurationError(
                f"{context}: key 'item_corrections' must be true or false (default false: an inventory's "
                f"corrections are not written to ICAT+ items), got {item_corrections!r}"
            )
        return cls(
            name,
            url,
            api_key,
            api_key_source=source,
            timeout=float(timeout),
            verify_tls=verify_tls,
            tags=[t.strip() for t in tags],
            parcel_status=parcel_status,
            item_corrections=item_corrections,
            context=context,
        )

    @classmethod
    def describe_config(cls, node: Any) -> str:
        """The description of a ``type: icatplus`` entry, from the YAML alone (no secret read)."""
        return f"{node.get('name') or 'icatplus'}: ICAT+ e-logbook {str(node.get('url') or '?').strip()}"

    def describe(self) -> str:
        text = self.describe_config({"name": self.name, "url": self.url})
        text += f" (beamline API key from {self._api_key_source})"
        parcel = self.parcel_status
        if parcel is not None:
            text += (
                f"; parcel status {parcel.status_mounted or '-'} on mount, {parcel.status_unmounted or '-'} "
                f"on unmount, investigation {parcel.investigation_id} (session id from "
                f"{parcel.session_id_source})"
            )
            if parcel.status_emptied:
                text += f"; {parcel.status_emptied} when an inventory finds a parcel emptied"
        if self.item_corrections:
            text += "; an inventory's item corrections written back"
        return text

    def writeback(self) -> Any:
        """The client writing inventory findings back (icatplus_writeback.py), or None when this
        one is configured to write none (no ``status_emptied``, no ``item_corrections``)."""
        parcel = self.parcel_status
        if parcel is None or not (parcel.status_emptied or self.item_corrections):
            return None
        from bliss_sampletrack.delivery.icatplus_writeback import IcatPlusWriteBack

        return IcatPlusWriteBack(self)

    # -- sending --------------------------------------------------------------------------------

    def send(self, events: list[Event]) -> list[Result]:
        return send_each(events, self._send_one)

    def _send_one(self, event: Event) -> Result:
        if event.event_id in self._notified:
            done = "e-logbook notification delivered before"
        else:
            response = self.request(
                "POST",
                f"/dataacquisition/{self._quote(self._api_key)}/notification",
                self.notification_body(event),
                params=self.notification_params(event),
                what="e-logbook notification",
            )
            verdict = classify_2xx(response.status_code)
            if verdict is Verdict.RETRY:
                raise RetryLater(f"e-logbook notification: {self.answer(response)}", retry_after(response))
            if verdict is Verdict.REJECTED:
                detail = f"e-logbook notification refused: {self.answer(response)}"
                log.warning("%s: event %s: %s", self.name, event.event_id, detail)
                return Result(Verdict.REJECTED, detail)
            self._remember(event.event_id)
            done = f"e-logbook notification {response.status_code}"
            log.debug("%s: event %s: %s", self.name, event.event_id, done)
        parcel = self._parcel_request(event)
        if parcel is None:
            return Result(Verdict.DELIVERED, done)
        path, body = parcel
        what = f"parcel {event.sample.parcel_id} status update"
        response = self.request("PUT", path, body, what=what)
        verdict = classify_2xx(response.status_code)
        if verdict is Verdict.RETRY:
            raise RetryLater(
                f"{done}, but the {what}: {self.answer(response)} (will retry the parcel update only)",
                retry_after(response),
            )
        if verdict is Verdict.REJECTED:
            detail = f"{done}, but the {what} was refused: {self.answer(response)}"
            log.warning("%s: event %s: %s", self.name, event.event_id, detail)
            return Result(Verdict.REJECTED, detail)
        log.debug("%s: event %s: %s %s", self.name, event.event_id, what, body)
        return Result(Verdict.DELIVERED, f"{done}; {what} {response.status_code} ({body['status']})")

    def notification_params(self, event: Event) -> list[tuple[str, str]]:
        params = [("instrumentName", event.beamline)]
        if event.proposal:
            params.append(("investigationName", event.proposal))
        return params

    def notification_body(self, event: Event) -> dict[str, Any]:
        """The body pyicat-plus's ``send_message`` would post (same keys, tags as ``{"name": ...}``)."""
        tags = [TAG, str(event.type)]
        if event.status is Status.ERROR:
            tags.append("error")
        if event.sample.barcode:
            tags.append(event.sample.barcode)
        tags.extend(self.tags)
        return {
            "type": "notification",
            "category": "error" if event.status is Status.ERROR else "info",
            "content": [{"format": "plainText", "text": notification_text(event)}],
            "machine": event.producer.host,
            "software": f"{event.producer.software}_v{event.producer.version}",
            "tag": [{"name": tag} for tag in dict.fromkeys(tags)],
            "creationDate": event.occurred_at.isoformat(),
        }

    def _parcel_request(self, event: Event) -> tuple[str, dict[str, str]] | None:
        parcel = self.parcel_status
        parcel_id = event.sample.parcel_id
        if parcel is None or not parcel_id or event.status is not Status.SUCCESS:
            return None
        status = parcel.status_for(event)
        if not status:
            return None
        body = {"status": status}
        location = parcel.location_for(event)
        if location:
            body["location"] = location
        return self.tracking_path(parcel.investigation_id, parcel_id, "parcel/status"), body

    def _remember(self, event_id: uuid.UUID) -> None:
        self._notified[event_id] = None
        while len(self._notified) > REMEMBERED_EVENTS:
            self._notified.popitem(last=False)

    # -- HTTP -----------------------------------------------------------------------------------

    def tracking_path(self, investigation_id: str, parcel_id: str, tail: str) -> str:
        """``/tracking/{session}/investigation/id/{iid}/parcel/id/{pid}/{tail}`` (quoted; a secret)."""
        assert self.parcel_status is not None
        return (
            f"/tracking/{self._quote(self.parcel_status.session_id)}/investigation/id/"
            f"{self._quote(investigation_id)}/parcel/id/{self._quote(parcel_id)}/{tail}"
        )

    def parcels_path(self) -> str:
        """``/tracking/{session}/parcel`` (the parcel query; the session id is a secret)."""
        assert self.parcel_status is not None
        return f"/tracking/{self._quote(self.parcel_status.session_id)}/parcel"

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        what: str,
        params: list[tuple[str, str]] | None = None,
    ) -> Any:
        """The answer to one request (no answer: RetryLater; secrets redacted from its text)."""
        # never follows a redirect: a redirected POST becomes a GET and the notification would be lost
        response, failure = http_answers.request(
            self._session,
            method,
            self.url + path,
            body,
            timeout=self.timeout,
            verify=self._verify,
            params=params,
        )
        if failure is not None:
            # raised outside the except clause: no chained exception carries the URL with the key
            where = f"{method} {self.url}{self._redact(path)}"
            raise RetryLater(self._redact(f"{what}: {where}: {failure}")[: 2 * MAX_ANSWER])
        return response

    def answer(self, response: Any) -> str:
        """An answer's status and text, secrets redacted, cut short."""
        return http_answers.answer(response, self._redact)

    @staticmethod
    def _quote(segment: str) -> str:
        return quote(segment, safe="")

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)
