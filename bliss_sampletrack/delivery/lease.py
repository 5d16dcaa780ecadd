"""Who delivers an outbox to a client: a short Redis lease, a heartbeat, and a fencing token.

One deliverer at a time may send an outbox's events to a client and move that client's cursor.
Several may run (the BLISS session's, a ``sampletrack deliver`` daemon beside it): one holds the
lease and delivers, the others stand by and try to take the lease every :data:`STANDBY_POLL_S`.

- **Short lease, heartbeat.** The lease lives :data:`LEASE_TTL_S` (1.5 s) unless renewed; its
  holder renews it every third of that. A holder killed with ``kill -9`` stops renewing, so a
  standby takes over at most ``ttl + STANDBY_POLL_S`` (1.6 s) after the holder's last renewal.
  A holder that exits cleanly releases it at once.
- **Fencing token.** Each acquisition draws the next number of a per-lease counter (``INCR``)
  and the lease's value is ``host/pid/random#N``. The outbox's cursor writes (``finish``,
  ``dead_letter``, ``set_error``) run as Lua scripts that first check that the lease still holds
  this exact value: a holder that was paused past its lease (SIGSTOP, a long GC pause, a hub
  blocked for seconds, a network cut) and wakes up after another took over cannot move the
  cursor; it gets :class:`~bliss_sampletrack.errors.DeliveryLeaseLost` and stands by. What it
  sent meanwhile reaches the service as a replay (``200``, nothing stored twice). A delivery
  round is fenced by the value held when it began (:class:`HeldLease`).
- **A lapse is not a takeover.** A holder whose heartbeat finds the lease expired and free (its
  process was blocked past the TTL: BLISS imports ``bliss.physics`` at a session's first scan and
  blocks 1.4-2.3 s) takes it again with a new fencing number, discards the round begun under the
  old one, and goes on: logged at INFO, not shown in the shell. Only a lease another deliverer
  holds makes it stand by (a WARNING naming the new holder).

Caveats: the lease measures time with Redis's clock only (``PX``), so clock skew between hosts
does not matter; a hub blocked longer than the TTL loses the lease (then another deliverer, or the
same one a moment later, carries on). The holder's value names ``host/pid`` for ``sampletrack
status`` and operators.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

LEASE_TTL_S = 1.5
STANDBY_POLL_S = 0.1
MIN_LEASE_TTL_S = 1.0  # renewed every ttl/3: below this a busy process loses it while it works

_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then
  return 0
end
local fence = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], ARGV[1] .. '#' .. fence, 'PX', ARGV[2])
return fence
"""
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


@dataclass(frozen=True, slots=True)
class HeldLease:
    """The lease as held when a delivery round began: that round's writes are fenced by this value,
    so a round begun before the lease lapsed cannot write even if the same deliverer has taken the
    lease again since (with a new fencing number) and another moved the cursor meanwhile."""

    key: str
    value: str | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DeliveryLease:
    """The lease of one (outbox, client). ``value`` is what Redis holds while this object holds it
    (None otherwise); ``fence`` its fencing number."""

    def __init__(self, redis: Any, key: str, ttl: int | float = LEASE_TTL_S) -> None:
        if ttl <= 0:
            raise ValueError(f"lease {key}: ttl must be > 0 s, got {ttl!r}")
        self.redis, self.key, self.ttl = redis, key, float(ttl)
        self.fence_key = f"{key}:fence"
        # host/pid for people; the random part keeps two holders of one process apart
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"
        self.value: str | None = None
        self.fence = 0

    @property
    def heartbeat_s(self) -> float:
        return self.ttl / 3

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; a new fencing number each time."""
        fence = int(self.redis.eval(_ACQUIRE, 2, self.key, self.fence_key, self.owner, self._ms))
        if fence:
            self.fence, self.value = fence, f"{self.owner}#{fence}"
        return bool(fence)

    def renew(self) -> bool:
        """Extend the lease (the heartbeat); False when it is no longer this holder's."""
        if self.value is None:
            return False
        if self.redis.eval(_RENEW, 1, self.key, self.value, self._ms):
            return True
        self.value = None
        return False

    def snapshot(self) -> HeldLease:
        """The lease as held now (see :class:`HeldLease`)."""
        return HeldLease(self.key, self.value)

    def held(self) -> bool:
        """True while Redis still holds this holder's value (one GET)."""
        return self.value is not None and self.holder() == self.value

    def release(self) -> None:
        """Give the lease up now (a clean exit): a standby takes over within its next poll."""
        if self.value is not None:
            self.redis.eval(_RELEASE, 1, self.key, self.value)
            self.value = None

    def holder(self) -> str | None:
        """``host/pid/random#fence`` of whoever holds the lease, or None."""
        value = self.redis.get(self.key)
        return None if value is None else _text(value)

    def holder_pid(self) -> int | None:
        """The pid in the holder's value (``host/pid/random#fence``), or None when nobody holds it."""
        value = self.holder()
        return None if value is None else int(value.split("/")[1])

    @property
    def _ms(self) -> int:
        return int(self.ttl * 1000)
