"""A private, throwaway PostgreSQL cluster for tests and benchmarks (not for production).

``initdb`` + ``pg_ctl`` from the Debian packages (``/usr/lib/postgresql/<version>/bin``), a data
folder under the system temp folder, a free loopback port, trust authentication for local
connections only. As root, the server runs as the ``postgres`` OS user (``runuser -u postgres``;
initdb refuses root), which is given the data folder.

Caveats: ``fsync=False`` (the default here) makes it fast and unsafe on a crash, which is what
tests want; benchmarks pass ``fsync=True``. :func:`find_pg_bin` returns None when PostgreSQL is
not installed (``tools/setup-system.sh`` installs it).
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SUPERUSER = "postgres"


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl, or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    for initdb in reversed(candidates):
        folder = Path(initdb).parent
        if (folder / "pg_ctl").exists():
            return folder
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgCluster:
    """A running private cluster; :meth:`url` gives a database URL, :meth:`stop` removes it all."""

    bin_dir: Path
    root: Path
    port: int
    run_as: list[str] = field(default_factory=list)
    _stopped: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.run_as, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        import psycopg

        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name checked above; DDL takes no parameters
        return self.url(name)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        result = self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )
        if result.returncode != 0:
            log.warning("pg_ctl stop failed: %s", result.stderr.strip()[-500:])
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(bin_dir: Path | None = None, *, fsync: bool = False, timeout: float = 60) -> PgCluster:
    """Create and start a private cluster (raises RuntimeError with the server's words)."""
    bin_dir = bin_dir or find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (initdb/pg_ctl not found); run tools/setup-system.sh")
    root = Path(tempfile.mkdtemp(prefix="sampletrack-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", SUPERUSER, "--"]
        shutil.chown(root, user=SUPERUSER, group=None)
        os.chmod(root, 0o700)
    cluster = PgCluster(bin_dir, root, free_port(), run_as)
    try:
        result = cluster._run(
            str(bin_dir / "initdb"),
            "-D",
            str(cluster.data),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.strip()[-2000:]}")
        options = (
            f"-c port={cluster.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            f"-c fsync={'on' if fsync else 'off'} -c max_connections=200 -c shared_buffers=256MB"
        )
        if not fsync:
            options += " -c synchronous_commit=off -c full_page_writes=off"
        result = cluster._run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(cluster.data),
            "-l",
            str(root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            server_log = (
                (root / "server.log").read_text(errors="replace")[-2000:]
                if (root / "server.log").exists()
                else ""
            )
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()[-1000:]}\n{server_log}")
        _wait_ready(cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_ready(cluster: PgCluster, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(cluster.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {cluster.port} did not accept connections") from None
            time.sleep(0.1)
