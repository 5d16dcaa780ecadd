"""Processes to kill: start a command, wait until it says it is ready, ``kill -9`` it, start it again.

Generic (a BLISS session process, ``sampletrack deliver``, anything that prints a ready line):
:class:`ManagedProcess` runs one command with its output appended to a log file, and
:func:`kill9_at_random` / :func:`kill9_when` choose the moment. Every wait is cooperative
(gevent) and bounded. :func:`start_deliverer` starts the standalone deliverer
(``sampletrack deliver``) of a tracker configured in beacon.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gevent

log = logging.getLogger(__name__)

POLL_S = 0.05
DELIVERER_READY = r"^delivering outbox "


class ProcessError(RuntimeError):
    """A managed process did not start (or died before it was ready); the message has its log tail."""


class ManagedProcess:
    """One command, started (and restarted) on demand; its output appended to ``log_path``.

    ``ready``: a regular expression (multiline) that the command prints once it works; ``start``
    waits for a match in what this start wrote to the log."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        *,
        ready: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv, self.log_path, self.env, self.cwd = list(argv), Path(log_path), env, cwd
        self.ready = re.compile(ready, re.MULTILINE) if ready else None
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 120.0) -> ManagedProcess:
        """Start the command (it must not be running) and wait until it is ready."""
        if self.alive:
            raise ProcessError(f"{self.argv[:3]} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"\n=== start {self.starts + 1}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self._log_offset = out.tell()
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
            )
        self.starts += 1
        log.info("started %s (pid %d)", self.argv[:3], self.process.pid)
        if self.ready is not None:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready is None or self.ready.search(self.output()):
                return
            if not self.alive:
                raise ProcessError(f"{self.argv[:3]} exited before it was ready:\n{self.log_tail()}")
            gevent.sleep(POLL_S)
        raise ProcessError(f"{self.argv[:3]} not ready within {timeout:g} s:\n{self.log_tail()}")

    def kill9(self, timeout: float = 30.0) -> int | None:
        """SIGKILL (no clean-up of any kind), then reap it. Returns its exit code (-9), or None if
        it was not running."""
        if not self.alive:
            return None
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.kills += 1
        log.info("kill -9 %s (pid %d)", self.argv[:3], self.process.pid)
        return self._reap(timeout)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, and SIGKILL if it has not exited within ``timeout``. Returns its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self._reap(timeout)
            except ProcessError:
                self.process.send_signal(signal.SIGKILL)
        return self._reap(timeout)

    def restart(self, timeout: float = 120.0) -> ManagedProcess:
        """kill -9 if running, then start again."""
        self.kill9()
        return self.start(timeout)

    def _reap(self, timeout: float) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                return code
            gevent.sleep(POLL_S)
        raise ProcessError(f"{self.argv[:3]} (pid {self.process.pid}) still running after {timeout:g} s")

    def output(self) -> str:
        """What the current (or last) start wrote."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                return log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]


def kill9_at_random(process: ManagedProcess, rng: random.Random, low: float, high: float) -> float:
    """Wait a random delay in [low, high] seconds (from ``rng``: seed it to replay a run), then
    kill -9. Returns the delay."""
    delay = rng.uniform(low, high)
    gevent.sleep(delay)
    process.kill9()
    return delay


def kill9_when(process: ManagedProcess, condition: Callable[[], bool], timeout: float) -> bool:
    """kill -9 as soon as ``condition()`` is true (polled every few ms; e.g. "a batch is in
    flight"), or after ``timeout`` seconds anyway. Returns whether the condition was met."""
    deadline = time.monotonic() + timeout
    met = False
    while time.monotonic() < deadline:
        if condition():
            met = True
            break
        gevent.sleep(0.005)
    process.kill9()
    return met


# -- the standalone deliverer ----------------------------------------------------------------------------
def sampletrack_command() -> list[str]:
    """The ``sampletrack`` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "sampletrack"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from bliss_sampletrack.cli import main; sys.exit(main())"]


def deliverer_argv(beacon_host: str, tracker: str, *, lock_ttl: int | float | None = None) -> list[str]:
    argv = [*sampletrack_command(), "deliver", "--beacon", beacon_host, "--tracker", tracker]
    if lock_ttl is not None:
        argv += ["--lock-ttl", f"{lock_ttl:g}"]
    return argv


def start_deliverer(
    beacon_host: str,
    tracker: str,
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    lock_ttl: int | float | None = None,
    timeout: float = 120.0,
) -> ManagedProcess:
    """``sampletrack deliver`` for ``tracker`` (its delivery clients and their tokens come from its
    beacon configuration and ``env``), started and ready (its delivery greenlets running)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = ManagedProcess(
        deliverer_argv(beacon_host, tracker, lock_ttl=lock_ttl), log_path, ready=DELIVERER_READY, env=full_env
    )
    return process.start(timeout)
