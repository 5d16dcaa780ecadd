"""The delivery loop: one per (beamline outbox, client), in the BLISS session or in a daemon.

Rules (the contract's): in order; a retryable failure (connection, timeout, 408, 429, 5xx) is
retried with capped exponential backoff and jitter, forever, and holds back later events; any
other 4xx dead-letters the event (with the answer) and delivery goes on; the batch endpoint is
used when several events are pending.

Exclusion: a deliverer holds a Redis lock for its (beamline, client) while it works, renewed by
a greenlet; a second deliverer (another session, ``sampletrack deliver``) waits for the lock.
If the holder dies (even kill -9), the lock expires after its TTL (``LOCK_TTL_S``, or
``sampletrack deliver --lock-ttl``) and another takes over; events it sent but did not mark done
are sent again, which the service answers ``200`` (replay). The lock's value names the holder
(``host/pid/...``), shown by ``sampletrack status``.

A client failing in a way it did not foresee (an exception other than ``RetryLater``) is retried
like a retryable failure, with the error in ``last_error``: the loop never dies of it.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gevent
import gevent.event

from bliss_sampletrack.delivery.base import DeliveryClient, RetryLater, Verdict
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox

log = logging.getLogger(__name__)

LOCK_TTL_S = 10.0
IDLE_WAIT_S = 1.0

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLock:
    """A lock with an owner token and a TTL; renew() and release() only act for the owner.

    The token names the holder (``host/pid/random``) so that ``sampletrack status`` and an
    operator can tell which process delivers; the random part keeps two holders in one
    process (two deliverers of one client) apart."""

    def __init__(self, redis: Any, key: str, ttl: int | float = LOCK_TTL_S) -> None:
        if ttl <= 0:
            raise ValueError(f"lock {key}: ttl must be > 0 s, got {ttl!r}")
        self.redis, self.key, self.ttl = redis, key, ttl
        self.token = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"

    def acquire(self) -> bool:
        return bool(self.redis.set(self.key, self.token, nx=True, px=int(self.ttl * 1000)))

    def renew(self) -> bool:
        return bool(self.redis.eval(_RENEW, 1, self.key, self.token, int(self.ttl * 1000)))

    def release(self) -> None:
        self.redis.eval(_RELEASE, 1, self.key, self.token)

    def holder(self) -> str | None:
        value = self.redis.get(self.key)
        return None if value is None else (value.decode() if isinstance(value, bytes) else str(value))


class Backoff:
    """Capped exponential backoff with full jitter (delay uniform in [base/2, base])."""

    def __init__(self, initial: float = 0.5, maximum: float = 60.0) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempt = 0

    def next_delay(self, hint: float | None = None) -> float:
        # the exponent is capped: a deliverer failing for days must not overflow a float
        base = min(self.maximum, self.initial * 2 ** min(self.attempt, 60))
        self.attempt += 1
        delay = random.uniform(base / 2, base)
        return min(self.maximum, max(delay, hint or 0.0))

    def reset(self) -> None:
        self.attempt = 0


class Deliverer:
    """Delivers one outbox to one client. ``run()`` loops until ``stop()``; ``step()`` does one round."""

    def __init__(
        self,
        outbox: RedisStreamOutbox,
        client: DeliveryClient,
        *,
        backoff: Backoff | None = None,
        on_progress: Callable[[int], None] | None = None,
        lock_ttl: int | float = LOCK_TTL_S,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.backoff = backoff or Backoff()
        self.lock = RedisLock(outbox.redis, f"{outbox.key}:lock:{client.name}", lock_ttl)
        self.on_progress = on_progress
        self.delivered = 0
        self.dead = 0
        self._stop = gevent.event.Event()
        self._single_only = False
        outbox.register(client.name)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Hold the lock (waiting for it while another deliverer has it) and deliver forever."""
        import redis

        while not self._stop.is_set():
            try:
                self._hold_lock_and_deliver()
            except redis.exceptions.RedisError as exc:
                # the outbox itself is unreachable (beacon Redis restarting): nothing is lost, wait
                message = f"outbox Redis unreachable: {exc}"
                log.error("deliverer %s/%s: %s", self.outbox.beamline, self.client.name, message)
                self._stop.wait(self.backoff.next_delay())

    def _hold_lock_and_deliver(self) -> None:
        if not self.lock.acquire():
            self._stop.wait(min(1.0, self.lock.ttl / 4))
            return
        renewer = gevent.spawn(self._renew)
        try:
            while not self._stop.is_set() and renewer:
                if not self.step() and not self._stop.is_set():
                    self.outbox.wait(self.client.name, IDLE_WAIT_S)
        finally:
            renewer.kill()
            self.lock.release()

    def _renew(self) -> None:
        while True:
            gevent.sleep(self.lock.ttl / 3)
            if not self.lock.renew():
                log.error(
                    "deliverer %s/%s lost its lock; stopping this round",
                    self.outbox.beamline,
                    self.client.name,
                )
                return

    def step(self) -> int:
        """One round: send what is pending (a batch or one event). Returns how many were finished."""
        count = 1 if self._single_only else self.client.max_batch
        entries = self.outbox.next_entries(self.client.name, count)
        if not entries:
            return 0
        if entries[0].event is None:  # corrupt in Redis: set aside, visibly, never sent
            self.outbox.dead_letter(self.client.name, entries[0], entries[0].error)
            self.dead += 1
            return 1
        entries = entries[: next((i for i, e in enumerate(entries) if e.event is None), len(entries))]
        try:
            results = self.client.send([entry.event for entry in entries if entry.event is not None])
        except RetryLater as exc:
            if exc.batch_too_large:
                self._single_only = True
            self._retry(str(exc), exc.retry_after)
            return 0
        except Exception as exc:  # reported (last_error, log with traceback), then retried
            # a client that fails in an unforeseen way (e.g. an answer of an unexpected shape it
            # cannot parse) must not end the delivery greenlet for good: nothing would be
            # delivered any more, silently. Nothing was confirmed, so retrying is safe.
            log.exception(
                "delivery %s -> %s: unexpected client failure", self.outbox.beamline, self.client.name
            )
            self._retry(f"unexpected client failure: {type(exc).__name__}: {str(exc)[:300]}", None)
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
            else:
                self.outbox.dead_letter(self.client.name, entry, result.detail)  # moves the cursor too
                last_delivered = None
                self.dead += 1
            finished += 1
        if last_delivered is not None:
            self.outbox.finish(self.client.name, last_delivered)
        if retry is not None:
            self._retry(retry, None)
        if finished:
            self.backoff.reset()
            self._single_only = False
            self.outbox.trim()
            if self.on_progress:
                self.on_progress(finished)
        return finished

    def _retry(self, message: str, hint: float | None) -> None:
        delay = self.backoff.next_delay(hint)
        self.outbox.set_error(self.client.name, message)
        log.warning(
            "delivery %s -> %s failed (%s); retrying in %.1f s",
            self.outbox.beamline,
            self.client.name,
            message,
            delay,
        )
        self._stop.wait(delay)

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
