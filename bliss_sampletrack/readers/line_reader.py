"""The engine of every line-based reader: one greenlet owns the connection, callers subscribe.

A background greenlet (the "pump") connects, reconnects with capped exponential backoff after a
disconnect or a power cycle, splits the byte stream into lines, classifies each line with the
reader's :class:`~bliss_sampletrack.readers.dialects.Dialect` and hands every outcome to the
current subscribers. ``read()`` subscribes, sends the trigger and waits for the first result;
``stream()`` subscribes and yields. One owner of the socket means no two greenlets ever read it,
and a reconnect happens in exactly one place.

Every triggered read returns the answer to its own trigger, or an explicit no-read/timeout:

- a line whose first byte arrived before the trigger was sent is no answer to it (the tail of an
  answer split across the previous read's deadline, a late code): dropped and logged;
- after a read that timed out, the answer it was owed (the no-read a Keyence or DataMan sends for
  the stop command, a Microscan's late code) is waited for, at most :data:`STALE_GRACE_S` (not
  counted in the new read's timeout), before the next trigger is sent: it is dropped when it
  comes, and never overwrites ``last_error``;
- when several results arrive together (two answers in one TCP segment), the last one is the
  answer: a device answers each trigger once, so the earlier ones belong to earlier triggers;
- a line that is no result in the dialect's grammar (junk: control or high bytes, framing noise,
  an over-long line) does not end the read: it is logged, kept in ``last_error`` and the read
  goes on waiting for its answer; the timeout then says what was received instead.

Caveats:
- A Microscan has no stop command: its answer to a timed-out trigger that comes later than
  :data:`STALE_GRACE_S` and after the next trigger cannot be told from the next answer (the
  protocol carries no request id); give its reads a timeout longer than its decoding time.
- ``OK,<cmd>``-style acknowledgements are skipped whether or not the model sends them.
- Memory is bounded whatever the device sends: a line is at most ``max_line`` bytes (framing),
  and each ``stream()`` follower keeps at most :data:`STREAM_QUEUE` outcomes. A follower that
  falls behind a flood loses the *oldest* ones (counted, logged): the latest code always wins.
- A flood does not hold the gevent hub: the pump yields after each chunk it reads.
- A frame left unfinished (no terminator) for :data:`POLL_S` is dropped (logged): a device that
  lost power mid-frame and came back must not glue its old fragment to its next code.
- Log records about lines (garbage, nobody waiting, dropped outcomes) are throttled to one per
  kind and second, with the count of those suppressed: a flood cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace

import gevent
import gevent.event
import gevent.lock
import gevent.queue

from bliss_sampletrack.errors import (
    InvalidBarcodeError,
    NoReadError,
    ReaderCommandError,
    ReaderConnectionError,
    ReaderError,
    ReaderProtocolError,
    ReaderTimeout,
    SampleTrackError,
)
from bliss_sampletrack.readers.dialects import Dialect, LineKind
from bliss_sampletrack.readers.framing import DEFAULT_MAX_LINE, LineSplitter, decode_code
from bliss_sampletrack.readers.protocol import BarcodeRead, ConnectionState, ReadOutcome
from bliss_sampletrack.readers.transports import Transport

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often an idle pump wakes up to notice close(); also the longest gap in a frame
STALE_GRACE_S = 0.5  # how long the answer owed to a timed-out trigger is waited for
STREAM_QUEUE = 1000  # outcomes kept for a stream() follower that does not keep up
LOG_EVERY_S = 1.0  # at most one log record per kind of line problem and per second


class _Subscription:
    """One consumer's bounded queue of outcomes.

    ``keep_latest``: when full, drop the oldest outcome (a follower behind a flood still ends on
    the newest code); otherwise ignore new ones (a triggered read wants the first result).
    ``since``: a triggered read's trigger time (``time.monotonic()``): only lines begun after it
    are answers to it (None: a stream() follower takes everything)."""

    def __init__(self, maxsize: int, keep_latest: bool, since: float | None = None) -> None:
        self.queue: gevent.queue.Queue[ReadOutcome] = gevent.queue.Queue(maxsize)
        self.keep_latest = keep_latest
        self.since = since
        self.junk: SampleTrackError | None = None  # the last non-result line received since
        self.dropped = 0

    def put(self, outcome: ReadOutcome) -> None:
        if self.queue.full():
            self.dropped += 1
            if not self.keep_latest:
                return
            self.queue.get_nowait()
        self.queue.put_nowait(outcome)


class _Throttle:
    """At most one record per kind every ``interval`` s; the next one says how many were suppressed."""

    def __init__(self, interval: float = LOG_EVERY_S) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._next[kind] = now + self.interval
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar record(s) suppressed in the last %g s)"
            args = (*args, suppressed, self.interval)
        log.log(level, message, *args)


def _is_junk(outcome: ReadOutcome) -> bool:
    """A line that is no result in the dialect's grammar (garbage, framing noise, over-long):
    never an answer to a trigger. A no-read, a command error or a code is a result."""
    return isinstance(outcome, ReaderProtocolError) or (
        isinstance(outcome, InvalidBarcodeError) and not isinstance(outcome, NoReadError)
    )


def _fresh_now() -> float:
    """The hub's clock, brought up to date first. After the process did something blocking (a long
    computation in the shell), the loop's cached time lags behind: a timeout started from it would
    expire at once, and a read would fail without waiting for the reader."""
    loop = gevent.get_hub().loop
    loop.update_now()
    return loop.now()


def _unfinished(data: bytes, terminator: bytes, limit: int) -> bytes:
    """The bytes after the last terminator in ``data`` (at most ``limit`` + 1 of them)."""
    end = data.rfind(terminator)
    rest = data if end < 0 else data[end + len(terminator) :]
    return rest[-(limit + 1) :]


class Backoff:
    """Capped exponential backoff: initial, x2 each failure, at most ``maximum``; reset on success."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial, self.maximum = initial, maximum
        self.next = initial

    def failed(self) -> float:
        delay = self.next
        self.next = min(self.next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.next = self.initial


class LineReader:
    """A barcode reader speaking a line protocol over a transport (implements ``BarcodeReader``)."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        dialect: Dialect,
        *,
        no_read: tuple[str, ...] = (),
        timeout: float = 3.0,
        connect_timeout: float = 3.0,
        max_line: int = DEFAULT_MAX_LINE,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.dialect = replace(dialect, no_read=tuple(dialect.no_read) + tuple(no_read))
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_line = max_line
        self.backoff = backoff or Backoff()
        self._state = ConnectionState.DISCONNECTED
        self._connected = gevent.event.Event()
        self._last_error: str | None = None
        self._last_read: BarcodeRead | None = None
        self._subscribers: list[_Subscription] = []
        self._throttle = _Throttle()
        self._pump: gevent.Greenlet | None = None
        self._trigger_lock = gevent.lock.Semaphore()
        self._owed = 0  # answers still due to triggers whose read timed out
        self._owed_until = 0.0  # ... waited for until then (time.monotonic())
        self._owed_paid = gevent.event.Event()
        self.stale_dropped = 0  # lines dropped as belonging to an earlier trigger
        self.reconnections = 0

    # -- BarcodeReader protocol ------------------------------------------------------------
    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def last_read(self) -> BarcodeRead | None:
        return self._last_read

    def read(self, timeout: float | None = None) -> BarcodeRead:
        if self.dialect.trigger is None:
            raise ReaderError(
                f"reader {self.name!r} ({self.dialect.family}) has no trigger command configured; "
                "use stream() or configure 'trigger' in its YAML"
            )
        timeout = self.timeout if timeout is None else timeout
        deadline = _fresh_now() + timeout
        with self._trigger_lock:  # one triggered read at a time: results are not tagged
            self._ensure_pump()
            if not self._connected.wait(timeout):
                raise ReaderConnectionError(
                    f"reader {self.name!r} not connected to {self.transport.url} after {timeout:g} s"
                    + (f": {self._last_error}" if self._last_error else "")
                )
            if self._settle_owed():  # the wait for an old answer is not taken from this read's time
                deadline = max(deadline, _fresh_now() + timeout)
            subscription = _Subscription(1, keep_latest=False, since=time.monotonic())
            self._subscribers.append(subscription)
            try:
                self.transport.write(self.dialect.trigger, timeout)
                outcome = self._first_result(subscription, deadline)
            except ReaderTimeout:
                self._owe_answer()
                self._stop_reading()
                raise
            except ReaderConnectionError as exc:  # the trigger could not be sent
                raise ReaderConnectionError(f"{exc}; {self._advice()}") from None
            finally:
                self._subscribers.remove(subscription)
        if isinstance(outcome, SampleTrackError):
            raise outcome
        return outcome

    def stream(self, timeout: float | None = None) -> Iterator[ReadOutcome]:
        self._ensure_pump()
        subscription = _Subscription(STREAM_QUEUE, keep_latest=True)
        queue = subscription.queue
        self._subscribers.append(subscription)
        deadline = None if timeout is None else _fresh_now() + timeout
        try:
            while self._pump is not None:
                wait = POLL_S if deadline is None else min(POLL_S, deadline - gevent.get_hub().loop.now())
                if wait <= 0:
                    return
                try:
                    yield queue.get(timeout=wait)
                except gevent.queue.Empty:
                    continue
        finally:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def connect(self, timeout: float | None = None) -> None:
        """Start the connection now (otherwise the first read does); wait until connected."""
        timeout = self.connect_timeout if timeout is None else timeout
        _fresh_now()
        self._ensure_pump()
        if not self._connected.wait(timeout):
            raise ReaderConnectionError(
                f"reader {self.name!r} not connected to {self.transport.url} after {timeout:g} s: "
                f"{self._last_error or 'no answer'}"
            )

    def close(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.kill(block=True, timeout=5)
        self.transport.close()
        self._set_state(ConnectionState.DISCONNECTED)

    def __close__(self) -> None:  # called by BLISS when the session closes
        self.close()

    def __info__(self) -> str:
        last = self._last_read
        lines = [
            f"{self.dialect.family} barcode reader {self.name!r}",
            f"  connection : {self.transport.url} ({self._state})",
            f"  reconnects : {self.reconnections}",
            f"  last code  : {last.barcode!r} at {last.received_at.isoformat(timespec='seconds')}"
            if last
            else "  last code  : none",
            f"  last error : {self._last_error or 'none'}",
        ]
        return "\n".join(lines)

    # -- internals -----------------------------------------------------------------------------
    def _first_result(self, subscription: _Subscription, deadline: float) -> ReadOutcome:
        try:
            return subscription.queue.get(timeout=max(deadline - gevent.get_hub().loop.now(), 0.0))
        except gevent.queue.Empty:
            pass
        received = f"; it sent instead: {subscription.junk}" if subscription.junk else ""
        error = ReaderTimeout(
            f"reader {self.name!r} ({self.transport.url}) gave no result within the read timeout "
            f"after the trigger {self.dialect.trigger!r}{received}. {self._trigger_hint()}"
        )
        self._last_error = str(error)
        raise error

    def _trigger_hint(self) -> str:
        """What to check when a triggered read gets no answer (per family)."""
        return (
            "Check that the reader's trigger setting accepts this command (trigger mode, framing) "
            "and that a code is in its field of view"
        )

    def _owe_answer(self) -> None:
        """The timed-out trigger's answer may still come: the next read waits for it first."""
        self._owed += 1
        self._owed_until = time.monotonic() + min(STALE_GRACE_S, self.timeout)
        self._owed_paid.clear()

    def _settle_owed(self) -> bool:
        """Before a trigger: let the answer owed to a timed-out trigger arrive (at most until
        ``_owed_until``), so it cannot be taken for the answer to the new one. True if it waited."""
        if not self._owed:
            return False
        wait = self._owed_until - time.monotonic()
        if wait > 0:
            self._owed_paid.wait(wait)
        if self._owed:
            log.info(
                "reader %r: %d answer(s) owed to timed-out trigger(s) never came; reading on",
                self.name,
                self._owed,
            )
        self._owed = 0
        return True

    def _stop_reading(self) -> None:
        if self.dialect.stop and self.transport.is_open:
            try:
                self.transport.write(self.dialect.stop, self.connect_timeout)
            except ReaderError as exc:
                log.warning("reader %r: could not send the stop command: %s", self.name, exc)

    def _ensure_pump(self) -> None:
        if self._pump is None or self._pump.dead:
            self._pump = gevent.spawn(self._run)
            self._pump.name = f"sampletrack-reader-{self.name}"
            self._pump.link_exception(self._pump_died)

    def _pump_died(self, greenlet: gevent.Greenlet) -> None:
        # a bug, not a device problem: make it visible in __info__ and the log; the next
        # read() or stream() starts a new pump
        self._last_error = f"reader {self.name!r}: internal error {greenlet.exception!r}"
        log.error("%s", self._last_error, exc_info=greenlet.exc_info)
        self._set_state(ConnectionState.DISCONNECTED)

    def _set_state(self, state: ConnectionState) -> None:
        self._state = state
        if state is ConnectionState.CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()

    def _publish_lines(self, lines: list[tuple[ReadOutcome, float]]) -> None:
        """Hand one chunk's outcomes (each with the time its line began) to the subscribers.

        A triggered read gets only lines begun after its trigger, and of the results in one
        chunk the last one (two answers in one segment: the earlier is an earlier trigger's).
        With no triggered read waiting, results are owed answers of timed-out triggers (dropped:
        they must not become ``last_read``/``last_error``) or unsolicited (streams)."""
        triggered = [s for s in self._subscribers if s.since is not None]
        followers = [s for s in self._subscribers if s.since is None]
        results = [(o, started) for o, started in lines if not _is_junk(o)]
        for outcome, started in lines:
            if _is_junk(outcome):  # logged, in last_error, to followers; a triggered read waits on
                self._publish(outcome, followers)
                for subscription in triggered:
                    if started >= subscription.since:  # type: ignore[operator]
                        subscription.junk = outcome  # type: ignore[assignment]
        if not results:
            return
        for subscription in triggered:
            fresh = [o for o, started in results if started >= subscription.since]  # type: ignore[operator]
            stale = len(results) - len(fresh)
            if stale or len(fresh) > 1:
                self._stale(results[: stale + len(fresh) - 1])
            if fresh:
                self._publish(fresh[-1], [subscription])
        if not triggered and self._owed:
            for outcome, _ in results:
                if self._owed:
                    self._owed -= 1
                    self._stale([(outcome, 0.0)])
                    if not self._owed:
                        self._owed_paid.set()
                else:  # no triggered read: to the followers, if any (else logged as unwaited)
                    self._publish(outcome, followers)
            return
        if followers or not triggered:
            for outcome, _ in results:
                self._publish(outcome, followers)

    def _stale(self, lines: list[tuple[ReadOutcome, float]]) -> None:
        for outcome, _ in lines:
            self.stale_dropped += 1
            self._throttle.log(
                logging.INFO,
                "stale",
                "reader %r: dropped %s: it answers an earlier trigger, not the current one",
                self.name,
                outcome,
            )

    def _publish(self, outcome: ReadOutcome, subscribers: list[_Subscription] | None = None) -> None:
        subscribers = self._subscribers if subscribers is None else subscribers
        if isinstance(outcome, SampleTrackError):
            self._last_error = str(outcome)
            if not isinstance(outcome, NoReadError | ReaderConnectionError):  # garbage, over-long, refused
                self._throttle.log(logging.WARNING, "bad line", "%s (from %s)", outcome, self.transport.url)
        else:
            self._last_read = outcome
        if not subscribers:
            self._throttle.log(
                logging.INFO, "unwaited", "reader %r: nobody waiting for %s", self.name, outcome
            )
        for subscription in list(subscribers):
            dropped = subscription.dropped
            subscription.put(outcome)
            if subscription.dropped > dropped and subscription.keep_latest:
                self._throttle.log(
                    logging.WARNING,
                    "dropped",
                    "reader %r: a follower is %d outcomes behind; the oldest are dropped (%d so far)",
                    self.name,
                    STREAM_QUEUE,
                    subscription.dropped,
                )

    def _advice(self) -> str:
        return (
            f"check that the reader is powered on and reachable at {self.transport.url} (cable, "
            "network, another program holding its port); it reconnects by itself"
        )

    def _run(self) -> None:
        splitter = LineSplitter(self.name, self.dialect.terminator, self.max_line, self.dialect.header)
        first = True
        while True:
            self._set_state(ConnectionState.CONNECTING)
            try:
                self.transport.open(self.connect_timeout)
            except ReaderConnectionError as exc:
                delay = self.backoff.failed()
                self._last_error = f"{exc}; {self._advice()} (next attempt in {delay:.1f} s)"
                log.warning("%s", self._last_error)
                gevent.sleep(delay)
                continue
            if not first:
                self.reconnections += 1
            first = False
            self.backoff.reset()
            splitter.clear()
            self._set_state(ConnectionState.CONNECTED)
            log.info("reader %r connected to %s", self.name, self.transport.url)
            try:
                self._pump_lines(splitter)
            except ReaderConnectionError as exc:
                self._set_state(ConnectionState.CONNECTING)
                delay = self.backoff.failed()
                lost = ReaderConnectionError(f"{exc}; {self._advice()} (next attempt in {delay:.1f} s)")
                log.warning("%s", lost)
                self._publish(lost)
                gevent.sleep(delay)

    def _pump_lines(self, splitter: LineSplitter) -> None:
        terminator = self.dialect.terminator
        unfinished = b""  # bytes of a frame still waiting for its terminator
        while True:
            try:
                data = self.transport.read_some(POLL_S)
            except ReaderTimeout:
                if unfinished:
                    self._drop_unfinished(unfinished, splitter)
                    unfinished = b""
                continue
            unfinished = _unfinished(unfinished + data, terminator, self.max_line)
            lines: list[tuple[ReadOutcome, float]] = []
            for item, started in splitter.feed_timed(data):
                outcome = item if isinstance(item, SampleTrackError) else self._outcome(item)
                if outcome is not None:
                    lines.append((outcome, started))
            if lines:
                self._publish_lines(lines)
            gevent.sleep(0)  # a device sending without pause must not hold the hub

    def _drop_unfinished(self, unfinished: bytes, splitter: LineSplitter) -> None:
        """A frame stalled for POLL_S: the device stopped mid-frame (power cut, cable). Its bytes
        must not be glued to the device's next frame, which would make a code of two halves."""
        splitter.clear()
        if not unfinished.strip(b"\r\n") or len(unfinished) > self.max_line:
            return  # a stray CR/LF, or an over-long line the splitter already reported
        self._last_error = (
            f"reader {self.name!r} ({self.transport.url}) stopped in the middle of a frame: "
            f"{unfinished[:40]!r} without terminator {self.dialect.terminator!r} for "
            f"{POLL_S:g} s, dropped (no code is taken from a partial frame)"
        )
        log.warning("%s", self._last_error)

    def _outcome(self, line: bytes) -> ReadOutcome | None:
        """The result a line carries; None for an acknowledgement, which is no result."""
        classified = self.dialect.classify(line)
        if classified.kind is LineKind.ACK:
            log.debug("reader %r: acknowledgement %r", self.name, line)
            return None
        if classified.kind is LineKind.COMMAND_ERROR:
            return ReaderCommandError(f"reader {self.name!r}: {classified.detail} (received {line!r})")
        if classified.kind is LineKind.NOREAD:
            return NoReadError(f"reader {self.name!r} answered a no-read ({line!r})", raw=line)
        try:
            return decode_code(self.name, classified.payload, self.dialect.no_read)
        except SampleTrackError as exc:
            return exc
