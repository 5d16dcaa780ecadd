"""The delivery loop: one per (beamline outbox, client), in the BLISS session or in a daemon.

Rules (the contract's): in order; a retryable failure (connection, timeout, 408, 429, 5xx) is
retried with capped exponential backoff and jitter, forever, and holds back later events; any
other 4xx dead-letters the event (with the answer) and delivery goes on; the batch endpoint is
used when several events are pending.

Catching up after an outage: the capped backoff (0.5 s doubling to 60 s, jittered) paces the
*full* requests, so that a struggling service is not hammered. While it waits, a client that can
(:class:`~bliss_sampletrack.delivery.base.Probing`: the REST client's ``GET /healthz``) probes
the service: at most once a second while a server answers the probe (a gateway's 502, the
service's 503), every :data:`PROBE_REFUSED_EVERY_S` while nothing answers (a refused connection
costs no server anything). Once the service was seen down (the failure itself was "unreachable",
or a probe failed) and a probe answers 200, delivery resumes at once: within about
:data:`PROBE_REFUSED_EVERY_S` of the service listening again, within a second behind a gateway.
A probe that answers 200 while full requests fail (the service up, its database not) does not
cut the backoff short. ``Retry-After`` (seconds or an HTTP date) is honoured: no full request
before it, whatever the probes say (up to :data:`MAX_RETRY_AFTER_S`).

Exclusion: one deliverer at a time holds the (outbox, client) lease (lease.py: 1.5 s, renewed
every 0.5 s by a heartbeat greenlet, released on a clean exit); the others stand by and poll it
every 0.1 s, so a ``kill -9`` of the holder costs at most about 1.6 s. Every cursor write is
fenced by the lease (outbox.py): a holder paused past its lease (SIGSTOP, GC, a blocked hub)
cannot move the cursor once another took over; it stands by. Events a dead or paused holder sent
but did not mark done are sent again, which the service answers ``200`` (replay). The lease's
value names the holder (``host/pid/...#fence``), shown by ``sampletrack status``.

A client failing in a way it did not foresee (an exception other than ``RetryLater``) is retried
like a retryable failure, with the error in ``last_error``: the loop never dies of it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace

import gevent
import gevent.event

from bliss_sampletrack.delivery.base import DeliveryClient, Health, Probing, RetryLater, Verdict
from bliss_sampletrack.delivery.lease import LEASE_TTL_S, STANDBY_POLL_S, DeliveryLease, HeldLease
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import DeliveryLeaseLost

log = logging.getLogger(__name__)

LOCK_TTL_S = LEASE_TTL_S  # the name ``sampletrack deliver --lock-ttl`` and callers know
IDLE_WAIT_S = 1.0
PROBE_EVERY_S = 1.0  # at most one probe a second reaches a server
PROBE_REFUSED_EVERY_S = 0.25  # while no server answers at all (connection refused)
PROBE_TIMEOUT_S = 2.0
MAX_RETRY_AFTER_S = 300.0  # a server's Retry-After is honoured up to this
GATE_WAIT_S = 0.2  # how often a gated deliverer looks again (write-backs waiting for events)

#: given the stream ID of the next entry: why it must wait (None: send it). The write-back
#: deliverer's gate waits for the events queued before it (writeback.py).
Gate = Callable[[str], str | None]


def delivery_lease(outbox: RedisStreamOutbox, client: str, ttl: int | float = LEASE_TTL_S) -> DeliveryLease:
    """The lease of delivering ``outbox`` to ``client`` (to hold it, or to read who holds it)."""
    return DeliveryLease(outbox.redis, f"{outbox.key}:lock:{client}", ttl)


class Backoff:
    """Capped exponential backoff with full jitter (delay uniform in [base/2, base])."""

    def __init__(self, initial: float = 0.5, maximum: float = 60.0) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempt = 0

    def next_delay(self, hint: float | None = None) -> float:
        """The next wait; a server's hint (``Retry-After``) lengthens it, up to MAX_RETRY_AFTER_S."""
        # the exponent is capped: a deliverer failing for days must not overflow a float
        base = min(self.maximum, self.initial * 2 ** min(self.attempt, 60))
        self.attempt += 1
        delay = random.uniform(base / 2, base)
        return max(delay, min(hint or 0.0, MAX_RETRY_AFTER_S))

    def reset(self) -> None:
        self.attempt = 0


class Deliverer:
    """Delivers one outbox to one client. ``run()`` loops until ``stop()``; ``step()`` does one round.

    ``step()`` may be called without holding the lease (tests, one-off rounds): its cursor writes
    are then unfenced. ``run()`` holds the lease and fences every write with it."""

    def __init__(
        self,
        outbox: RedisStreamOutbox,
        client: DeliveryClient,
        *,
        backoff: Backoff | None = None,
        on_progress: Callable[[int], None] | None = None,
        lock_ttl: int | float = LEASE_TTL_S,
        gate: Gate | None = None,
    ) -> None:
        self.outbox = outbox
        self.gate = gate
        self.client = client
        self.backoff = backoff or Backoff()
        self.lease = delivery_lease(outbox, client.name, lock_ttl)
        self.on_progress = on_progress
        self.delivered = 0
        self.dead = 0
        self.probes = 0  # health probes sent (while waiting out a backoff)
        self._stop = gevent.event.Event()
        self._single_only = False
        self._fenced = False  # True while run() holds the lease: cursor writes are fenced by it
        outbox.register(client.name)

    @property
    def lock(self) -> DeliveryLease:  # the name status and older callers use
        return self.lease

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Hold the lease (standing by while another deliverer has it) and deliver until stopped."""
        import redis

        while not self._stop.is_set():
            try:
                self._hold_lease_and_deliver()
            except redis.exceptions.RedisError as exc:
                # the outbox itself is unreachable (beacon Redis restarting): nothing is lost, wait
                message = f"outbox Redis unreachable: {exc}"
                log.error("deliverer %s/%s: %s", self.outbox.beamline, self.client.name, message)
                self._stop.wait(self.backoff.next_delay())

    def _hold_lease_and_deliver(self) -> None:
        if not self.lease.acquire():
            self._stop.wait(STANDBY_POLL_S)
            return
        log.info(
            "deliverer %s/%s holds the lease (fence %d)",
            self.outbox.beamline,
            self.client.name,
            self.lease.fence,
        )
        heartbeat = gevent.spawn(self._heartbeat)
        heartbeat.name = f"sampletrack-lease-{self.outbox.beamline}-{self.client.name}"
        self._fenced = True
        try:
            while not self._stop.is_set() and heartbeat:
                try:
                    finished = self.step()
                except DeliveryLeaseLost as exc:
                    if heartbeat and self.lease.held():  # lapsed and taken again: a new round
                        log.info("deliverer %s/%s: %s", self.outbox.beamline, self.client.name, exc)
                        continue
                    log.warning("deliverer %s/%s stands by: %s", self.outbox.beamline, self.client.name, exc)
                    return
                if not finished and not self._stop.is_set() and heartbeat:
                    self.outbox.wait(self.client.name, IDLE_WAIT_S)
        finally:
            self._fenced = False
            heartbeat.kill()
            self.lease.release()

    def _heartbeat(self) -> None:
        while True:
            gevent.sleep(self.lease.heartbeat_s)
            if self.lease.renew():
                continue
            old_fence = self.lease.fence
            if self.lease.acquire():  # it lapsed (this process was blocked) and nobody took it
                log.info(
                    "deliverer %s/%s: the lease (fence %d) lapsed, this process was blocked longer "
                    "than %g s; taken again (fence %d)",
                    self.outbox.beamline,
                    self.client.name,
                    old_fence,
                    self.lease.ttl,
                    self.lease.fence,
                )
                continue
            log.warning(
                "deliverer %s/%s: another deliverer took over the lease (%s); this one stands by",
                self.outbox.beamline,
                self.client.name,
                self.lease.holder() or "nobody",
            )
            return

    def _guard(self) -> HeldLease | None:
        """What fences this round's writes: the lease as held now (None when not holding one)."""
        return self.lease.snapshot() if self._fenced else None

    def step(self) -> int:
        """One round: send what is pending (a batch or one event). Returns how many were finished."""
        count = 1 if self._single_only or self.gate is not None else self.client.max_batch
        guard = self._guard()
        entries = self.outbox.next_entries(self.client.name, count)
        if not entries:
            return 0
        if self.gate is not None and (reason := self.gate(entries[0].id)) is not None:
            log.debug("delivery %s -> %s: %s", self.outbox.key, self.client.name, reason)
            self._stop.wait(GATE_WAIT_S)  # waiting, not failing: no backoff, no error recorded
            return 0
        if entries[0].event is None:  # corrupt in Redis: set aside, visibly, never sent
            self.outbox.dead_letter(self.client.name, entries[0], entries[0].error, guard)
            self.dead += 1
            return 1
        entries = entries[: next((i for i, e in enumerate(entries) if e.event is None), len(entries))]
        if guard is not None and self.lease.holder() != guard.value:
            # woken up after a pause past the lease: send nothing under a lease no longer held
            raise DeliveryLeaseLost(
                f"lease {self.lease.key!r} is now held by {self.lease.holder() or 'nobody'}, "
                f"not by {guard.value}: nothing sent"
            )
        try:
            results = self.client.send([entry.event for entry in entries if entry.event is not None])
        except RetryLater as exc:
            if exc.batch_too_large:
                self._single_only = True
            self._retry(str(exc), exc.retry_after, exc.unreachable, guard)
            return 0
        except Exception as exc:  # reported (last_error, log with traceback), then retried
            # a client that fails in an unforeseen way (e.g. an answer of an unexpected shape it
            # cannot parse) must not end the delivery greenlet for good: nothing would be
            # delivered any more, silently. Nothing was confirmed, so retrying is safe.
            log.exception(
                "delivery %s -> %s: unexpected client failure", self.outbox.beamline, self.client.name
            )
            self._retry(
                f"unexpected client failure: {type(exc).__name__}: {str(exc)[:300]}", None, False, guard
            )
            return 0
        finished = 0
        last_delivered = None  # the cursor moves once per round, not once per event
        retry: str | None = None
        for entry, result in zip(entries, results, strict=True):
            if result.verdict is Verdict.RETRY:
                retry = f"event {entry.event.event_id if entry.event else entry.id}: {result.detail}"
                break
            if result.verdict is Verdict.DELIVERED:
                last_delivered = entry.id
                self.delivered += 1
            else:  # moves the cursor too
                self.outbox.dead_letter(self.client.name, entry, result.detail, guard)
                last_delivered = None
                self.dead += 1
            finished += 1
        if last_delivered is not None:
            self.outbox.finish(self.client.name, last_delivered, guard)
        if retry is not None:
            self._retry(retry, None, False, guard)
        if finished:
            self.backoff.reset()
            self._single_only = False
            self.outbox.trim()
            if self.on_progress:
                self.on_progress(finished)
        return finished

    def _retry(self, message: str, hint: float | None, unreachable: bool, guard: HeldLease | None) -> None:
        delay = self.backoff.next_delay(hint)
        self.outbox.set_error(self.client.name, message, guard)
        log.warning(
            "delivery %s -> %s failed (%s); retrying in %.1f s%s",
            self.outbox.beamline,
            self.client.name,
            message,
            delay,
            " or as soon as its health check answers" if isinstance(self.client, Probing) else "",
        )
        self._wait_before_retry(delay, hint, unreachable)

    def _wait_before_retry(self, delay: float, hint: float | None, down: bool) -> None:
        """Wait ``delay`` s, or less when a health probe shows the service back after being down.

        ``down``: the failure already showed the service down (no answer, a gateway's 502-504).
        Never returns before the server's ``Retry-After`` (``hint``) has passed."""
        start = time.monotonic()
        deadline = start + delay
        earliest = start + min(hint or 0.0, MAX_RETRY_AFTER_S)
        if not isinstance(self.client, Probing):
            self._stop.wait(delay)
            return
        gap = PROBE_REFUSED_EVERY_S if down else PROBE_EVERY_S
        while not self._stop.is_set():
            now = time.monotonic()
            wake = min(deadline, max(now + gap, earliest))
            if wake <= now or self._stop.wait(wake - now) or time.monotonic() >= deadline:
                return
            health = self._probe()
            if health is Health.UP and down:
                log.info(
                    "delivery %s -> %s: the service answers its health check again; resuming",
                    self.outbox.beamline,
                    self.client.name,
                )
                return
            down = down or health is not Health.UP
            gap = PROBE_REFUSED_EVERY_S if health is Health.UNREACHABLE else PROBE_EVERY_S

    def _probe(self) -> Health:
        assert isinstance(self.client, Probing)
        self.probes += 1
        try:
            return self.client.probe(PROBE_TIMEOUT_S)
        except Exception:  # logged with its traceback; the backoff goes on as if nothing answered
            # a probe is an optimisation: its failure must not end the delivery greenlet
            log.exception("delivery %s -> %s: health probe failed", self.outbox.beamline, self.client.name)
            return Health.UNREACHABLE

    def retry_dead_letters(self) -> tuple[int, int]:
        """Send the dead letters again (after a fix); returns (delivered, still dead)."""
        letters = self.outbox.take_dead_letters(self.client.name)
        still_dead = []
        delivered = 0
        for letter in letters:
            if letter.event is None:  # unreadable: kept for a human to look at
                still_dead.append(letter)
                continue
            try:
                [result] = self.client.send([letter.event])
            except RetryLater as exc:
                still_dead.append(replace(letter, answer=f"retry failed: {exc}"))
                continue
            if result.verdict is Verdict.DELIVERED:
                delivered += 1
            else:
                still_dead.append(replace(letter, answer=result.detail))
        self.outbox.return_dead_letters(self.client.name, still_dead)
        return delivered, len(still_dead)
