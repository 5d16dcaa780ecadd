"""Validation of many events at once, spread over worker processes.

Contract validation (the core's ``contract_errors``, i.e. ``jsonschema``) costs about 150 us per
event of pure Python: one batch of 1000 events is ~150 ms of CPU that the GIL serialises whatever
the number of server threads. For batches of at least :data:`PARALLEL_MIN` events the work is
split over a small process pool, which is what lets batch ingest pass 5,000 events/s on a
two-core machine. Smaller batches and single events are validated in the calling thread (the
round trip to a worker would cost more than it saves).

Caveats:
- Workers are started with ``spawn`` (never ``fork``: the server has threads and open database
  connections) on first use or by :meth:`Validator.warm_up`; each imports only the core and this
  module.
- A worker that dies (``BrokenProcessPool``) makes that call fall back to in-process validation;
  the pool is rebuilt on the next large batch.
- Results are exactly those of :func:`bliss_sampletrack.service.events.prepare_event`, in order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bliss_sampletrack.errors import InvalidEventError
from bliss_sampletrack.service.events import prepare_event
from bliss_sampletrack.service.storage import NewEvent

log = logging.getLogger(__name__)

#: batches smaller than this are validated in the request's thread
PARALLEL_MIN = 100

Prepared = NewEvent | InvalidEventError


def default_workers() -> int:
    """Worker processes by default: one per CPU, at most 4; none on a single CPU."""
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(cpus, 4)


def prepare_one(item: Any) -> Prepared:
    try:
        return prepare_event(item)
    except InvalidEventError as exc:
        return exc


def _prepare_chunk(items: list[Any]) -> list[tuple[str, Any]]:
    """In a worker: plain tuples back (cheap to pickle, no class identity issues)."""
    out: list[tuple[str, Any]] = []
    for item in items:
        result = prepare_one(item)
        if isinstance(result, NewEvent):
            out.append(
                (
                    "ok",
                    (
                        result.event_id,
                        result.beamline,
                        result.barcode,
                        result.occurred_us,
                        result.type,
                        result.body,
                    ),
                )
            )
        else:
            out.append(("invalid", result.fields))
    return out


def _warm() -> int:
    prepare_one({})  # imports and compiles the schema validator
    return os.getpid()


class Validator:
    """``prepare_many(items)`` -> one :class:`NewEvent` or :class:`InvalidEventError` per item."""

    def __init__(self, workers: int) -> None:
        self.workers = max(0, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get_pool(self) -> ProcessPoolExecutor | None:
        if self.workers == 0:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            return self._pool

    def warm_up(self) -> None:
        """Start the workers now (in the background) rather than on the first large batch."""
        pool = self._get_pool()
        if pool is not None:
            for _ in range(self.workers):
                pool.submit(_warm)

    def prepare_many(self, items: list[Any]) -> list[Prepared]:
        pool = self._get_pool() if len(items) >= PARALLEL_MIN else None
        if pool is None:
            return [prepare_one(item) for item in items]
        size = -(-len(items) // self.workers)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        try:
            answers = [answer for chunk in pool.map(_prepare_chunk, chunks) for answer in chunk]
        except BrokenProcessPool:
            log.warning("a validation worker died; validating this batch in-process")
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return [prepare_one(item) for item in items]
        return [NewEvent(*value) if kind == "ok" else InvalidEventError(value) for kind, value in answers]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
