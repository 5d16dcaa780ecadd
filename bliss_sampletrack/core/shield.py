"""Records that an interruption cannot split from the hardware step they follow.

A macro's greenlet can be interrupted at any point where it yields to the gevent hub: Ctrl-C in
the BLISS shell (``KeyboardInterrupt`` thrown into the greenlet), ``greenlet.kill()``, an outer
``gevent.Timeout``. Recording a change yields (Redis I/O, a reader's read, a registry lookup), so
an interruption right after the changer reported a load would leave the hardware moved and
nothing recorded: the tracker would go on claiming the previous sample.

:func:`complete` runs the recording in a greenlet of its own and waits for it even when the
caller is interrupted meanwhile; the interruption is raised once the record is done (or after
``timeout``). The caller still stops as the user asked, a moment later, and the record is whole.

Caveat: the wait is bounded (``timeout``): a recording stuck longer than that (Redis unreachable
for longer than its own timeouts) is left running in its greenlet, and the caller gets the
interruption (or :class:`RecordTimeout`) with an ERROR log naming what was being recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import gevent

log = logging.getLogger(__name__)

T = TypeVar("T")

#: default bound on the wait for a record (Redis transactions take ms; a registry lookup is bounded)
RECORD_TIMEOUT_S = 30.0


class RecordTimeout(RuntimeError):
    """A record did not complete within its bound (it goes on in its own greenlet)."""


def complete(what: str, fn: Callable[[], T], *, timeout: float = RECORD_TIMEOUT_S) -> T:
    """``fn()``, run to completion even if the calling greenlet is interrupted while it runs.

    Returns what ``fn`` returns and raises what it raises; an interruption of the caller
    (KeyboardInterrupt, GreenletExit, gevent.Timeout...) is raised after ``fn`` finished.
    """
    worker = gevent.spawn(fn)
    worker.name = f"sampletrack-record: {what}"[:120]
    interruption: BaseException | None = None
    deadline = time.monotonic() + timeout
    while not worker.ready():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            worker.join(timeout=left)
        # every interruption of the caller, on purpose: it is kept and raised once the record is
        # done (not hidden), so that the record cannot be split from the step it follows
        except BaseException as exc:  # noqa: BLE001
            if interruption is None:
                interruption = exc
                log.warning("%s: %s while recording; finishing the record first", what, type(exc).__name__)
    if not worker.ready():
        log.error(
            "%s: not recorded within %g s; the record goes on in greenlet %r", what, timeout, worker.name
        )
        if interruption is not None:
            raise interruption
        raise RecordTimeout(f"{what}: not recorded within {timeout:g} s (it goes on in the background)")
    if interruption is not None:
        if not worker.successful():
            log.error("%s: the record failed: %r", what, worker.exception)
        raise interruption
    return worker.get()
