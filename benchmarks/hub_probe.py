"""Measure how long the gevent hub was blocked: a greenlet that wakes every ``interval`` seconds
and records how late it woke. A late wake-up means something held the hub (a blocking call)."""

from __future__ import annotations

import time

import gevent


class HubBlockProbe:
    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.max_block = 0.0
        self.wakeups = 0
        self._greenlet: gevent.Greenlet | None = None

    def _run(self) -> None:
        while True:
            before = time.perf_counter()
            gevent.sleep(self.interval)
            late = time.perf_counter() - before - self.interval
            self.wakeups += 1
            self.max_block = max(self.max_block, late)

    def __enter__(self) -> HubBlockProbe:
        self._greenlet = gevent.spawn(self._run)
        gevent.sleep(0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
