"""Hardware faults: barcode readers and sample changers misbehaving, on the real simulators.

Readers: the injectors drive a :class:`~bliss_sampletrack.readers.simulators.server.ReaderSimulator`
(TCP) or :class:`~bliss_sampletrack.readers.simulators.server.SerialSimulator` (pty), to which the
driver under test is connected exactly as to the device:

- :func:`disconnect`: the connection drops (TCP closed; serial: USB adapter re-plugged);
- :func:`power_off` / :func:`power_on`: the device vanishes and comes back (same port or link);
- :func:`cut_mid_frame`: the next trigger is answered with the start of a frame, then the device
  dies on the spot (silent, no FIN) and, optionally, vanishes ``vanish_after`` s later;
- :func:`flood`: thousands of lines a second; :func:`send_garbage`: line noise of a given kind.

Changers: :func:`fail_next_action` (the simulated changer's own failures: dropped pin, timeout,
robot error between pick and put), :func:`interrupt_next_action` (Ctrl-C or a kill while the
robot moves, in whichever greenlet runs the action), :func:`flap_presence` (a presence signal
toggling faster than any hand).

Helpers for checks: :func:`live_greenlets`, :func:`wait_until`.
"""

from __future__ import annotations

import gc
import logging
import random
from collections.abc import Callable, Sequence

import gevent
import greenlet

from bliss_sampletrack.changers.protocol import ChangerEvent, ChangerEventKind, SampleChanger
from bliss_sampletrack.readers.simulators.devices import PowerCut
from bliss_sampletrack.readers.simulators.server import ReaderSimulator, SerialSimulator

log = logging.getLogger(__name__)

Simulator = ReaderSimulator | SerialSimulator

#: the kinds of garbage :func:`garbage_bytes` makes
GARBAGE_KINDS = ("random", "overlong", "invalid_utf8", "nul", "control")


# -- readers ----------------------------------------------------------------------------------------
def disconnect(simulator: Simulator) -> None:
    """Drop the driver's connection; the device stays up (serial: a new pty at the same link)."""
    log.info("fault: %s simulator disconnects", simulator.model.family)
    simulator.disconnect()


def power_off(simulator: Simulator) -> None:
    """The device vanishes: connections closed, nothing listens (serial: the tty is gone)."""
    log.info("fault: %s simulator powered off", simulator.model.family)
    simulator.power_off()


def power_on(simulator: Simulator) -> None:
    """The device comes back, at the same port (serial: at the same ``link``)."""
    log.info("fault over: %s simulator powered on", simulator.model.family)
    simulator.power_on()


def cut_mid_frame(
    simulator: Simulator, partial: bytes = b"LYS-00", vanish_after: float | None = None
) -> None:
    """Answer the next trigger with ``partial`` (no terminator) and die on the spot: silent, its
    connections left open. ``vanish_after`` s later (if given) it vanishes (:func:`power_off`)."""
    simulator.queue(PowerCut(partial, vanish_after))


def flood(
    simulator: Simulator,
    count: int,
    *,
    codes: Sequence[str | bytes] = ("FLOOD-0001",),
    per_second: float | None = 5000.0,
    batch: int = 100,
) -> gevent.Greenlet:
    """Send ``count`` lines cycling through ``codes`` (text: framed as results; bytes: as given)
    at about ``per_second`` (None: as fast as the connection takes them). The greenlet's value is
    the number of lines sent."""
    log.info("fault: %s simulator floods %d lines", simulator.model.family, count)
    return simulator.flood(codes, count, per_second, batch)


def garbage_bytes(kind: str, terminator: bytes, *, size: int = 300, seed: int = 0) -> bytes:
    """Bytes of one kind of garbage (``GARBAGE_KINDS``), none of which is a code.

    - ``random``: bytes 0x80-0xFF (a serial line at the wrong baud rate), cut into lines at random;
      every line holds non-ASCII bytes, so none can pass for a code;
    - ``overlong``: ``size`` bytes with no terminator at all (``size`` above the reader's ``max_line``);
    - ``invalid_utf8``: a line of invalid UTF-8 sequences;
    - ``nul``: lines with NUL bytes (a code with NULs inside, and NULs alone);
    - ``control``: a line of terminal escapes and control characters around text.
    """
    rng = random.Random(seed)
    if kind == "random":
        lines = [
            bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 40))) for _ in range(size // 20)
        ]
        return b"".join(line + terminator for line in lines)
    if kind == "overlong":
        return b"Z" * size
    if kind == "invalid_utf8":
        return b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc" + terminator
    if kind == "nul":
        return b"LYS-\x00\x00-0042" + terminator + b"\x00" * 8 + terminator
    if kind == "control":
        return b"\x1b[2J\x07LYS-0042\x08\x08" + terminator
    raise ValueError(f"unknown garbage kind {kind!r}; choose one of {', '.join(GARBAGE_KINDS)}")


def send_garbage(simulator: Simulator, kind: str, *, size: int = 300, seed: int = 0) -> bytes:
    """Send one kind of garbage (see :func:`garbage_bytes`) unsolicited; returns what was sent."""
    data = garbage_bytes(kind, simulator.model.terminator, size=size, seed=seed)
    log.info("fault: %s simulator sends %s garbage (%d bytes)", simulator.model.family, kind, len(data))
    simulator.garbage(data)
    return data


# -- changers ---------------------------------------------------------------------------------------
def fail_next_action(changer: object, failure: str, action: str | None = None) -> None:
    """The simulated changer's next ``action`` ("load"/"unload") fails with ``failure``:
    ``dropped_pin``, ``timeout``, ``robot_error`` (between pick and put), ``no_pin_detected``,
    ``pin_stays`` (see :mod:`bliss_sampletrack.changers.simulated`)."""
    fail_next = getattr(changer, "fail_next", None)
    if fail_next is None:
        raise TypeError(f"{changer!r} has no fail_next(): use a SimulatedChanger")
    fail_next(failure, action)


def interrupt_next_action(
    changer: SampleChanger,
    *,
    on: ChangerEventKind = ChangerEventKind.LOAD_STARTED,
    exception: type[BaseException] | BaseException = KeyboardInterrupt,
) -> Callable[[], None]:
    """At the changer's next ``on`` event (the robot starts moving), throw ``exception`` into the
    greenlet running the action, as BLISS does on Ctrl-C: it lands at the robot's next wait.
    Returns a function that disarms it if the action never started."""

    def strike(event: ChangerEvent) -> None:
        if event.kind is on:
            changer.unsubscribe(strike)
            log.info("fault: %s of changer %r interrupted with %r", on, event.changer, exception)
            gevent.kill(gevent.getcurrent(), exception)

    changer.subscribe(strike)
    return lambda: changer.unsubscribe(strike)


def flap_presence(
    set_presence: Callable[[bool], None],
    *,
    count: int,
    period: float,
    final: bool,
    jitter: float = 0.0,
    seed: int = 0,
) -> gevent.Greenlet:
    """Toggle a presence signal ``count`` times, ``period`` s apart (+/- ``jitter`` s, seeded),
    starting from ``not final``, then leave it at ``final``. ``set_presence``: e.g. a
    SimulatedChanger's ``set_presence``, or ``lambda v: setattr(robot, "sample_detected", v)``."""
    rng = random.Random(seed)

    def run() -> int:
        value = not final
        for _ in range(count):
            set_presence(value)
            value = not value
            gevent.sleep(max(0.0, period + rng.uniform(-jitter, jitter)))
        set_presence(final)
        return count + 1

    return gevent.spawn(run)


# -- checks -----------------------------------------------------------------------------------------
def live_greenlets() -> int:
    """Greenlets alive now (started and not dead), the hub and the main one included."""
    gc.collect()
    return sum(1 for g in gc.get_objects() if isinstance(g, greenlet.greenlet) and g and not g.dead)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.02) -> None:
    """Wait cooperatively until ``predicate()`` is true; TimeoutError naming ``what`` otherwise."""
    with gevent.Timeout(timeout, TimeoutError(f"{what}: not true after {timeout:g} s")):
        while not predicate():
            gevent.sleep(step)
