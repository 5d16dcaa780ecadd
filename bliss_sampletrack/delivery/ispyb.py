"""ISPyB delivery client: each mount/unmount recorded as an ISPyB ``RobotAction`` (LOAD/UNLOAD).

Sources followed
----------------
- The record, as MXCuBE makes it: ``mxcube/mxcubecore`` ``mxcubecore/queue_entry/base_queue_entry.py``
  (``mount_sample``) builds, for every load, ``{"actionType": "LOAD", "containerLocation": loc[1],
  "dewarLocation": loc[0], "sampleBarcode": <code>, "sampleId": <lims_id>, "sessionId": <session id>,
  "startTime": time.strftime("%Y-%m-%d %H:%M:%S")}``, then ``endTime`` (same format) and ``status``
  ``"SUCCESS"``, or ``"ERROR"`` with ``message`` ``"Sample was not loaded"``; ``loc`` is the changer
  address ``(puck, position)`` (``"%d:%02d"``, e.g. ``3:05``). ``mxcubecore/HardwareObjects/ISPyBClient.py``
  (``store_robot_action``) sends it over SOAP (``storeRobotAction(robotActionWS3VO)``, ``sampleId`` as
  ``blSampleId``). The table it lands in (``DiamondLightSource/ispyb-database`` schema, ``RobotAction``,
  "Robot actions as reported by MXCube"): ``blsessionId``, ``blsampleId``, ``actionType`` enum
  (LOAD, UNLOAD...), ``startTimestamp``, ``endTimestamp``, ``status`` enum (SUCCESS, ERROR...),
  ``message`` varchar(255), ``containerLocation`` and ``dewarLocation`` smallint, ``sampleBarcode``
  varchar(45).
- The REST form: neither ISPyB's Java REST services (``ispyb/ISPyB`` ``ispyb-ws/.../ws/rest/mx``) nor
  py-ispyb (``ispyb/py-ispyb`` ``pyispyb/core/routes``) has a robot-action route (SOAP only there).
  The REST API that records a ``RobotAction`` with a bearer token is the ISPyB core REST API
  ("ExpEye") of Diamond, as ``DiamondLightSource/mx-bluesky``
  ``src/mx_bluesky/common/external_interaction/ispyb/exp_eye_store.py`` (``ExpeyeInteraction``) calls
  it: ``POST /proposals/{proposal}/sessions/{visit_number}/robot-actions`` with ``startTimestamp``,
  ``actionType``, ``sampleId``, ``containerLocation``, ``dewarLocation``, answered
  ``{"robotActionId": <int>, ...}``; then ``PATCH /robot-actions/{robotActionId}`` with
  ``sampleBarcode`` and with ``endTimestamp``, ``status`` (``SUCCESS``/``ERROR``), ``message`` (at
  most 255 characters); ``Authorization: Bearer <token>``; times ``"%Y-%m-%d %H:%M:%S"`` (local time,
  no zone, from ``datetime.now()``). Only these requests and keys are used here.

What is sent, per event (``max_batch = 1``)
------------------------------------------
::

    POST {url}/proposals/{proposal}/sessions/{visit_number}/robot-actions
    {"startTimestamp": "2026-11-24 13:30:05", "actionType": "LOAD" | "UNLOAD",
     "sampleId": 5289780, "containerLocation": 5, "dewarLocation": 3}
    -> 2xx {"robotActionId": 123, ...}
    PATCH {url}/robot-actions/123
    {"endTimestamp": "2026-11-24 13:30:05", "status": "SUCCESS" | "ERROR", "message": "...",
     "sampleBarcode": "LYS-0042"}
    -> 2xx, a JSON object (or 204, empty)

``mounted`` is LOAD, ``unmounted`` UNLOAD; ``status`` and ``message`` (cut to 255 characters) are the
event's. ``proposal`` and ``visit_number`` come from the configured ``visit`` (``cm37235-2``), the
session MXCuBE sends as ``sessionId``. ``sampleId`` is the sample's ``sample_id`` when it is a whole
number (an ISPyB ``blSampleId``); otherwise (unknown, or another system's id) it is left out and the
barcode identifies the pin. The locations come from the changer address ``<puck>:<position>``
(``dewar_location``/``container_location``, see below); keys with no value are left out.

Timestamps: a contract event carries one instant, ``occurred_at``: when the changer or reader
reported the mount or unmount, i.e. the *end* of the robot action. Both ``startTimestamp`` and
``endTimestamp`` are that instant (duration 0): the robot's real start is not in the event (the
tracker's robot-action log, changers/robot_actions.py, has it, but it is not delivered). They are
written as MXCuBE does, ``%Y-%m-%d %H:%M:%S`` without zone, in ``timezone`` (default: the local time
of the host that delivers; set the ISPyB server's zone, e.g. ``Europe/Paris``, when they differ).

Checked before anything is sent (a dead letter, no request): an event whose ``proposal`` is not the
visit's (``check_proposal``, default true: a mount must not land in another proposal's session), a
barcode longer than ISPyB's 45 characters (the database would refuse it, possibly as a 500 retried
forever).

Verdicts (the contract's delivery rules)
----------------------------------------
2xx: delivered, but only with a real answer: a create answered without an integer ``robotActionId``
(an HTML page, ``{}``, text), or an update answered with something that is not a JSON object, is
never a success: :class:`RetryLater` (the outbox keeps the event; ``last_error`` says what came).
Connection errors, timeouts (``timeout``, default 10 s), a refused TLS certificate, 408, 429 and
5xx: :class:`RetryLater` (with ``Retry-After``). Any other 4xx and any 3xx (never followed: a POST
redirected becomes a GET): REJECTED, a dead letter carrying the server's answer. An expired or
wrong token (401/403) thus dead-letters every event until it is renewed; then
``sampletrack deliver --retry-dead-letters``.

What a retry can duplicate (the API has no idempotency key)
----------------------------------------------------------
Each event is two requests. When the create succeeded and the update failed, the client remembers
(in memory, last 1000 events) the ``robotActionId``, and a retry (or a retry of the dead letter in
the same process) sends the update only. A second ``RobotAction`` row appears when the create's
answer was lost (timeout, dropped connection, 502/504 from a proxy in front of a server that did
store it), or when the process stopped between the create and the end of the update (the first
row then stays without end time and status).

Secrets: the token is only ever in the ``Authorization`` header (never in a URL, log, exception,
``repr`` or ``describe()``); answers are redacted in case a server echoes it. TLS: ``verify_tls``
as every client (:mod:`bliss_sampletrack.delivery.tls`): on by default, a CA bundle path, or
``false`` with a WARNING naming the client and the URL.

Configuration (one item of the tracker's ``delivery:`` list; see config_examples/delivery/ispyb.yml)
---------------------------------------------------------------------------------------------------
``name``, ``type: ispyb``, ``url`` (the REST API's base URL, http:// or https://), ``token`` or
``token_env`` (default ``ISPYB_TOKEN``), ``visit`` (required, ``<proposal>-<visit number>``),
``timeout`` (s, 10), ``verify_tls`` (true), ``timezone`` (``local``, or a zone name such as ``UTC``),
``dewar_location`` (``changer_position``: the puck of the changer address, or ``none``),
``container_location`` (``changer_position``: the position of the changer address;
``container_position``: the sample's position in its container; or ``none``), ``check_proposal``
(true). Unknown keys are refused.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bliss_sampletrack import __version__
from bliss_sampletrack.core import Event, EventType, Sample
from bliss_sampletrack.core.address import parse_address
from bliss_sampletrack.delivery import http_answers, tls
from bliss_sampletrack.delivery.base import Result, RetryLater, Verdict, classify_2xx, send_each
from bliss_sampletrack.delivery.http_answers import MAX_ANSWER, retry_after
from bliss_sampletrack.delivery.secrets import REDACTED, check_known, secret
from bliss_sampletrack.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "ISPYB_TOKEN"
DEFAULT_TIMEOUT = 10.0
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # MXCuBE's and mx-bluesky's
CREATE_PATH = "/proposals/{proposal}/sessions/{visit_number}/robot-actions"
UPDATE_PATH = "/robot-actions/{action_id}"
ACTION_TYPES = {EventType.MOUNTED: "LOAD", EventType.UNMOUNTED: "UNLOAD"}
# ISPyB's RobotAction columns: message varchar(255), sampleBarcode varchar(45), locations smallint,
# blsampleId int unsigned
MESSAGE_MAX = 255
BARCODE_MAX = 45
LOCATION_MAX = 32767
SAMPLE_ID_MAX = 2**32 - 1
DEWAR_SOURCES = ("changer_position", "none")
CONTAINER_SOURCES = ("changer_position", "container_position", "none")
WHOLE = re.compile(r"[0-9]{1,10}")
VISIT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]*)-([0-9]{1,6})$")
REMEMBERED_EVENTS = 1000
TOP_KEYS = frozenset(
    {
        "name",
        "type",
        "url",
        "token",
        "token_env",
        "visit",
        "timeout",
        "verify_tls",
        "timezone",
        "dewar_location",
        "container_location",
        "check_proposal",
    }
)


def _whole(text: str | None, maximum: int) -> int | None:
    """``text`` as a whole number 0..maximum, or None (absent, not a number, out of range)."""
    if text is None or not WHOLE.fullmatch(text.strip()):  # ASCII digits only (not "²")
        return None
    value = int(text.strip())
    return value if value <= maximum else None


def _zone(name: str, context: str) -> tzinfo | None:
    """The zone for ``timezone``; None means the host's local time."""
    if name == "local":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "Europe"
        raise ConfigurationError(
            f"{context}: key 'timezone' {name!r} is not a time zone; use local, UTC or a zone name "
            "such as Europe/Paris (the zone the ISPyB server stores times in)"
        ) from None


class IspybClient:
    """Records each event as an ISPyB ``RobotAction`` through the ISPyB core REST API."""

    max_batch = 1  # two requests per event

    def __init__(
        self,
        name: str,
        url: str,
        token: str,
        *,
        visit: str | None,
        token_source: str = "the YAML",
        timeout: float | int = DEFAULT_TIMEOUT,
        verify_tls: object = True,
        timezone: str = "local",
        dewar_location: str = "changer_position",
        container_location: str = "changer_position",
        check_proposal: bool = True,
        context: str | None = None,
    ) -> None:
        import requests  # a BLISS dependency; cooperative once gevent has patched sockets

        context = context or f"delivery client {name!r}"
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{context}: key 'url' must start with http:// or https://, got {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(
                f"{context}: key 'timeout' must be a number of seconds > 0, got {timeout!r}"
            )
        if visit is None:
            raise ConfigurationError(
                f"{context}: key 'visit' is missing: the ISPyB visit whose session records the robot "
                "actions, <proposal>-<visit number> (e.g. cm37235-2)"
            )
        match = VISIT.match(visit) if isinstance(visit, str) else None
        if match is None:
            raise ConfigurationError(
                f"{context}: key 'visit' must be the ISPyB visit <proposal>-<visit number> "
                f"(e.g. cm37235-2), got {visit!r}"
            )
        if dewar_location not in DEWAR_SOURCES:
            raise ConfigurationError(
                f"{context}: key 'dewar_location' must be one of {', '.join(DEWAR_SOURCES)}, "
                f"got {dewar_location!r}"
            )
        if container_location not in CONTAINER_SOURCES:
            raise ConfigurationError(
                f"{context}: key 'container_location' must be one of {', '.join(CONTAINER_SOURCES)}, "
                f"got {container_location!r}"
            )
        if (
            not isinstance(token, str)
            or not token
            or not (token.isascii() and token.isprintable())
            or " " in token
        ):
            # never the value in the message; a newline would also split the header
            raise ConfigurationError(
                f"{context}: the token from {token_source} must be ASCII text without spaces"
            )
        self.name = name
        self.url = url.rstrip("/")
        self.visit = visit
        self.proposal, self.visit_number = match.group(1), int(match.group(2))
        self.timeout = float(timeout)
        self.timezone = timezone
        self._zone = _zone(timezone, context)
        self.dewar_location = dewar_location
        self.container_location = container_location
        self.check_proposal = check_proposal
        self._token = token
        self._token_source = token_source
        self._created: OrderedDict[uuid.UUID, int] = OrderedDict()
        # validated (and a WARNING when off) before the session holds the token
        self._verify = tls.verify_setting(verify_tls, client=name, url=self.url, context=context)
        self._session = requests.Session()
        self._session.verify = self._verify
        self._session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"bliss-sampletrack/{__version__}",
            }
        )

    @classmethod
    def from_config(cls, node: Any, where: str) -> IspybClient:
        """Build the client from a tracker's ``delivery`` entry (``type: ispyb``)."""
        name = node.get("name") or "ispyb"
        context = f"{where}: delivery {name!r}"
        check_known(node, TOP_KEYS, context)
        if node.get("type", "ispyb") != "ispyb":
            raise ConfigurationError(f"{context}: key 'type' must be ispyb here, got {node.get('type')!r}")
        url = node.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ConfigurationError(
                f"{context}: key 'url' is missing (the ISPyB REST API's base URL, e.g. "
                "https://ispyb.example.org/api)"
            )
        token, source = secret(node, "token", "token_env", DEFAULT_TOKEN_ENV, context)
        choices = {}
        for key, default in (
            ("timezone", "local"),
            ("dewar_location", "changer_position"),
            ("container_location", "changer_position"),
        ):
            value = node.get(key, default)
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"{context}: key {key!r} must be text, got {value!r}")
            choices[key] = value.strip()
        check_proposal = node.get("check_proposal", True)
        if not isinstance(check_proposal, bool):
            raise ConfigurationError(f"{context}: key 'check_proposal' must be true or false")
        return cls(
            name,
            url.strip(),
            token,
            visit=node.get("visit"),
            token_source=source,
            timeout=node.get("timeout", DEFAULT_TIMEOUT),
            verify_tls=node.get("verify_tls", True),  # checked by tls.verify_setting
            check_proposal=check_proposal,
            context=context,
            **choices,
        )

    @classmethod
    def describe_config(cls, node: Any) -> str:
        """The description of a ``type: ispyb`` entry, from the YAML alone (no secret read)."""
        url = str(node.get("url") or "?").strip()
        return f"{node.get('name') or 'ispyb'}: ISPyB robot actions {url}, visit {node.get('visit')}"

    def describe(self) -> str:
        described = self.describe_config({"name": self.name, "url": self.url, "visit": self.visit})
        return f"{described} (token from {self._token_source}; times in {self.timezone})"

    def __repr__(self) -> str:
        return f"IspybClient(name={self.name!r}, url={self.url!r}, visit={self.visit!r})"

    # -- what is sent ---------------------------------------------------------------------------

    def timestamp(self, when: datetime) -> str:
        return when.astimezone(self._zone).strftime(TIME_FORMAT)

    def locations(self, sample: Sample) -> tuple[int | None, int | None]:
        """(dewarLocation, containerLocation) of the sample, per the configured sources."""
        address = parse_address(sample.changer_position) if sample.changer_position else None
        dewar = container = None
        if self.dewar_location == "changer_position" and address is not None:
            dewar = address[0]
        if self.container_location == "changer_position" and address is not None:
            container = address[1]
        elif self.container_location == "container_position":
            container = _whole(sample.container_position, LOCATION_MAX)
        return (
            dewar if dewar is not None and dewar <= LOCATION_MAX else None,
            container if container is not None and container <= LOCATION_MAX else None,
        )

    def create_body(self, event: Event) -> dict[str, Any]:
        """The ``POST .../robot-actions`` body (the start of the action)."""
        body: dict[str, Any] = {
            "startTimestamp": self.timestamp(event.occurred_at),
            "actionType": ACTION_TYPES[event.type],
        }
        sample_id = _whole(event.sample.sample_id, SAMPLE_ID_MAX)
        if sample_id is not None:
            body["sampleId"] = sample_id
        dewar, container = self.locations(event.sample)
        if container is not None:
            body["containerLocation"] = container
        if dewar is not None:
            body["dewarLocation"] = dewar
        return body

    def end_body(self, event: Event) -> dict[str, Any]:
        """The ``PATCH /robot-actions/{id}`` body (the end and outcome of the action)."""
        body: dict[str, Any] = {
            "endTimestamp": self.timestamp(event.occurred_at),
            "status": str(event.status),
            "message": event.message[:MESSAGE_MAX],
        }
        if event.sample.barcode:
            body["sampleBarcode"] = event.sample.barcode
        return body

    def _refusal(self, event: Event) -> str | None:
        """Why the event must not be sent at all (a dead letter), or None."""
        if self.check_proposal and event.proposal and event.proposal.lower() != self.proposal.lower():
            return (
                f"event of proposal {event.proposal!r}, but this client records robot actions in visit "
                f"{self.visit!r}; set its 'visit' (or 'check_proposal: false' to record them there anyway)"
            )
        barcode = event.sample.barcode
        if barcode and len(barcode) > BARCODE_MAX:
            return f"barcode {barcode!r} is longer than ISPyB's {BARCODE_MAX} characters (sampleBarcode)"
        return None

    # -- sending --------------------------------------------------------------------------------

    def send(self, events: list[Event]) -> list[Result]:
        return send_each(events, self._send_one)

    def _send_one(self, event: Event) -> Result:
        refusal = self._refusal(event)
        if refusal is not None:
            log.warning("%s: event %s not sent: %s", self.name, event.event_id, refusal)
            return Result(Verdict.REJECTED, refusal)
        action_id = self._created.get(event.event_id)
        if action_id is not None:
            created = f"robot action {action_id} created before"
        else:
            path = CREATE_PATH.format(proposal=quote(self.proposal, safe=""), visit_number=self.visit_number)
            response = self._request("POST", path, self.create_body(event), what="robot action create")
            verdict = classify_2xx(response.status_code)
            if verdict is Verdict.RETRY:
                raise RetryLater(f"robot action create: {self._answer(response)}", retry_after(response))
            if verdict is Verdict.REJECTED:
                detail = f"robot action create refused: {self._answer(response)}"
                log.warning("%s: event %s: %s", self.name, event.event_id, detail)
                return Result(Verdict.REJECTED, detail)
            action_id = self._action_id(response)
            if action_id is None:
                # e.g. a login page or a proxy answering 200: never a success
                raise RetryLater(
                    f"robot action create: {self.url}{path} answered {self._answer(response)} without an "
                    "integer robotActionId; is key 'url' the ISPyB REST API?"
                )
            self._remember(event.event_id, action_id)
            created = f"robot action {action_id} created ({response.status_code})"
        path = UPDATE_PATH.format(action_id=action_id)
        response = self._request("PATCH", path, self.end_body(event), what=f"robot action {action_id} update")
        verdict = classify_2xx(response.status_code)
        if verdict is Verdict.RETRY:
            raise RetryLater(
                f"{created}, but its end update: {self._answer(response)} (will retry the update only)",
                retry_after(response),
            )
        if verdict is Verdict.REJECTED:
            detail = f"{created}, but its end update was refused: {self._answer(response)}"
            log.warning("%s: event %s: %s", self.name, event.event_id, detail)
            return Result(Verdict.REJECTED, detail)
        if not self._update_confirmed(response, action_id):
            raise RetryLater(
                f"{created}, but its end update was answered {self._answer(response)}, not the updated "
                "robot action (will retry the update only)"
            )
        detail = f"{created}; ended {event.status} ({response.status_code})"
        log.debug("%s: event %s: %s", self.name, event.event_id, detail)
        return Result(Verdict.DELIVERED, detail)

    def _remember(self, event_id: uuid.UUID, action_id: int) -> None:
        self._created[event_id] = action_id
        while len(self._created) > REMEMBERED_EVENTS:
            self._created.popitem(last=False)

    # -- HTTP -----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any], *, what: str) -> Any:
        # never follows a redirect: a redirected POST becomes a GET and the action would be lost
        response, failure = http_answers.request(
            self._session, method, self.url + path, body, timeout=self.timeout, verify=self._verify
        )
        if failure is not None:
            # raised outside the except clause: no chained exception (the token is only in a header,
            # but the request object travels with some exceptions)
            raise RetryLater(self._redact(f"{what}: {method} {self.url}{path}: {failure}")[: 2 * MAX_ANSWER])
        return response

    @staticmethod
    def _action_id(response: Any) -> int | None:
        try:
            data = response.json()
        except ValueError:  # requests' JSONDecodeError is one
            return None
        value = data.get("robotActionId") if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return None
        return value

    @staticmethod
    def _update_confirmed(response: Any, action_id: int) -> bool:
        if response.status_code == 204:
            return not response.content
        try:
            data = response.json()
        except ValueError:
            return False
        return isinstance(data, dict) and data.get("robotActionId", action_id) == action_id

    def _answer(self, response: Any) -> str:
        return http_answers.answer(response, self._redact)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, REDACTED)
