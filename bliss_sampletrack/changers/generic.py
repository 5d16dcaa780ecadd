"""``BlissObjectChanger``: any BLISS controller or macro object as a sample changer, by YAML.

For robots that already have a BLISS object (a Tango proxy wrapper, a macro class...) exposing
what is mounted through attributes or methods::

    - name: robot_sc
      plugin: bliss
      package: bliss_sampletrack.changers.generic
      class: BlissObjectChanger
      object: $my_robot
      mounted_address: get_loaded_sample   # method or attribute (dotted paths allowed: state.loaded)
      mounted_barcode: loaded_barcode      # optional
      presence: sample_detected            # optional: the goniometer's presence sensor
      mount: load_sample                   # optional (without it, mount() is refused)
      unmount: unload_sample               # optional
      contents: get_contents               # optional: {address: barcode} or [(address, barcode), ...]
      mount_args: address                  # address ("3:05") | puck_position (3, 5) | barcode
      poll_period: 0.5                     # seconds between two reads of the object
      presence_settle: 1.0                 # a presence change counts once stable this long
      mount_timeout: 300
      unmount_timeout: 300
      empty_values: ["", "-", "none"]      # what the address accessor returns for "nothing mounted"

Each name is looked up on ``object`` when used: a method is called (without arguments, except
``mount``), an attribute is read. What they return is normalised: an address (``"3:05"``,
``(3, 5)``, ``"3:5"`` -> ``3:05``; None/empty/``empty_values`` -> nothing mounted), a barcode (a
no-read or empty -> None), a presence (bool; ``"off"``/``"false"``/``"0"`` -> False, None -> no
sensor).

Changes are seen two ways: ``mount()``/``unmount()`` through this adapter report their start and
end exactly; changes made elsewhere (the robot's own GUI, another macro) are seen by a polling
greenlet (``poll_period``; it runs while somebody subscribes, e.g. a ChangerLink) and reported as
``observed`` events whose start time is the last poll before the change.

Caveats:
- Polling sees only the states it samples: a load and unload within one period are missed.
- Timeouts (``mount_timeout``) interrupt the robot's method only if it is cooperative (gevent);
  a method that blocks the process cannot be interrupted.
- Presence and address rarely change at the same instant: a presence/address disagreement is
  only reported once it persisted ``presence_settle`` seconds (set it above the robot's lag).
- An exception from the object is reported as ``ChangerOfflineError`` (the poller reports the
  changer OFFLINE and keeps trying every period); during ``mount()``, as ``MountFailedError``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import gevent
import gevent.lock
from redis.exceptions import RedisError

from bliss_sampletrack.changers.errors import (
    ChangerBusyError,
    ChangerError,
    ChangerOfflineError,
    ChangerTimeout,
    MountFailedError,
)
from bliss_sampletrack.changers.protocol import (
    ChangerCallback,
    ChangerEvent,
    ChangerEventKind,
    EventHub,
    Mounted,
    Position,
    Seconds,
    format_address,
    parse_address,
)
from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.core.barcode import is_no_read
from bliss_sampletrack.core.shell import command
from bliss_sampletrack.errors import SampleTrackError

log = logging.getLogger(__name__)

ACCESSORS = ("mounted_address", "mounted_barcode", "presence", "mount", "unmount", "contents")
KEYS = {
    "object",
    *ACCESSORS,
    "mount_args",
    "poll_period",
    "presence_settle",
    "mount_timeout",
    "unmount_timeout",
    "empty_values",
}
MOUNT_ARGS = ("address", "puck_position", "barcode")
FALSE_TEXT = {"false", "off", "no", "0", "absent", "none", ""}
#: what tab completion offers (``__dir__``)
SHELL_NAMES = ("mount", "unmount", "contents", "refresh", "name", "mounted", "sample_present", "object")


# -- normalisation (pure) ----------------------------------------------------------------------------
def normalise_address(value: Any, empty: frozenset[str] = frozenset({"", "-", "none"})) -> str | None:
    """An address from what a robot returns; None for "nothing mounted"."""
    if value is None or value is False:
        return None
    if isinstance(value, tuple | list):
        if not value:
            return None
        if len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return format_address(value[0], value[1])
        return ":".join(str(v) for v in value)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip()
    if text.lower() in empty:
        return None
    parsed = parse_address(text)
    return format_address(*parsed) if parsed else text


def normalise_barcode(value: Any) -> str | None:
    """A barcode from what a robot returns; None when it has none (empty, no-read)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip()
    return None if is_no_read(text) else text


def normalise_presence(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        return text.strip().lower() not in FALSE_TEXT
    return bool(value)


def normalise_contents(value: Any, empty: frozenset[str]) -> list[Position]:
    """Positions from ``{address: barcode}``, ``{address: {barcode, name}}`` or ``[(address, barcode)]``."""
    if value is None:
        return []
    items = value.items() if isinstance(value, Mapping) else value
    positions = []
    for item in items:
        if isinstance(item, Mapping):
            address, entry = item.get("address"), item
        else:
            address, entry = item
        where = normalise_address(address, empty)
        if where is None:
            continue
        if isinstance(entry, Mapping):
            positions.append(Position(where, normalise_barcode(entry.get("barcode")), entry.get("name")))
        else:
            positions.append(Position(where, normalise_barcode(entry)))
    return positions


@dataclass(frozen=True, slots=True)
class ObjectState:
    """What the object said at one poll."""

    address: str | None
    barcode: str | None
    present: bool | None

    @property
    def pair(self) -> tuple[bool | None, bool]:
        """(presence, something mounted): what the presence cross-check compares."""
        return self.present, self.address is not None


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Accessor:
    """A method or attribute of the wrapped object, by (dotted) name."""

    def __init__(self, owner: str, obj: Any, key: str, path: str) -> None:
        self.owner, self.obj, self.key, self.path = owner, obj, key, path

    def __call__(self, *args: Any) -> Any:
        target = self.obj
        try:
            for part in self.path.split("."):
                target = getattr(target, part)
            if callable(target):
                return target(*args)
        except Exception as exc:  # anything the robot's code raises: said, and raised as ours
            raise ChangerOfflineError(
                f"changer {self.owner!r}: {self.key} ({self.describe()}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        if args:
            raise ChangerError(
                f"changer {self.owner!r}: {self.key} ({self.describe()}) is an attribute, not a method; "
                "it cannot be given arguments"
            )
        return target

    def describe(self) -> str:
        return f"{getattr(self.obj, 'name', type(self.obj).__name__)}.{self.path}"


class BlissObjectChanger:
    """A sample changer made of a BLISS object's attributes/methods (implements ``SampleChanger``)."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        cfg = ObjectConfig(name, config)
        cfg.check_known(KEYS)
        self.name = name
        self.config_file = cfg.filename
        self.object = config.get("object")
        if self.object is None:
            raise cfg.error("object", "is missing: reference the robot's BLISS object, e.g. object: $robot")
        self._accessors: dict[str, Accessor] = {}
        for key in ACCESSORS:
            path = cfg.get(key, str, None)
            if path is None:
                if key == "mounted_address":
                    raise cfg.error(
                        key, "is missing: name the method or attribute giving the mounted address"
                    )
                continue
            self._check_exists(cfg, key, path)
            self._accessors[key] = Accessor(name, self.object, key, path)
        self.mount_args = cfg.get("mount_args", str, "address")
        if self.mount_args not in MOUNT_ARGS:
            raise cfg.error("mount_args", f"must be one of {', '.join(MOUNT_ARGS)}, got {self.mount_args!r}")
        self.poll_period = cfg.positive("poll_period", 0.5)
        self.presence_settle = cfg.get("presence_settle", float, 1.0)
        if self.presence_settle < 0:
            raise cfg.error("presence_settle", f"must be >= 0 seconds, got {self.presence_settle}")
        self.mount_timeout = cfg.positive("mount_timeout", 300.0)
        self.unmount_timeout = cfg.positive("unmount_timeout", 300.0)
        self.empty_values = frozenset(
            v.strip().lower() for v in cfg.string_list("empty_values")
        ) or frozenset({"", "-", "none"})
        self._hub = EventHub(name)
        self._lock = gevent.lock.Semaphore()
        self._state: ObjectState | None = None  # last state read (None: never read)
        self._reported_pair: tuple[bool | None, bool] | None = None
        self._changed_at = _now()  # last change of presence or address
        self._last_poll = _now()
        self.offline: str | None = None  # why the object cannot be read, while it cannot
        self.last_error: str | None = None
        self._poller: gevent.Greenlet | None = None
        #: the puck view that ``__info__`` shows: set by a ChangerLink to its tracker's
        self.puck_view: Callable[[], str] | None = None

    def __dir__(self) -> list[str]:
        # tab completion offers the commands (the shell hides "_" names, not the protocol's plumbing)
        return sorted(SHELL_NAMES)

    @property
    def lists_contents(self) -> bool:
        """Whether the robot's object gives its contents (``contents`` in the YAML): without it,
        the puck view shows the positions as unknown, not empty."""
        return "contents" in self._accessors

    @staticmethod
    def _check_exists(cfg: ObjectConfig, key: str, path: str) -> None:
        obj = cfg.config.get("object")
        first = path.split(".")[0]
        missing = object()
        if inspect.getattr_static(obj, first, missing) is missing and not hasattr(type(obj), "__getattr__"):
            raise cfg.error(
                key, f"names {first!r}, which {type(obj).__name__} object has neither as method nor attribute"
            )

    # -- SampleChanger protocol ------------------------------------------------------------------
    @property
    def mounted(self) -> Mounted | None:
        state = self.read_state()
        if state.address is None:
            return None
        return Mounted(state.address, state.barcode or self._expected_barcode(state.address))

    @property
    def sample_present(self) -> bool | None:
        return self.read_state().present

    @command
    def mount(self, target: str, timeout: Seconds | None = None) -> Mounted:
        """Load ``target`` (an address, or a barcode looked up in ``contents``) with the object's
        ``mount`` method; the robot's own method decides how to unload what is mounted."""
        method = self._accessors.get("mount")
        if method is None:
            raise ChangerError(
                f"changer {self.name!r} has no 'mount' method configured in {self.config_file}"
            )
        address, args = self._mount_call(target)
        timeout = self.mount_timeout if timeout is None else timeout
        with self._action("mount"):
            before = self.read_state()
            if address is not None and before.address == address:
                return self.mounted  # type: ignore[return-value]
            start = _now()
            barcode = None if address is None else self._expected_barcode(address)
            self._emit(ChangerEventKind.LOAD_STARTED, address=address, barcode=barcode, requested=target)
            try:
                self._call(method, args, timeout, f"load of {target}")
            except BaseException as exc:
                after = self._try_state()
                self._emit(
                    ChangerEventKind.LOAD_FAILED,
                    address=address,
                    barcode=barcode,
                    started_at=start,
                    present=None if after is None else after.present,
                    requested=target,
                    message=exc.reason if isinstance(exc, MountFailedError) else _describe(exc),
                )
                self._settle(after)
                raise
            after = self.read_state()
            if before.address is not None and before.address != after.address:
                self._emit(
                    ChangerEventKind.UNLOADED,
                    address=before.address,
                    barcode=before.barcode or self._expected_barcode(before.address),
                    started_at=start,
                )
            if after.address is None:
                message = f"the {method.describe()} call returned but {self.name!r} reports nothing mounted"
                self._emit(
                    ChangerEventKind.LOAD_FAILED,
                    address=address,
                    barcode=barcode,
                    started_at=start,
                    present=after.present,
                    requested=target,
                    message=message,
                )
                self._settle(after)
                raise MountFailedError(f"changer {self.name!r}: load of {target} failed: {message}")
            self._emit(
                ChangerEventKind.LOADED,
                address=after.address,
                barcode=after.barcode or self._expected_barcode(after.address),
                started_at=start,
                present=after.present,
                requested=target,
            )
            self._settle(after)
        return self.mounted  # type: ignore[return-value]

    @command
    def unmount(self, timeout: Seconds | None = None) -> None:
        method = self._accessors.get("unmount")
        if method is None:
            raise ChangerError(
                f"changer {self.name!r} has no 'unmount' method configured in {self.config_file}"
            )
        timeout = self.unmount_timeout if timeout is None else timeout
        with self._action("unmount"):
            before = self.read_state()
            if before.address is None:
                return
            ids = {
                "address": before.address,
                "barcode": before.barcode or self._expected_barcode(before.address),
            }
            start = _now()
            self._emit(ChangerEventKind.UNLOAD_STARTED, **ids)
            try:
                self._call(method, (), timeout, f"unload of {before.address}")
            except BaseException as exc:
                after = self._try_state()
                self._emit(
                    ChangerEventKind.UNLOAD_FAILED,
                    started_at=start,
                    present=None if after is None else after.present,
                    message=exc.reason if isinstance(exc, MountFailedError) else _describe(exc),
                    **ids,
                )
                self._settle(after)
                raise
            after = self.read_state()
            self._emit(ChangerEventKind.UNLOADED, started_at=start, present=after.present, **ids)
            self._settle(after)

    def contents(self) -> list[Position]:
        accessor = self._accessors.get("contents")
        if accessor is None:
            return []
        positions = normalise_contents(accessor(), self.empty_values)
        state = self._state
        if state is not None and state.address is not None:
            positions = [
                Position(p.address, p.barcode, p.name, on_goniometer=p.address == state.address)
                for p in positions
            ]
        return positions

    def expected(self, address: str) -> Position | None:
        canonical = normalise_address(address, self.empty_values)
        return next((p for p in self.contents() if p.address == canonical), None)

    def subscribe(self, callback: ChangerCallback) -> None:
        self._hub.subscribe(callback)
        if self._poller is None:
            self.start_polling()

    def unsubscribe(self, callback: ChangerCallback) -> None:
        self._hub.unsubscribe(callback)
        if not len(self._hub):
            self.stop_polling()

    # -- polling ---------------------------------------------------------------------------------
    def read_state(self) -> ObjectState:
        """Read the object now (raises ChangerOfflineError when it cannot be read)."""
        address = normalise_address(self._accessors["mounted_address"](), self.empty_values)
        barcode_accessor = self._accessors.get("mounted_barcode")
        barcode = None
        if address is not None and barcode_accessor is not None:
            barcode = normalise_barcode(barcode_accessor())
        presence = self._accessors.get("presence")
        present = None if presence is None else normalise_presence(presence())
        return ObjectState(address, barcode, present)

    def refresh(self) -> None:
        """Poll once: report what changed since the last poll (the poller calls it every period)."""
        if self._lock.locked():
            return  # an action through this adapter reports itself
        try:
            state = self.read_state()
        except ChangerOfflineError as exc:
            if self.offline is None:
                self.offline = str(exc)
                self._emit(ChangerEventKind.OFFLINE, message=str(exc))
            return
        if self.offline is not None:
            # what changed meanwhile was not seen: a new baseline, which subscribers reconcile
            self.offline = None
            self._settle(state)
            self._emit(ChangerEventKind.ONLINE, address=state.address, barcode=state.barcode)
            return
        self._update(state)

    def start_polling(self) -> None:
        if self._poller is not None and not self._poller.dead:
            return
        try:
            self._settle(self.read_state())  # the baseline: what is there now is no change
        except ChangerOfflineError as exc:
            self.offline = str(exc)
        self._poller = gevent.spawn(self._poll_loop)
        self._poller.name = f"sampletrack-changer-{self.name}"
        self._poller.link_exception(self._poller_died)

    def stop_polling(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.kill(block=True, timeout=5)

    def close(self) -> None:
        self.stop_polling()

    __close__ = close

    def _poll_loop(self) -> None:
        while True:
            gevent.sleep(self.poll_period)
            self.refresh()

    def _poller_died(self, greenlet: gevent.Greenlet) -> None:
        # a bug (or a subscriber raising), not a robot problem: say it; subscribe again to restart
        self.last_error = f"changer {self.name!r}: polling stopped on {greenlet.exception!r}"
        log.error("%s", self.last_error, exc_info=greenlet.exc_info)
        self._poller = None

    def _update(self, state: ObjectState) -> None:
        now = _now()
        old = self._state
        if old is None:
            self._settle(state)
            return
        if (state.address, state.present) != (old.address, old.present):
            self._changed_at = now
        if state.address != old.address or (state.address is not None and state.barcode != old.barcode):
            started = self._last_poll
            if old.address is not None and state.address != old.address:
                self._emit(
                    ChangerEventKind.UNLOADED,
                    address=old.address,
                    barcode=old.barcode or self._expected_barcode(old.address),
                    started_at=started,
                    observed=True,
                )
            if state.address is not None:
                self._emit(
                    ChangerEventKind.LOADED,
                    address=state.address,
                    barcode=state.barcode or self._expected_barcode(state.address),
                    started_at=started,
                    observed=True,
                )
        self._state = state
        self._last_poll = now
        settled = (now - self._changed_at).total_seconds() >= self.presence_settle
        if settled and state.present is not None and state.pair != self._reported_pair:
            self._reported_pair = state.pair
            self._emit(
                ChangerEventKind.PRESENCE,
                address=state.address,
                barcode=state.barcode,
                present=state.present,
                observed=True,
            )

    # -- internals -----------------------------------------------------------------------------
    def _settle(self, state: ObjectState | None) -> None:
        """``state`` is known to the subscribers (a baseline, or reported by an action)."""
        if state is None:
            return
        self._state = state
        self._reported_pair = state.pair
        self._changed_at = self._last_poll = _now()

    def _try_state(self) -> ObjectState | None:
        try:
            return self.read_state()
        except ChangerOfflineError as exc:
            log.warning("changer %r: state unreadable after a failed action: %s", self.name, exc)
            return None

    def _expected_barcode(self, address: str) -> str | None:
        if "contents" not in self._accessors:
            return None
        try:
            position = self.expected(address)
        except ChangerOfflineError as exc:
            log.warning("changer %r: contents unreadable: %s", self.name, exc)
            return None
        return None if position is None else position.barcode

    def _mount_call(self, target: str) -> tuple[str | None, tuple[Any, ...]]:
        """(address if known, arguments of the object's mount method) for ``target``."""
        address = normalise_address(target, self.empty_values) if parse_address(target) else None
        if address is None and self.mount_args != "barcode":
            position = next((p for p in self.contents() if p.barcode == target), None)
            if position is None:
                how = "" if "contents" in self._accessors else " (no 'contents' configured to look it up)"
                raise ChangerError(
                    f"changer {self.name!r}: {target!r} is no address like '3:05' and no barcode of its "
                    f"contents{how}; mount by address"
                )
            address = position.address
        if self.mount_args == "barcode":
            return address, (target,)
        if self.mount_args == "puck_position":
            parsed = parse_address(address or "")
            if parsed is None:
                raise ChangerError(f"changer {self.name!r}: {address!r} is not a '<puck>:<position>' address")
            return address, parsed
        return address, (address,)

    def _call(self, method: Accessor, args: tuple[Any, ...], timeout: float, what: str) -> None:
        reason = f"did not finish within {timeout:g} s"
        expired = ChangerTimeout(f"changer {self.name!r}: {what} failed: {reason}", reason=reason)
        try:
            with gevent.Timeout(timeout, expired):
                method(*args)
        except ChangerOfflineError as exc:  # the robot's method raised
            cause = exc.__cause__
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            raise MountFailedError(f"changer {self.name!r}: {what} failed: {reason}", reason=reason) from exc

    @contextmanager
    def _action(self, what: str) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise ChangerBusyError(f"changer {self.name!r} is busy with another action; {what} refused")
        try:
            yield
        finally:
            self._lock.release()

    def _emit(self, kind: ChangerEventKind, **values: Any) -> None:
        self._hub.emit(ChangerEvent(kind, self.name, _now(), **values))

    def __info__(self) -> str:
        lines = [f"BlissObjectChanger {self.name!r} over {getattr(self.object, 'name', self.object)!r}"]
        for key, accessor in self._accessors.items():
            lines.append(f"  {key:16}: {accessor.path}")
        try:
            state = self.read_state()
            lines.append(
                f"  mounted         : {state.address or 'nothing'}"
                + (f" ({state.barcode})" if state.barcode else "")
            )
            lines.append(f"  presence        : {'no sensor' if state.present is None else state.present}")
        except ChangerOfflineError as exc:
            lines.append(f"  state           : unreadable: {exc}")
        polling = "running" if self._poller is not None else "stopped"
        lines.append(f"  polling         : {polling}, every {self.poll_period:g} s")
        if self.last_error and self._poller is None:  # the poller's death: over once it polls again
            lines.append(f"  last error      : {self.last_error}")
        if self.puck_view is not None:
            try:
                lines.extend(["", self.puck_view()])
            except (SampleTrackError, RedisError, OSError) as exc:  # e.g. Redis down: the rest stands
                lines.append(f"  pucks           : the tracker's view failed ({type(exc).__name__}: {exc})")
        return "\n".join(lines)
