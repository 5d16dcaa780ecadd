"""Start a real ``beacon-server`` (with its two Redis instances) on free loopback ports.

Used by the pytest fixtures and by ``sampletrack demo``. The server gets:
- a beacon database folder copied from a config tree (``config_examples/demo_beamline`` by default);
- Redis configuration copies that bind 127.0.0.1 only and never save to disk, unless
  ``redis_persistence`` asks for the README's setting on the settings Redis (where the tracker's
  state and outbox live): ``appendonly yes``, ``appendfsync everysec``, files in
  ``<folder>/redis-aof``;
- unix sockets inside its own folder (beacon's defaults are shared ``/tmp`` paths);
- its own process session, so that stopping it stops exactly what it started.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bliss_sampletrack.errors import TestBedError
from bliss_sampletrack.testbed.config_tree import copy_config_tree
from bliss_sampletrack.testbed.redis_stack import REQUIRED_MODULES, make_redis_prefix, redis_module_names

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port that is free on loopback now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _loopback_redis_conf(source: Path, target: Path, aof_dir: Path | None = None) -> Path:
    """Copy a beacon Redis conf, binding loopback only and with RDB snapshots off; with
    ``aof_dir``, the append-only file on (fsync every second) in that folder."""
    text = source.read_text()
    text = re.sub(r"(?m)^\s*(bind|save|protected-mode|appendonly|appendfsync|dir)\b.*$", "", text)
    text += '\nbind 127.0.0.1\nprotected-mode yes\nsave ""\n'
    if aof_dir is not None:
        aof_dir.mkdir(parents=True, exist_ok=True)
        text += f'appendonly yes\nappendfsync everysec\ndir "{aof_dir}"\n'
    target.write_text(text)
    return target


def _bliss_redis_confs() -> tuple[Path, Path]:
    # BLISS 2.0 keeps them in bliss/config/redis, BLISS 2.4 in bliss/beacon/redis
    import importlib.util

    spec = importlib.util.find_spec("bliss")
    if spec is None or spec.origin is None:
        raise TestBedError("BLISS is not installed in this Python environment")
    root = Path(spec.origin).parent
    for folder in (root / "config/redis", root / "beacon/redis"):
        if (folder / "redis.conf").is_file() and (folder / "redis_data.conf").is_file():
            return folder / "redis.conf", folder / "redis_data.conf"
    raise TestBedError(f"no redis.conf/redis_data.conf found under {root}")


def log_tail(path: Path, lines: int, what: str = "log", empty: str = "") -> str:
    """The last ``lines`` lines of a test-bed process's log file, for an error message; ``(no
    <what>: <why>)`` when it cannot be read, ``empty`` when it has no line."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no {what}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or empty


@dataclass
class BeaconServer:
    """A running beacon server; ``host`` is what ``BEACON_HOST`` must be set to."""

    folder: Path
    port: int
    redis_port: int
    redis_data_port: int
    homepage_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)
    redis_persistence: bool = False
    #: processes started for this server after it (a Redis restarted by a fault test): stopped with it
    adopted: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def adopt(self, process: subprocess.Popen[bytes]) -> None:
        """Stop ``process`` (its own process group) when this server stops."""
        self.adopted.append(process)

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.folder / "db"

    @property
    def redis_data_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_data_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}"

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines, "beacon log")

    def stop(self) -> None:
        """SIGTERM the beacon's process group (it and its Redis children), then SIGKILL if needed;
        then the adopted processes."""
        try:
            self._stop_beacon()
        finally:
            for process in self.adopted:
                _stop_group(process)

    def _stop_beacon(self) -> None:
        if self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning(
                "beacon pid %d ignored SIGTERM for %.0f s; killing its group",
                self.process.pid,
                STOP_TIMEOUT_S,
            )
        # the Redis children share the group: make sure none outlives the test run
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=STOP_TIMEOUT_S)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM then SIGKILL a process started with its own session (and its group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("pid %d ignored SIGTERM for %.0f s; killing it", process.pid, STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=STOP_TIMEOUT_S)


def _wait_ready(server: BeaconServer) -> None:
    import redis  # redis-py is a BLISS dependency

    deadline = time.monotonic() + START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise TestBedError(
                f"beacon-server exited with code {server.process.returncode} while starting; "
                f"its log ({server.log_path}):\n{server.log_tail()}"
            )
        try:
            for url in (server.redis_url, server.redis_data_url):
                client = redis.Redis.from_url(url, socket_timeout=1.0)
                try:
                    modules = redis_module_names(client)
                finally:
                    client.close()
                if not REQUIRED_MODULES <= modules:
                    raise TestBedError(
                        f"Redis at {url} lacks {sorted(REQUIRED_MODULES - modules)} "
                        f"(loaded: {sorted(modules)})"
                    )
            # beacon opens its web port last, once its Redis and blissdata setup are done
            with socket.create_connection(("127.0.0.1", server.homepage_port), timeout=1.0):
                return
        except (OSError, redis.exceptions.RedisError) as exc:
            last_error = exc
        _sleep(0.1)
    server.stop()
    raise TestBedError(
        f"beacon-server not ready after {START_TIMEOUT_S:.0f} s (last error: {last_error!r}); "
        f"its log ({server.log_path}):\n{server.log_tail()}"
    )


def _sleep(seconds: float) -> None:
    # cooperative when gevent is there (always, once BLISS is imported); never blocks a hub
    try:
        import gevent
    except ImportError:  # pragma: no cover - gevent is a hard dependency of BLISS
        time.sleep(seconds)
    else:
        gevent.sleep(seconds)


def start_beacon(
    folder: Path,
    config_tree: Path | None = None,
    base_port: int | None = None,
    *,
    redis_persistence: bool = False,
) -> BeaconServer:
    """Start ``beacon-server`` in ``folder`` (created) and wait until it and its Redis answer.

    Ports: four free loopback ports, or ``base_port`` .. ``base_port + 3`` (beacon, Redis, data
    Redis, web) when given, for a demo whose addresses must be known in advance.
    ``redis_persistence``: the settings Redis (tracker state, history, outbox) keeps an
    append-only file (``appendonly yes``, ``appendfsync everysec``) in ``folder/redis-aof``, as
    the README recommends for a beamline; off by default (nothing written to disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    db_path = copy_config_tree(folder / "db", config_tree)
    prefix = make_redis_prefix(folder / "redis-prefix")
    conf, data_conf = _bliss_redis_confs()
    aof_dir = folder / "redis-aof" if redis_persistence else None
    redis_conf = _loopback_redis_conf(conf, folder / "redis.conf", aof_dir)
    redis_data_conf = _loopback_redis_conf(data_conf, folder / "redis_data.conf")
    if base_port is None:
        port, redis_port, redis_data_port, homepage_port = (free_port() for _ in range(4))
    else:
        port, redis_port, redis_data_port, homepage_port = range(base_port, base_port + 4)

    env = dict(os.environ)
    env["CONDA_PREFIX"] = str(prefix)
    # beacon-server and memory_tracker live beside this interpreter; redis-server in the prefix
    env["PATH"] = os.pathsep.join(
        [str(prefix / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")]
    )
    env.pop("BEACON_HOST", None)
    beacon_exe = shutil.which("beacon-server", path=env["PATH"])
    if beacon_exe is None:
        raise TestBedError("beacon-server not found beside this Python; is BLISS installed here?")
    args = [
        beacon_exe,
        f"--db-path={db_path}",
        f"--port={port}",
        f"--redis-port={redis_port}",
        f"--redis-conf={redis_conf}",
        f"--redis-socket={folder / 'redis.sock'}",
        f"--redis-data-port={redis_data_port}",
        f"--redis-data-conf={redis_data_conf}",
        f"--redis-data-socket={folder / 'redis_data.sock'}",
        f"--homepage-port={homepage_port}",
        "--log-server-port=0",
        "--tango-port=0",
        f"--log-output-folder={folder}",
    ]
    log_path = folder / "beacon.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            args,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills exactly this tree
        )
    server = BeaconServer(
        folder, port, redis_port, redis_data_port, homepage_port, process, log_path, env, redis_persistence
    )
    _wait_ready(server)
    log.info("beacon-server pid %d ready on %s (db %s)", process.pid, server.host, db_path)
    return server


@contextmanager
def running_beacon(
    folder: Path,
    config_tree: Path | None = None,
    base_port: int | None = None,
    *,
    redis_persistence: bool = False,
) -> Iterator[BeaconServer]:
    """Context manager: a beacon server for the duration of the block."""
    server = start_beacon(folder, config_tree, base_port, redis_persistence=redis_persistence)
    try:
        yield server
    finally:
        server.stop()
