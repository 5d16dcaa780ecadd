"""The delivery clients' one face: the :class:`DeliveryClient` protocol, the per-event
:class:`Result` and :class:`Verdict`, :class:`RetryLater`, the verdict rules, and the small
config checks every backend shares.

A client sends a batch of events (oldest first) and says, per event, whether it was delivered,
rejected for good (a dead letter, with the service's answer), or must be retried; a failure of
the whole call that is worth retrying raises :class:`RetryLater`.

Per the contract's delivery rules: connection errors, timeouts, 408, 429 and 5xx are retried
(forever, by the loop); any other 4xx is a rejection.

May import: ``core``, ``errors``, ``delivery.http_answers``. The backends (rest.py, icatplus.py,
ispyb.py) import this; the type table (clients.py) imports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from bliss_sampletrack.core import Event
from bliss_sampletrack.delivery.http_answers import retryable
from bliss_sampletrack.errors import ConfigurationError, RetryLater


class Verdict(StrEnum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # for good: dead letter
    RETRY = "retry"  # this one and the following wait


@dataclass(frozen=True, slots=True)
class Result:
    verdict: Verdict
    detail: str = ""


@runtime_checkable
class DeliveryClient(Protocol):
    name: str
    max_batch: int  # 1: one event per call

    def send(self, events: list[Event]) -> list[Result]:
        """One result per event, in order; raise RetryLater when the call as a whole failed."""
        ...

    def describe(self) -> str: ...


class Health(StrEnum):
    """What a health probe found."""

    UP = "up"  # the service answered its health check: full delivery may resume
    DOWN = "down"  # a server answered, but not healthy (a gateway's 502, a 503)
    UNREACHABLE = "unreachable"  # no server answered: refused, reset, timed out


@runtime_checkable
class Probing(Protocol):
    """A client that can ask, cheaply, whether its service is back (``GET /healthz``).

    The delivery loop probes while it waits out a backoff, so that it resumes as soon as the
    service answers again instead of sleeping the rest of a long delay."""

    def probe(self, timeout: float) -> Health: ...


def classify_status(status: int) -> Verdict:
    """The REST contract's verdict: only 200/201 deliver."""
    if status in (200, 201):
        return Verdict.DELIVERED
    return Verdict.RETRY if retryable(status) else Verdict.REJECTED


def classify_2xx(status: int) -> Verdict:
    """The verdict for the ICAT+ and ISPyB APIs: any 2xx delivers."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    return Verdict.RETRY if retryable(status) else Verdict.REJECTED


def send_each(events: list[Event], send_one: Callable[[Event], Result]) -> list[Result]:
    """``send_one`` for each event in order (clients with ``max_batch = 1`` per request chain).

    A :class:`RetryLater` on the first event is raised; on a later one, the earlier ones are done
    and only this one and the following wait (RETRY).
    """
    results: list[Result] = []
    for index, event in enumerate(events):
        try:
            results.append(send_one(event))
        except RetryLater as exc:
            if index == 0:
                raise
            results.extend(Result(Verdict.RETRY, str(exc)) for _ in events[index:])
            break
    return results


def short(value: Any) -> str:
    """``repr(value)`` cut for a message (a whole YAML subtree would drown it)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def seconds(node: Mapping[str, Any], key: str, default: float, where: str, name: str) -> float:
    """A finite number > 0 of seconds (an int is fine, a bool is not)."""
    value = node.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(
            f"{where}: delivery {name!r}: key {key!r} must be a finite number of seconds > 0 "
            f"(default {default:g}), got {short(value)}"
        )
    return float(value)


def batch_size(node: Mapping[str, Any], key: str, default: int, where: str, name: str) -> int:
    """A whole number 1..1000 (the contract's batch limit); not a bool, not a float."""
    value = node.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ConfigurationError(
            f"{where}: delivery {name!r}: key {key!r} must be a whole number of events 1..1000 "
            f"(default {default}), got {short(value)}"
        )
    return value
