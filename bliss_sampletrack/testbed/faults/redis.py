"""Fault injector: the beacon's Redis stopped (SHUTDOWN, or kill -9) and started again.

``beacon-server`` starts its two ``redis-server`` children once and does not restart them. This
module finds one of them (the settings Redis, where the tracker's state, history and outbox live,
or the data Redis), stops it, and starts a new ``redis-server`` with the very same command line,
working folder and environment: same port, unix socket, configuration (and so the same
append-only file when the beacon was started with ``redis_persistence=True``) and modules. The new
process is adopted by the :class:`~bliss_sampletrack.testbed.beacon.BeaconServer`, which stops it
with the beacon.

Public API (also for the soak run)::

    redis = BeaconRedis(server, which="settings")      # or "data"
    redis.pid                                           # the running redis-server's pid
    redis.shutdown(timeout=15.0)                        # SHUTDOWN (AOF flushed), wait until gone
    redis.kill9(timeout=15.0)                           # SIGKILL, wait until gone
    redis.start(timeout=30.0)                           # same command line again, wait for PING
    redis.restart(kill=False, down_for=0.0)             # stop (SHUTDOWN or SIGKILL), wait, start
    redis.client()                                      # a plain redis-py client (caller closes)
    kill9_and_reap(process_or_pid, timeout=15.0)        # SIGKILL a process of ours, wait for it

Only processes this test bed started are touched: a child of the beacon this test started (its
command line carrying the beacon's Redis port), or a process this module started.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import psutil

from bliss_sampletrack.errors import TestBedError
from bliss_sampletrack.testbed.beacon import BeaconServer, _sleep
from bliss_sampletrack.testbed.redis_stack import REQUIRED_MODULES, redis_module_names

log = logging.getLogger(__name__)

Which = Literal["settings", "data"]


def kill9_and_reap(target: subprocess.Popen[Any] | int, timeout: float = 15.0) -> None:
    """SIGKILL ``target`` (a Popen, or the pid of a process this test bed started) and wait
    until it is gone (reaped when it is our child)."""
    pid = target.pid if isinstance(target, subprocess.Popen) else target
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if isinstance(target, subprocess.Popen):
        target.wait(timeout=timeout)
        return
    _wait_gone(pid, timeout)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return  # dead; its parent (beacon) reaps it
        except psutil.NoSuchProcess:
            return
        _sleep(0.05)
    raise TestBedError(f"pid {pid} still alive {timeout:.0f} s after it was stopped")


@dataclass
class BeaconRedis:
    """One of a test-bed beacon's Redis servers, to stop and start again."""

    server: BeaconServer
    which: Which = "settings"
    _cmdline: list[str] = field(default_factory=list, init=False, repr=False)
    _cwd: str = field(default="", init=False, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._cmdline, self._cwd = self._command_line(), str(self.server.db_path)

    def _command_line(self) -> list[str]:
        """How beacon started it (redis-server rewrites its process title, so ask the server):
        ``redis-server CONF --port P --unixsocket S --unixsocketperm M --loadmodule SO ...``."""
        client = self.client()
        try:
            info = client.info("server")
            config = client.config_get("unix*")
            modules = client.module_list()
        finally:
            client.close()
        # beacon runs "redis-server" from its PATH (INFO's "executable" is argv[0] joined to the cwd)
        executable = shutil.which("redis-server", path=self.server.env["PATH"])
        if executable is None:
            raise TestBedError(f"redis-server not on the beacon's PATH {self.server.env['PATH']!r}")
        args = [executable, str(info["config_file"]), "--port", str(info["tcp_port"])]
        if config.get("unixsocket"):
            args += ["--unixsocket", config["unixsocket"], "--unixsocketperm", config["unixsocketperm"]]
        for module in modules:
            path = module.get(b"path", module.get("path"))
            path = path.decode() if isinstance(path, bytes) else str(path or "")
            if path:  # modules built into the server (Redis 8's vectorset) have no path
                args += ["--loadmodule", path]
        return args

    @property
    def port(self) -> int:
        return self.server.redis_port if self.which == "settings" else self.server.redis_data_port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _find(self) -> psutil.Process:
        """The running redis-server on our port: the beacon's child, or the one we started."""
        if self._process is not None and self._process.poll() is None:
            return psutil.Process(self._process.pid)
        for child in psutil.Process(self.server.process.pid).children():
            try:
                cmdline = child.cmdline()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            # the title redis-server gives itself: "redis-server 127.0.0.1:PORT"
            if cmdline and cmdline[0].startswith("redis-server") and cmdline[0].endswith(f":{self.port}"):
                return child
        raise TestBedError(
            f"no running redis-server on port {self.port} under beacon pid {self.server.process.pid}"
        )

    @property
    def pid(self) -> int:
        return self._find().pid

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5.0, socket_connect_timeout=5.0)

    def shutdown(self, timeout: float = 15.0) -> None:
        """SHUTDOWN (which writes and fsyncs the append-only file when it is on); wait until gone."""
        import redis

        pid = self.pid
        client = self.client()
        try:
            client.shutdown()
        except redis.exceptions.ConnectionError:
            pass  # the server closes the connection as it exits: what SHUTDOWN answers
        finally:
            client.close()
        self._reap(pid, timeout)
        log.info("redis-server pid %d (%s) shut down", pid, self.which)

    def kill9(self, timeout: float = 15.0) -> None:
        """SIGKILL the redis-server: no chance to flush anything."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        self._reap(pid, timeout)
        log.info("redis-server pid %d (%s) killed", pid, self.which)

    def _reap(self, pid: int, timeout: float) -> None:
        if self._process is not None and self._process.pid == pid:
            self._process.wait(timeout=timeout)
        else:
            _wait_gone(pid, timeout)

    def start(self, timeout: float = 30.0) -> int:
        """Start redis-server again with its first command line; wait until it answers with its
        modules loaded. Returns the new pid."""
        log_file = self.server.folder / f"redis-{self.which}-restarted.log"
        with log_file.open("ab") as out:
            process = subprocess.Popen(
                self._cmdline,
                cwd=self._cwd,
                env=self.server.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._process = process
        self.server.adopt(process)
        import redis

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TestBedError(f"restarted redis-server exited with {process.returncode}; see {log_file}")
            client = self.client()
            try:
                if client.ping() and REQUIRED_MODULES <= redis_module_names(client):
                    log.info("redis-server (%s) restarted as pid %d", self.which, process.pid)
                    return process.pid
            except (redis.exceptions.RedisError, OSError) as exc:  # not listening yet, or LOADING
                last = exc
            finally:
                client.close()
            _sleep(0.05)
        raise TestBedError(
            f"restarted redis-server not ready after {timeout:.0f} s: {last!r}; see {log_file}"
        )

    def restart(self, *, kill: bool = False, down_for: float = 0.0, timeout: float = 30.0) -> int:
        """Stop (SHUTDOWN, or SIGKILL with ``kill``), stay down ``down_for`` s, start again."""
        if kill:
            self.kill9(timeout)
        else:
            self.shutdown(timeout)
        if down_for > 0:
            _sleep(down_for)
        return self.start(timeout)
