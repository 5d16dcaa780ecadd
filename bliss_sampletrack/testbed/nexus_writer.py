"""The production writer for the test bed: blisswriter's NexusWriter Tango device, on loopback.

Beamlines do not save with BLISS's in-process ``hdf5`` writer but with the ``nexus`` writer: an
external Tango device server of blisswriter (``NexusWriterService``) that follows the session's
scans through Redis and writes the HDF5 files itself. :class:`NexusWriterBed` starts one for a
session of a running test bed beacon, from PyPI packages alone (pytango, blisswriter):

1. a Tango database: pytango's Python ``DataBaseds`` on SQLite (``<workdir>/tango.db``),
   instance ``2`` (device ``sys/database/2``), on ``127.0.0.1`` and a port the kernel chooses
   (``--port 0 --print-host-port``: no free-port race); ready when ``sys/database/2`` answers;
2. ``RegisterNexusWriter SESSION --domain id00 --beacon-host HOST:PORT``: device
   ``id00/bliss_nxwriter/SESSION`` of class ``NexusWriter``, server ``nexuswriter/SESSION``,
   properties ``session`` and ``beacon_host``;
3. ``NexusWriterService SESSION --log INFO`` with ``TANGO_HOST``, ``BEACON_HOST`` and
   ``ORBendPoint=giop:tcp:127.0.0.1:`` (loopback, any port) in its environment; ready when the
   device's state is ON (its Redis subscription is open: any scan started later is written).

Each runs in its own process session (process group) with its log in the work folder
(``tango-db.log``, ``register.log``, ``nexus-writer.log``); :meth:`NexusWriterBed.stop` sends
SIGTERM to each group, then SIGKILL after :data:`STOP_TIMEOUT_S`. Environment variables whose
name says TOKEN, SECRET or PASSWORD are not passed to these processes.

Facts the set-up depends on (blisswriter 1.0.1 with BLISS 2.0.3, pytango 10.3.1):

- BLISS finds the writer with ``find_session_writer(session, beacon_host=os.environ["BEACON_HOST"])``:
  the ``beacon_host`` given here must be the BLISS process's ``BEACON_HOST`` string exactly
  (the test bed's is ``localhost:PORT``, :attr:`BeaconServer.host`); the device also refuses to
  start when its own ``BEACON_HOST`` differs from the property.
- The BLISS process needs ``TANGO_HOST`` (:attr:`NexusWriterBed.client_env`) in ``os.environ``
  before its first scan with ``SCAN_SAVING.writer = "nexus"``.
- The writer follows only the scans started after its device is ON.
- A scan's file is complete when ``/<n>.1/writer/status`` is ``SUCCEEDED`` (``FAILED`` when
  the writer failed) *and* the writer closed the file: it writes the status, then closes.
  While it holds the file open it holds an exclusive ``flock`` (HDF5 file locking): an h5py
  reader with locking fails (errno 11), and, worse, a reader holding the file while the writer
  opens it makes that scan FAIL ("The Nexus file is locked"). :func:`wait_scan_written` hence
  reads with ``locking=False`` (no lock taken: never in the writer's way) and, once it reads
  SUCCEEDED, waits until a non-blocking ``flock`` probe finds the file released.
- SUCCEEDED is the writer's verdict, not BLISS's: a scan that failed in BLISS after it was
  published (e.g. the writer check in its prepare) still gets an entry marked SUCCEEDED, with
  no points. The writer names scans by ``scan.identifier`` (``"<n>_<name>"``, not unique across
  files); by default it forgets a finished scan 5 minutes after its end.
- The service stops on SIGTERM in about a second (it polls Redis every second), except while it
  writes a scan: then it refuses to stop and only SIGKILL ends it.

On the BLISS 2.4 stack no released blisswriter provides an external writer: blisswriter 2.0.0's
``NexusWriterService`` fails on import (``No module named 'blissdata.streams.lima2'``), and
blisswriter 3.0.0 (a new standalone service, console script ``blisswriter`` only) writes from
the HDF5 maps that BLISS publishes with ``scan_info_to_h5map`` from ``blisswriter.mapping``,
a module that no released blisswriter has (BLISS 2.4.0 imports it; 2.0.0 lacks it, 3.0.0
dropped it). :func:`external_writer_unavailable_reason` detects this by trying the service's
import in a child process of the same interpreter, not by version numbers.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bliss_sampletrack.errors import TestBedError
from bliss_sampletrack.testbed.beacon import log_tail

log = logging.getLogger(__name__)

#: seconds each piece gets to start (Tango database answering, writer device ON)
START_TIMEOUT_S = 30.0
#: seconds ``RegisterNexusWriter`` gets to register the device
REGISTER_TIMEOUT_S = 60.0
#: seconds a process gets after SIGTERM before SIGKILL
STOP_TIMEOUT_S = 10.0
#: seconds :func:`wait_scan_written` waits by default
SCAN_TIMEOUT_S = 60.0
#: seconds a Tango call may take (per call)
TANGO_CALL_TIMEOUT_S = 3.0
#: seconds the import check of :func:`external_writer_unavailable_reason` may take
IMPORT_CHECK_TIMEOUT_S = 120.0

DOMAIN = "id00"
FAMILY = "bliss_nxwriter"  # RegisterNexusWriter's default device family
DB_INSTANCE = "2"  # the usual Tango database instance: device sys/database/2
SERVICE_MODULE = "blisswriter.app.service"  # what the NexusWriterService console script imports
LOOPBACK = "127.0.0.1"

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD", re.IGNORECASE)
_DB_PORT_LINE = re.compile(r"Database DS listening on: host=\S+, port=(\d+)")


def _sleep(seconds: float) -> None:
    import gevent  # a dependency of the package: cooperative, never blocks a hub

    gevent.sleep(seconds)


def _child_env(**extra: str) -> dict[str, str]:
    """This process's environment less secrets, less inherited Tango/ORB addresses, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not _SECRET_NAME.search(name) and name not in ("TANGO_HOST", "ORBendPoint")
    }
    env.update(extra)
    return env


def _log_tail(path: Path, lines: int = 30) -> str:
    return log_tail(path, lines, empty="(empty log)")


@functools.cache
def external_writer_unavailable_reason(python: str | None = None) -> str | None:
    """Why blisswriter's external writer cannot run with ``python`` (default: this interpreter),
    or None when it can. Tries ``import blisswriter.app.service`` (what the ``NexusWriterService``
    console script imports) in a child process; cached per interpreter."""
    exe = python or sys.executable
    try:
        proc = subprocess.run(
            [exe, "-W", "ignore", "-c", f"import {SERVICE_MODULE}"],
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=IMPORT_CHECK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`import {SERVICE_MODULE}` did not finish in {IMPORT_CHECK_TIMEOUT_S:.0f} s with {exe}"
    except OSError as exc:
        return f"cannot run {exe} to check `import {SERVICE_MODULE}`: {exc}"
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    error = lines[-1] if lines else f"exit code {proc.returncode}"
    return (
        f"blisswriter's external writer (NexusWriterService) cannot run on this stack: "
        f"`import {SERVICE_MODULE}` fails with {error}"
    )


def _green() -> bool:
    """True when gevent has monkey-patched this process (BLISS imported): Tango calls must not
    block the hub."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


def _device_proxy(uri: str) -> Any:
    """A Tango DeviceProxy (gevent green mode in a gevent process, as BLISS's own), with a short
    call timeout."""
    if _green():
        from tango.gevent import DeviceProxy
    else:
        from tango import DeviceProxy
    proxy = DeviceProxy(uri)
    proxy.set_timeout_millis(int(TANGO_CALL_TIMEOUT_S * 1000))
    return proxy


@dataclass
class _Child:
    """One process the bed started, in its own process group, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        return _log_tail(self.log_path, lines)

    def failure(self, what: str) -> TestBedError:
        return TestBedError(f"{self.name} {what}; the tail of its log ({self.log_path}):\n{self.tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM its process group, SIGKILL the group after ``timeout``; reaps the process."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s: killing it", self.name, self.pid, timeout
                )
            except ProcessLookupError:
                pass
        # whatever it left in its group goes too
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) still there after SIGKILL", self.name, self.pid)


def _spawn(name: str, args: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> _Child:
    with log_path.open("wb") as log_file:
        try:
            process = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() kills exactly this tree
            )
        except OSError as exc:
            raise TestBedError(f"cannot start {name} ({args[0]}): {exc}") from exc
    log.debug("%s started, pid %d: %s", name, process.pid, " ".join(args))
    return _Child(name, process, log_path)


class NexusWriterBed:
    """A Tango database and a NexusWriter device server for BLISS session ``session`` of the
    beacon at ``beacon_host`` (the exact ``BEACON_HOST`` string of the BLISS process), with their
    files and logs in ``workdir`` (created).

    Use as a context manager, or :meth:`start` then :meth:`stop`. :attr:`timings` holds the
    seconds each piece took to start: ``tango_db``, ``registered``, ``writer_on``; and, once
    stopped, ``stopped``.
    """

    def __init__(
        self,
        beacon_host: str,
        session: str,
        workdir: Path,
        *,
        domain: str = DOMAIN,
        start_timeout: float = START_TIMEOUT_S,
        python: Path | None = None,
    ) -> None:
        self.beacon_host = beacon_host
        self.session = session
        self.workdir = Path(workdir)
        self.domain = domain
        self.start_timeout = start_timeout
        self.python = Path(python) if python else Path(sys.executable)
        self.tango_port: int | None = None
        self.timings: dict[str, float] = {}
        self._db: _Child | None = None
        self._writer: _Child | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def device_name(self) -> str:
        return f"{self.domain}/{FAMILY}/{self.session}"

    @property
    def tango_host(self) -> str:
        if self.tango_port is None:
            raise TestBedError("the Tango database of the NexusWriter bed is not started")
        return f"{LOOPBACK}:{self.tango_port}"

    @property
    def device_uri(self) -> str:
        return f"tango://{self.tango_host}/{self.device_name}"

    @property
    def client_env(self) -> dict[str, str]:
        """What a BLISS process (or any Tango client) needs in its environment to use the writer."""
        return {"TANGO_HOST": self.tango_host}

    @property
    def pids(self) -> dict[str, int]:
        """The processes started (whether still running or not), by name."""
        return {child.name: child.pid for child in (self._db, self._writer) if child is not None}

    @property
    def writer_log(self) -> Path:
        return self.workdir / "nexus-writer.log"

    def _script(self, name: str) -> Path:
        script = self.python.parent / name
        if not script.is_file():
            reason = external_writer_unavailable_reason(str(self.python))
            raise TestBedError(
                f"the console script {name} is not beside {self.python}"
                + (f"; {reason}" if reason else "; is blisswriter installed?")
            )
        return script

    # -- start and stop ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the Tango database, register the writer, start it and wait until it is ON.
        Raises :class:`TestBedError` naming the piece that did not start (and stops the others)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            t0 = time.monotonic()
            self._start_database()
            t1 = time.monotonic()
            self.timings["tango_db"] = t1 - t0
            self._register()
            t2 = time.monotonic()
            self.timings["registered"] = t2 - t1
            self._start_writer()
            self.timings["writer_on"] = time.monotonic() - t2
        except BaseException:
            self.stop()
            raise
        log.info(
            "NexusWriter %s ON (TANGO_HOST=%s; started in %s)",
            self.device_name,
            self.tango_host,
            ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.timings.items()),
        )
        return self

    def stop(self) -> None:
        """Stop the writer, then the Tango database (SIGTERM, then SIGKILL after a timeout).
        The seconds it took: ``timings["stopped"]``."""
        t0 = time.monotonic()
        for child in (self._writer, self._db):
            if child is not None:
                child.stop()
        self.timings["stopped"] = time.monotonic() - t0

    def _start_database(self) -> None:
        db_file = self.workdir / "tango.db"
        env = _child_env(PYTANGO_DATABASE_NAME=str(db_file))
        args = [
            str(self.python),
            "-m",
            "tango.databaseds.database",
            "--host",
            LOOPBACK,
            "--port",
            "0",  # the kernel's choice, printed once listening (no free-port race)
            "--print-host-port",
            DB_INSTANCE,
        ]
        self._db = db = _spawn("the Tango database", args, env, self.workdir, self.workdir / "tango-db.log")
        deadline = time.monotonic() + self.start_timeout
        while self.tango_port is None:
            if db.process.poll() is not None:
                raise db.failure(f"exited with code {db.process.returncode} while starting")
            match = _DB_PORT_LINE.search(_log_tail(db.log_path, 200))
            if match:
                self.tango_port = int(match.group(1))
            elif time.monotonic() > deadline:
                raise db.failure(f"printed no listening port in {self.start_timeout:.0f} s")
            else:
                _sleep(0.05)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if db.process.poll() is not None:
                raise db.failure(f"exited with code {db.process.returncode} while starting")
            try:
                _device_proxy(f"tango://{self.tango_host}/sys/database/{DB_INSTANCE}").ping()
                log.debug("Tango database pid %d answers on %s", db.pid, self.tango_host)
                return
            except Exception as exc:  # noqa: BLE001 - DevFailed and friends: not ready yet
                last_error = exc
            _sleep(0.1)
        raise db.failure(
            f"does not answer on {self.tango_host} after {self.start_timeout:.0f} s ({last_error})"
        )

    def _register(self) -> None:
        args = [
            str(self._script("RegisterNexusWriter")),
            self.session,
            "--domain",
            self.domain,
            "--beacon-host",
            self.beacon_host,
            "--log",
            "INFO",
        ]
        env = _child_env(TANGO_HOST=self.tango_host)
        child = _spawn("RegisterNexusWriter", args, env, self.workdir, self.workdir / "register.log")
        try:
            code = child.process.wait(timeout=REGISTER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.stop()
            raise child.failure(f"did not finish in {REGISTER_TIMEOUT_S:.0f} s") from None
        if code != 0:
            raise child.failure(f"failed with exit code {code}")

    def _start_writer(self) -> None:
        args = [str(self._script("NexusWriterService")), self.session, "--log", "INFO"]
        env = _child_env(
            TANGO_HOST=self.tango_host,
            BEACON_HOST=self.beacon_host,
            ORBendPoint=f"giop:tcp:{LOOPBACK}:",  # loopback only, any port
        )
        self._writer = writer = _spawn("NexusWriterService", args, env, self.workdir, self.writer_log)
        deadline = time.monotonic() + self.start_timeout
        proxy: Any = None
        last: str = "no answer yet"
        while time.monotonic() < deadline:
            if writer.process.poll() is not None:
                reason = external_writer_unavailable_reason(str(self.python))
                error = writer.failure(f"exited with code {writer.process.returncode} while starting")
                raise TestBedError(f"{reason}\n{error}" if reason else str(error))
            try:
                if proxy is None:
                    proxy = _device_proxy(self.device_uri)
                state = proxy.state()
                if state.name in ("ON", "RUNNING"):
                    return
                if state.name in ("FAULT", "OFF"):
                    raise writer.failure(f"device {self.device_name} is {state.name}: {proxy.status()}")
                last = f"state {state.name}"
            except TestBedError:
                raise
            except Exception as exc:  # noqa: BLE001 - DevFailed (not exported yet) and friends
                last = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            _sleep(0.1)
        raise writer.failure(
            f"device {self.device_name} not ON after {self.start_timeout:.0f} s (last: {last})"
        )

    # -- scans -------------------------------------------------------------------------------

    def scan_state(self, scan_name: str) -> tuple[str, str]:
        """The writer's (state, reason) for scan ``scan_name`` (BLISS's ``scan.identifier``,
        e.g. ``"1_loopscan"``): OFF once written and closed, FAULT when it failed, ON while writing,
        UNKNOWN when the writer has no such scan (not seen, or purged 5 minutes after its end)."""
        proxy = _device_proxy(self.device_uri)
        return proxy.scan_state(scan_name).name, proxy.scan_state_reason(scan_name)

    def wait_scan_written(
        self,
        filename: str | Path,
        scan_number: int,
        timeout: float = SCAN_TIMEOUT_S,
        *,
        scan_name: str | None = None,
    ) -> float:
        """:func:`wait_scan_written`, with the tail of the writer's log in the error. With
        ``scan_name`` (BLISS's ``scan.identifier``) it also asks the device every half second and
        fails at once when the writer's scan is FAULT (e.g. "The Nexus file is locked", when the
        writer could not open the file: that scan never gets an entry)."""
        fault = None if scan_name is None else functools.partial(self._scan_fault, scan_name)
        try:
            return wait_scan_written(filename, scan_number, timeout, fault=fault)
        except TestBedError as exc:
            raise TestBedError(
                f"{exc}\nthe tail of the NexusWriter's log ({self.writer_log}):\n{_log_tail(self.writer_log)}"
            ) from None

    def _scan_fault(self, scan_name: str) -> str | None:
        try:
            state, reason = self.scan_state(scan_name)
        except Exception as exc:  # noqa: BLE001 - DevFailed: no verdict from the device this time
            log.debug("cannot ask the writer about scan %s: %s", scan_name, exc)
            return None
        return f"the NexusWriter's scan {scan_name!r} is FAULT: {reason}" if state == "FAULT" else None


def _read_status(path: Path, scan_number: int) -> str | None:
    """``/<n>.1/writer/status`` read without taking a file lock; None when not readable (yet)."""
    import h5py  # a BLISS dependency

    try:
        with h5py.File(path, "r", locking=False) as h5:
            dataset = h5.get(f"/{scan_number}.1/writer/status")
            if dataset is None:
                return None
            value = dataset[()]
    except (OSError, KeyError, RuntimeError, ValueError):
        # absent, or caught mid-write by the writer (no SWMR): try again later
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _held_by_writer(path: Path) -> bool:
    """True while another open file holds HDF5's exclusive lock on ``path`` (the writer has it
    open). The probe takes a shared lock for microseconds and only once the status is final."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def wait_scan_written(
    filename: str | Path,
    scan_number: int,
    timeout: float = SCAN_TIMEOUT_S,
    *,
    fault: Callable[[], str | None] | None = None,
) -> float:
    """Wait until the external writer has finished scan ``scan_number`` of ``filename``: its
    ``/<n>.1/writer/status`` reads SUCCEEDED and the writer has closed the file. Returns the
    seconds waited. Raises :class:`TestBedError` when the status is FAILED, when ``fault`` (asked
    every half second while the status is not final) returns a message, or on timeout.

    Safe against the writer's file locking: reads take no lock; the one lock probe (see
    :func:`_held_by_writer`) happens only after SUCCEEDED, when the writer no longer opens the file
    for this scan. Do not call it while another scan writes to the same file."""
    path = Path(filename)
    start = time.monotonic()
    deadline = start + timeout
    next_fault_check = start
    last = "no file yet"
    while True:
        status = _read_status(path, scan_number)
        if status == "FAILED":
            raise TestBedError(f"the NexusWriter marked scan {scan_number} of {path} FAILED")
        if status == "SUCCEEDED":
            if not _held_by_writer(path):
                return time.monotonic() - start
            last = "SUCCEEDED, file still open by the writer"
        else:
            if status is not None:
                last = status
            elif path.exists():
                last = f"no /{scan_number}.1/writer/status readable yet"
            if fault is not None and time.monotonic() >= next_fault_check:
                next_fault_check = time.monotonic() + 0.5
                message = fault()
                if message:
                    raise TestBedError(f"scan {scan_number} of {path} not written: {message}")
        if time.monotonic() > deadline:
            raise TestBedError(
                f"scan {scan_number} of {path} not written after {timeout:.0f} s (last seen: {last})"
            )
        _sleep(0.05)


@contextlib.contextmanager
def writer_for_session(
    beacon_host: str, session: str, workdir: Path, *, use_instead: str = "--writer hdf5"
) -> Iterator[NexusWriterBed]:
    """The NexusWriter of ``session``, running, with ``TANGO_HOST`` in this process's environment
    (BLISS looks the writer up at every scan) until the block ends; then stopped and the
    environment put back. On a stack without an external writer: :class:`TestBedError` with the
    reason and ``use_instead`` (what the caller offers instead)."""
    reason = external_writer_unavailable_reason()
    if reason is not None:
        raise TestBedError(f"{reason}; use {use_instead}")
    with NexusWriterBed(beacon_host, session, workdir) as bed:
        previous = {name: os.environ.get(name) for name in bed.client_env}
        os.environ.update(bed.client_env)
        try:
            yield bed
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
