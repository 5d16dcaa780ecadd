"""Several ``sampletrack-service serve`` processes on one database: a service farm, with its load.

A facility runs one tracking service for many beamlines as N stateless ``serve`` processes
behind a reverse proxy, all on one PostgreSQL database (``docs/service-deployment.md``). This
module starts such a farm on loopback for tests and benchmarks, kills and restarts its
processes, and gives it a realistic load:

- :class:`ServiceFarm`: ``count`` real processes (``python -m bliss_sampletrack.service serve``),
  each on a port the kernel chooses (``--port 0``, read back from the line the service announces)
  and in its own process group; ``kill9(i)``, ``restart(i)`` (same port), ``stop()`` (SIGTERM,
  then SIGKILL after a timeout), ``urls``, :meth:`~ServiceFarm.create_token`, the CPU time of
  the processes with their validation workers (``cpu_seconds``) and ``wait_idle`` (for benchmarks:
  until the workers started after a start have finished importing).
- :class:`OutboxRedis`: a plain ``redis-server`` (the test bed's Redis 8 binary) on a unix socket,
  to hold the beamlines' outboxes (one Redis stream per beamline, as on a beamline's beacon).
- :func:`mount_unmount_events` and :func:`fill_outboxes`: mount/unmount pairs per beamline and a
  fast, pipelined way to put them in the outboxes; :func:`undelivered` tells which are not delivered yet.
- :func:`process_tree_cpu_seconds`: user + system CPU of a process and its descendants, from
  ``/proc`` (Linux).

Migrations run once, before any ``serve`` starts (``sampletrack-service migrate``, as the
database owner: ``admin_url``), and every process is started with ``--no-migrate``: how a
facility should run it (``docs/service-deployment.md``). Concurrent ``serve``
processes migrating at once are also serialised by the service (a PostgreSQL advisory lock per
migration step), but the farm does not rely on it.

Caveats:
- Linux only (``/proc``, process groups). ``kill9`` kills the whole process group (the server
  and its validation worker processes), as a machine or container dying would; the CPU time of a
  killed process is lost from :meth:`ServiceFarm.cpu_seconds`.
- ``restart(i)`` binds the same port again (waitress sets ``SO_REUSEADDR``); if something else took
  the port meanwhile (it came from the kernel's ephemeral range, which outgoing connections use
  too), the restart fails with the process's log in the error.
- The outbox Redis persists nothing (``save ""``, no append-only file): a test tool, not the
  beacon Redis of a beamline.
- Waiting loops use ``gevent.sleep``: cooperative in a gevent-patched process (BLISS, the delivery
  clients), a plain sleep elsewhere.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gevent

from bliss_sampletrack.core import Event
from bliss_sampletrack.core.contract import format_timestamp
from bliss_sampletrack.delivery.outbox import RedisStreamOutbox
from bliss_sampletrack.errors import TestBedError
from bliss_sampletrack.testbed.beacon import log_tail
from bliss_sampletrack.testbed.events import make_event
from bliss_sampletrack.testbed.redis_stack import redis_stack_files

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOG_LINES = 30  # lines of a process's log quoted in an error
SERVING = re.compile(r"serving on (http://[\d.]+:(\d+)\S*?)/? ")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- CPU time from /proc -------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # the process has gone (or never was): nothing to count
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and of its live descendants, plus those of
    the children each of them has already waited for (``cutime``/``cstime``).

    Caveat: a snapshot; a descendant that ended without being waited for is not counted."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
                stats[int(entry)] = fields
    if root not in stats:
        return 0.0
    tree = {root}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree and pid not in tree}
        tree |= children
        grew = bool(children)
    ticks = sum(sum(int(x) for x in stats[pid][11:15]) for pid in tree)  # utime stime cutime cstime
    return ticks / _CLOCK_TICKS


# --- the service processes -----------------------------------------------------------------------
def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``SAMPLETRACK_*`` variable (the plugin's tokens, a stray service
    setting), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLETRACK_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class FarmProcess:
    """One ``serve`` process of the farm; ``port`` stays the same across restarts."""

    index: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    api_url: str = ""
    starts: int = 0
    log_offset: int = 0  # where the current start's output begins in the log

    @property
    def name(self) -> str:
        pid = self.process.pid if self.process is not None else "-"
        return f"sampletrack-service #{self.index} (pid {pid}, port {self.port or '?'})"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = LOG_LINES) -> str:
        return log_tail(self.log_path, lines, f"log of {self.name}", "(its log is empty)")


class ServiceFarm:
    """``count`` ``sampletrack-service serve`` processes on one database URL.

    ``validation_workers`` and ``threads`` go to each process (None: the service's defaults:
    8 threads, one validation worker per CPU up to 4). ``admin_url`` (default ``db_url``) is the
    database owner's URL, used for the migrations and :meth:`create_token`, as an operator would;
    the processes use ``db_url`` (a runtime role may have no DDL rights). Use as a context
    manager, or call :meth:`start` and :meth:`stop`. Errors are :class:`TestBedError` naming the
    process and quoting the end of its log.
    """

    def __init__(
        self,
        db_url: str,
        count: int,
        workdir: Path,
        *,
        threads: int | None = None,
        validation_workers: int | None = None,
        log_level: str = "WARNING",
        start_timeout: float = START_TIMEOUT_S,
        stop_timeout: float = STOP_TIMEOUT_S,
        admin_url: str | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"a farm needs at least one process, got {count}")
        self.db_url = db_url
        self.admin_url = admin_url or db_url
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self.validation_workers = validation_workers
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.processes = [FarmProcess(i, self.workdir / f"service-{i}.log") for i in range(count)]

    # -- life cycle -------------------------------------------------------------------------------
    def __enter__(self) -> ServiceFarm:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def migrate(self) -> None:
        """``sampletrack-service migrate`` once (a no-op when the schema is current)."""
        log_path = self.workdir / "migrate.log"
        with log_path.open("ab") as out:
            try:
                result = subprocess.run(
                    [sys.executable, "-m", "bliss_sampletrack.service", "migrate"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=service_env({"SAMPLETRACK_SERVICE_DB": self.admin_url}),
                    timeout=self.start_timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise TestBedError(
                    f"sampletrack-service migrate did not finish in {self.start_timeout:.0f} s:\n"
                    f"{log_tail(log_path, LOG_LINES, 'migrate log')}"
                ) from None
        if result.returncode != 0:
            raise TestBedError(
                f"sampletrack-service migrate failed (exit status {result.returncode}):\n"
                f"{log_tail(log_path, LOG_LINES, 'migrate log')}"
            )

    def start(self) -> None:
        """Migrate, then start every process at once and wait until each announces its port."""
        self.migrate()
        try:
            for proc in self.processes:
                self._launch(proc)
            for proc in self.processes:
                self._wait_announced(proc)
        except BaseException:
            self.stop()
            raise
        log.info("service farm up: %s", ", ".join(self.urls))

    def _launch(self, proc: FarmProcess) -> None:
        extra = {"SAMPLETRACK_SERVICE_DB": self.db_url}  # not on the command line: ps shows that
        if self.validation_workers is not None:
            extra["SAMPLETRACK_SERVICE_VALIDATION_WORKERS"] = str(self.validation_workers)
        cmd = [sys.executable, "-m", "bliss_sampletrack.service", "serve", "--no-migrate"]
        cmd += ["--host", "127.0.0.1", "--port", str(proc.port), "--log-level", self.log_level]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        with proc.log_path.open("ab") as out:
            out.write(f"--- start {proc.starts + 1} of process #{proc.index}\n".encode())
            out.flush()
            proc.log_offset = out.tell()
            proc.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=service_env(extra),
                start_new_session=True,  # its own process group: kill9 and stop reach its workers
            )
        proc.starts += 1

    def _wait_announced(self, proc: FarmProcess) -> None:
        assert proc.process is not None
        offset = proc.log_offset
        deadline = time.monotonic() + self.start_timeout
        while True:
            with proc.log_path.open("rb") as f:
                f.seek(offset)
                match = SERVING.search(f.read().decode(errors="replace"))
            if match:
                port = int(match.group(2))
                if proc.port and port != proc.port:  # pragma: no cover - the service binds what it is given
                    raise TestBedError(f"{proc.name} listens on port {port}, not on its port {proc.port}")
                proc.port, proc.api_url = port, match.group(1).rstrip("/")
                return
            if proc.process.poll() is not None:
                raise TestBedError(
                    f"{proc.name} exited with status {proc.process.returncode} before serving:\n"
                    f"{proc.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TestBedError(
                    f"{proc.name} did not announce its port in {self.start_timeout:.0f} s:\n{proc.log_tail()}"
                )
            gevent.sleep(0.05)

    def kill9(self, index: int) -> None:
        """SIGKILL process ``index`` and its process group (its validation workers), and reap it."""
        proc = self.processes[index]
        if not proc.alive:
            raise TestBedError(f"{proc.name} is not running: nothing to kill")
        assert proc.process is not None
        os.killpg(proc.process.pid, signal.SIGKILL)
        self._reap(proc)
        log.info("%s killed (SIGKILL)", proc.name)

    def restart(self, index: int) -> None:
        """Start process ``index`` again on its port (stopping it first if it still runs)."""
        proc = self.processes[index]
        if proc.alive:
            self._stop_one(proc)
        self._launch(proc)
        self._wait_announced(proc)
        log.info("%s restarted", proc.name)

    def stop(self) -> None:
        """SIGTERM every process; SIGKILL (the group) whatever is left after ``stop_timeout``."""
        running = [proc for proc in self.processes if proc.alive]
        for proc in running:
            assert proc.process is not None
            proc.process.send_signal(signal.SIGTERM)  # the server shuts its worker pool down itself
        for proc in self.processes:
            self._stop_one(proc, terminate=False)

    def _stop_one(self, proc: FarmProcess, terminate: bool = True) -> None:
        if proc.process is None:
            return
        if proc.process.poll() is None:
            if terminate:
                proc.process.send_signal(signal.SIGTERM)
            try:
                proc.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s; killing its group", proc.name, self.stop_timeout)
        try:
            os.killpg(proc.process.pid, signal.SIGKILL)  # leftovers of its group, if any
        except ProcessLookupError:
            pass  # the group is gone: nothing left
        self._reap(proc)

    def _reap(self, proc: FarmProcess) -> None:
        assert proc.process is not None
        try:
            proc.process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            raise TestBedError(
                f"{proc.name} still runs {self.stop_timeout:.0f} s after SIGKILL:\n{proc.log_tail()}"
            ) from None

    # -- what callers need ------------------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        """The API URL of each process (``http://127.0.0.1:PORT/api/v1``), in index order."""
        return [proc.api_url for proc in self.processes]

    def url_for(self, n: int) -> str:
        """Round-robin: the URL the ``n``-th client should use."""
        return self.urls[n % len(self.processes)]

    @property
    def pids(self) -> list[int | None]:
        return [proc.process.pid if proc.alive and proc.process else None for proc in self.processes]

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the running processes and their validation workers."""
        return sum(process_tree_cpu_seconds(pid) for pid in self.pids if pid is not None)

    def wait_idle(self, cpu_fraction: float = 0.05, window: float = 0.5, timeout: float = 60.0) -> float:
        """Wait until the farm uses less than ``cpu_fraction`` of a CPU over ``window`` seconds
        (after a start, each process's validation workers are still importing); returns the seconds
        waited. For benchmarks, so that start-up work is not measured as ingest."""
        started = time.monotonic()
        before = self.cpu_seconds()
        while True:
            gevent.sleep(window)
            now = self.cpu_seconds()
            if now - before < cpu_fraction * window:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TestBedError(
                    f"the service farm still used {(now - before) / window:.0%} of a CPU "
                    f"{timeout:.0f} s after it was asked to settle"
                )
            before = now

    def create_token(self, beamlines: Iterable[str], *, read_only: bool = False, label: str = "farm") -> str:
        """A new token written to the farm's database, as ``sampletrack-service token create
        --beamline B ... [--read-only]`` would (done here directly, without a process start)."""
        from bliss_sampletrack.service.auth import create_token
        from bliss_sampletrack.service.storage import open_storage

        with open_storage(self.admin_url) as storage:
            return create_token(storage, list(beamlines), read_only=read_only, label=label)[1]


# --- the outboxes' Redis -------------------------------------------------------------------------
@dataclass
class OutboxRedis:
    """A ``redis-server`` on a unix socket (no TCP port), persisting nothing; see :func:`start_redis`."""

    folder: Path
    process: subprocess.Popen[bytes]
    socket_path: Path
    log_path: Path
    _clients: list[Any] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def client(self) -> Any:
        """A new redis-py client (closed by :meth:`stop`)."""
        import redis

        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=30)
        self._clients.append(client)
        return client

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_redis(timeout: float = 30.0) -> OutboxRedis:
    """Start ``redis-server`` in a new short temporary folder (unix socket paths are limited to
    about 100 characters) and wait until it answers PING."""
    import redis

    server = redis_stack_files()["bin/redis-server"]
    folder = Path(tempfile.mkdtemp(prefix="st-redis-"))
    socket_path, log_path = folder / "redis.sock", folder / "redis.log"
    cmd = [str(server), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    cmd += ["--save", "", "--appendonly", "no", "--dir", str(folder), "--logfile", str(log_path)]
    process = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
    outbox_redis = OutboxRedis(folder, process, socket_path, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            text = log_tail(log_path, LOG_LINES, "redis log")
            outbox_redis.stop()
            raise TestBedError(f"redis-server exited with status {process.returncode}:\n{text}")
        if socket_path.exists():
            probe = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=2)
            try:
                if probe.ping():
                    return outbox_redis
            except redis.exceptions.ConnectionError:
                pass  # the socket file exists a moment before the server accepts on it
            finally:
                probe.close()
        if time.monotonic() > deadline:
            text = log_tail(log_path, LOG_LINES, "redis log")
            outbox_redis.stop()
            raise TestBedError(f"redis-server did not answer PING in {timeout:.0f} s:\n{text}")
        gevent.sleep(0.02)


# --- the load ------------------------------------------------------------------------------------
def mount_unmount_events(
    beamlines: list[str],
    count: int,
    *,
    seed: int = 1,
    start: datetime = datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
) -> dict[str, list[Event]]:
    """``count`` events in all, spread evenly over ``beamlines``: per beamline, in time order,
    mount/unmount pairs (the unmount names its mount, ``mount_event_id``) of samples taken from a
    pool shared by every beamline (each sample is mounted about five times, on several beamlines).

    The first event of each beamline is checked against the contract; the others, built the same
    way, are made without the check (``trusted``: 40 us instead of 300 us each; the service checks
    every one of them anyway). Event ids are random; times and samples follow ``seed``."""
    rng = random.Random(seed)
    pool = [f"BC-{n:06d}" for n in range(max(1, count // 10))]
    per_beamline = [count // len(beamlines) + (i < count % len(beamlines)) for i in range(len(beamlines))]
    out: dict[str, list[Event]] = {}
    for beamline, size in zip(beamlines, per_beamline, strict=True):
        events: list[Event] = []
        when = start + timedelta(seconds=rng.randint(0, 3600))
        while len(events) < size:
            barcode = rng.choice(pool)
            puck, position = rng.randint(1, 29), rng.randint(1, 16)
            common: dict[str, Any] = {
                "beamline": beamline,
                "session": f"{beamline}_session",
                "proposal": f"mx{rng.randint(1000, 9999)}",
                "sample": {
                    "barcode": barcode,
                    "name": f"sample-{barcode}",
                    "container_id": f"puck-{puck}",
                    "container_name": f"Puck {puck}",
                    "container_position": str(position),
                },
                "sample_changer": {"name": "flex", "position": f"{puck}:{position:02d}"},
                "producer": {"host": f"{beamline}-ctl"},
            }
            mount = make_event(type="mounted", occurred_at=format_timestamp(when), **common)
            when += timedelta(minutes=rng.randint(5, 45), microseconds=rng.randint(0, 999_999))
            unmount = make_event(
                type="unmounted",
                occurred_at=format_timestamp(when),
                mount_event_id=mount["event_id"],
                **common,
            )
            when += timedelta(minutes=rng.randint(1, 10), microseconds=rng.randint(0, 999_999))
            for data in (mount, unmount)[: size - len(events)]:
                events.append(Event.from_dict(data, trusted=bool(events)))
        out[beamline] = events
    return out


def fill_outboxes(redis_client: Any, events: Mapping[str, list[Event]], chunk: int = 5000) -> dict[str, str]:
    """Append each beamline's events to its outbox (pipelined, ``chunk`` XADDs per round trip);
    returns each beamline's last stream ID (the outbox is drained when a client's cursor is there).

    Caveat: not one MULTI/EXEC per event as the tracker writes them; the order within a beamline
    is the list's all the same."""
    last: dict[str, str] = {}
    for beamline, items in events.items():
        outbox = RedisStreamOutbox(redis_client, beamline)
        for begin in range(0, len(items), chunk):
            pipeline = redis_client.pipeline(transaction=False)
            outbox.add(pipeline, items[begin : begin + chunk])
            pipeline.execute()
        newest = redis_client.xrevrange(outbox.key, count=1)
        if not newest:
            raise TestBedError(f"outbox {outbox.key} is empty after being filled")
        entry_id = newest[0][0]
        last[beamline] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return last


def undelivered(redis_client: Any, last_ids: Mapping[str, str], client: str) -> list[str]:
    """The beamlines whose outbox ``client`` has not finished yet (empty: all delivered)."""
    return [
        beamline
        for beamline, last_id in last_ids.items()
        if RedisStreamOutbox(redis_client, beamline).cursor(client) != last_id
    ]
