"""Running the deliverers of one outbox (one per client), and reporting on them.

Used by the tracker inside a BLISS session (greenlets) and by ``sampletrack deliver``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import gevent

from bliss_sampletrack.delivery.base import DeliveryClient
from bliss_sampletrack.delivery.loop import LOCK_TTL_S, Deliverer, Gate, delivery_lease
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.delivery.writeback import Kind, WriteBack, outbox_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientStatus:
    client: str
    description: str
    pending: int
    oldest_pending_s: float | None
    last_error: str | None
    dead_letters: int
    lock_holder: str | None

    def line(self) -> str:
        age = "" if self.oldest_pending_s is None else f", oldest {self.oldest_pending_s:.0f} s"
        holder = f", delivered by {self.lock_holder}" if self.lock_holder else ""
        error = f", last error: {self.last_error}" if self.last_error else ""
        return (
            f"{self.description}: {self.pending} pending{age}, {self.dead_letters} dead letter(s)"
            f"{holder}{error}"
        )


def client_status(outbox: RedisStreamOutbox, client: str, description: str) -> ClientStatus:
    """How delivering ``outbox`` to ``client`` (by name) stands, read from Redis alone: no client
    object, so no secret is needed (``sampletrack status`` is a read)."""
    return ClientStatus(
        client,
        description,
        outbox.pending(client),
        outbox.oldest_pending_age(client),
        outbox.last_error(client),
        len(outbox.dead_letters(client)),
        delivery_lease(outbox, client).holder(),
    )


def progress_bar(done: int, total: int) -> None:
    """A one-line text progress bar for ``drain`` (rewritten in place)."""
    width = 30
    filled = int(width * done / total)
    print(f"\rdelivering [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", flush=True)


def writeback_outbox(outbox: RedisStreamOutbox) -> RedisStreamOutbox:
    """The write-back outbox (writeback.py) of the beamline of the event ``outbox``."""
    return RedisStreamOutbox(outbox.redis, outbox.beamline, key=outbox_key(outbox.beamline), record=WriteBack)


def after_events(outbox: RedisStreamOutbox, client: str) -> Gate:
    """A write-back waits until ``client`` has finished the events queued before it."""

    def gate(entry_id: str) -> str | None:
        if outbox.pending_before(client, entry_id):
            return f"write-back {entry_id} waits for the events queued before it"
        return None

    return gate


class DeliveryManager:
    """The deliverers of one beamline: one per client on the event outbox, and one per client that
    writes back (``client.writeback()`` gives a client, e.g. ICAT+'s) on the write-back outbox."""

    def __init__(
        self,
        outbox: RedisStreamOutbox,
        clients: Iterable[DeliveryClient],
        *,
        lock_ttl: int | float = LOCK_TTL_S,
    ) -> None:
        self.outbox = outbox
        self.writebacks = writeback_outbox(outbox)
        clients = list(clients)
        self.deliverers = [Deliverer(outbox, client, lock_ttl=lock_ttl) for client in clients]
        for client in clients:
            writer = getattr(client, "writeback", lambda: None)()
            if writer is not None:
                gate = after_events(outbox, client.name)
                self.deliverers.append(Deliverer(self.writebacks, writer, lock_ttl=lock_ttl, gate=gate))
        self._greenlets: list[gevent.Greenlet] = []

    @property
    def writeback_kinds(self) -> frozenset[Kind]:
        """What the clients write back of an inventory's findings (the tracker queues only these)."""
        kinds: set[Kind] = set()
        for deliverer in self.deliverers:
            if deliverer.outbox is self.writebacks:
                kinds |= getattr(deliverer.client, "kinds", frozenset(Kind))
        return frozenset(kinds)

    @property
    def running(self) -> bool:
        return any(not g.dead for g in self._greenlets)

    def start(self) -> None:
        if self.running:
            return
        self._greenlets = []
        for deliverer in self.deliverers:
            deliverer._stop.clear()
            greenlet = gevent.spawn(deliverer.run)
            kind = "writeback" if deliverer.outbox is self.writebacks else "deliver"
            greenlet.name = f"sampletrack-{kind}-{self.outbox.beamline}-{deliverer.client.name}"
            self._greenlets.append(greenlet)

    def stop(self, timeout: float = 5.0) -> None:
        for deliverer in self.deliverers:
            deliverer.stop()
        gevent.joinall(self._greenlets, timeout=timeout)
        gevent.killall([g for g in self._greenlets if not g.dead], timeout=timeout)
        self._greenlets = []

    def status(self) -> list[ClientStatus]:
        return [client_status(d.outbox, d.client.name, d.client.describe()) for d in self.deliverers]

    def retry_dead_letters(self) -> dict[str, tuple[int, int]]:
        return {self.label(d): d.retry_dead_letters() for d in self.deliverers}

    def label(self, deliverer: Deliverer) -> str:
        """The client's name, ``(write-back)`` added for a write-back deliverer."""
        if deliverer.outbox is self.writebacks:
            return f"{deliverer.client.name} (write-back)"
        return deliverer.client.name

    def drain(self, timeout: float, progress: Callable[[int, int], None] | None = None) -> bool:
        """Wait (cooperatively) until nothing is pending for any client, or ``timeout`` seconds.

        ``progress(done, total)`` is called as events are delivered. Returns True when drained.
        The deliverers must be running (here or in another process)."""
        total = max(1, sum(d.outbox.pending(d.client.name) for d in self.deliverers))
        with gevent.Timeout(timeout, False):
            while True:
                left = sum(d.outbox.pending(d.client.name) for d in self.deliverers)
                if progress:
                    progress(total - left, total)
                if left == 0:
                    return True
                gevent.sleep(0.2)
        return False
