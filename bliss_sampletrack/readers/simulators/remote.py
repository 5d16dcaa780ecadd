"""A reader simulator in its own process, steered over a pipe.

Why: a measurement of how long a driver holds the gevent hub must not count the simulator's own
work (its sleeps, resets, power cycles and socket writes run on the same hub when it lives in the
driver's process). :class:`SimulatorProcess` starts ``python -m
bliss_sampletrack.readers.simulators.remote`` with a :class:`ReaderSimulator` or
:class:`SerialSimulator` inside, and forwards the steering calls the benchmarks use as JSON lines
on the child's stdin; each call waits for the child's answer (so a ``queue`` is in place before
the driver's trigger), with a timeout. The driver connects to the child's socket or pty as to
the in-process simulator. The child exits when its stdin closes (the parent died or stopped it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import gevent
import gevent.subprocess

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0  # a steering call: the child answers within ms, a power cycle within its off time


class SimulatorProcessError(RuntimeError):
    """The simulator process did not start, did not answer, or refused a call (its message and log)."""


def _wire(value: object) -> object:
    """JSON has no bytes: they travel as ``{"latin1": text}`` (every byte value kept)."""
    if isinstance(value, bytes):
        return {"latin1": value.decode("latin-1")}
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    return value


def _unwire(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"latin1"}:
        return value["latin1"].encode("latin-1")
    if isinstance(value, dict):
        return {key: _unwire(item) for key, item in value.items()}
    return value


def _encode(answer: object) -> Any:
    from bliss_sampletrack.readers.simulators.devices import LOST, NO_READ, SILENCE, Late

    if isinstance(answer, str):
        return {"code": answer}
    if isinstance(answer, Late):
        return {"late": _encode(answer.answer)}
    for name, marker in (("NO_READ", NO_READ), ("LOST", LOST), ("SILENCE", SILENCE)):
        if answer is marker:
            return {"marker": name}
    raise ValueError(f"no remote form for the answer {answer!r}: use a code, NO_READ, LOST, SILENCE or Late")


def _decode(spec: dict[str, Any]) -> object:
    from bliss_sampletrack.readers.simulators import devices

    if "code" in spec:
        return spec["code"]
    if "late" in spec:
        return devices.Late(_decode(spec["late"]))
    return getattr(devices, spec["marker"])


class SimulatorProcess:
    """``SimulatorProcess("keyence", serial=False, framing="stx_etx").start()``: the simulator of
    that family (over a pty when ``serial``) in a child process. ``url`` (TCP) or ``port`` (pty)
    is what the driver opens."""

    def __init__(self, family: str, serial: bool = False, **options: object) -> None:
        self.spec = {"family": family, "serial": serial, "options": _wire(options)}
        self._process: gevent.subprocess.Popen | None = None
        self.url = ""
        self.port = ""

    def start(self, timeout: float = 20.0) -> SimulatorProcess:
        self._process = gevent.subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(self.spec)],
            stdin=gevent.subprocess.PIPE,
            stdout=gevent.subprocess.PIPE,
        )
        started = self._answer(timeout, "start")
        self.url, self.port = started.get("url", ""), started.get("port", "")
        return self

    def _answer(self, timeout: float, what: str) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        with gevent.Timeout(
            timeout, SimulatorProcessError(f"simulator process: no answer to {what} in {timeout} s")
        ):
            line = self._process.stdout.readline()
        if not line:
            raise SimulatorProcessError(
                f"simulator process exited (code {self._process.poll()}) during {what}"
            )
        answer = json.loads(line)
        if "error" in answer:
            raise SimulatorProcessError(f"simulator process refused {what}: {answer['error']}")
        return answer

    def call(self, op: str, timeout: float = CALL_TIMEOUT_S, **arguments: Any) -> dict[str, Any]:
        if self._process is None or self._process.stdin is None:
            raise SimulatorProcessError(f"simulator process not started: cannot {op}")
        self._process.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")
        self._process.stdin.flush()
        return self._answer(timeout, op)

    # -- the steering the benchmarks use (see server.py for what each does) ----------------------
    def queue(self, *answers: object) -> None:
        self.call("queue", answers=[_encode(a) for a in answers])

    def behave(self, **fields: object) -> None:
        """Set ``Behaviour`` fields (``junk`` as bytes)."""
        self.call("behave", fields=_wire(fields))

    def clear_answers(self) -> None:
        self.call("clear")

    def disconnect(self) -> None:
        self.call("disconnect")

    def power_cycle(self, off_for: float) -> None:
        """Returns once the device is back on."""
        self.call("power_cycle", off_for=off_for, timeout=off_for + CALL_TIMEOUT_S)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()  # the child's loop ends at EOF
        try:
            process.wait(timeout=5)
        except gevent.subprocess.TimeoutExpired:
            log.warning("simulator process %s did not exit on EOF: killed", process.pid)
            process.kill()
            process.wait(timeout=5)


def _serve(spec: dict[str, Any]) -> None:  # the child
    from gevent.fileobject import FileObjectPosix

    from bliss_sampletrack.readers.simulators.server import ReaderSimulator, SerialSimulator

    family, options = spec["family"], _unwire(spec["options"])
    simulator = (SerialSimulator if spec["serial"] else ReaderSimulator)(family, **options).start()
    out = FileObjectPosix(sys.stdout.fileno(), "wb", close=False)

    def say(answer: dict[str, Any]) -> None:
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()

    if isinstance(simulator, SerialSimulator):
        say({"port": simulator.port})
    else:
        say({"url": simulator.url})
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    for line in stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            if op == "queue":
                simulator.queue(*(_decode(a) for a in request["answers"]))
            elif op == "behave":
                for name, value in _unwire(request["fields"]).items():
                    setattr(simulator.behaviour, name, value)
            elif op == "clear":
                simulator.behaviour.answers.clear()
            elif op == "pid":
                say({"pid": os.getpid()})
                continue
            elif op == "disconnect":
                simulator.disconnect()
            elif op == "power_cycle":
                simulator.power_cycle(request["off_for"]).join(request["off_for"] + 5)
            else:
                raise ValueError(f"unknown operation {op!r}")
        except (ValueError, KeyError, AttributeError, OSError) as exc:
            say({"error": f"{type(exc).__name__}: {exc}"})
            continue
        say({"ok": op})
    simulator.stop()


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all(thread=False)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _serve(json.loads(sys.argv[1]))
