"""The demo's tracking service: ``sampletrack-service serve`` as a child process on loopback.

Stopping and starting it again is how the demo shows an outage of the tracking service.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import gevent

from bliss_sampletrack.errors import TestBedError

log = logging.getLogger(__name__)

SERVICE = str(Path(sys.executable).parent / "sampletrack-service")
#: the plugin's token variables: the service never needs them, so its process does not get them
PLUGIN_SECRETS = ("SAMPLETRACK_TOKEN", "SAMPLETRACK_READ_TOKEN")


def service_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in PLUGIN_SECRETS}


class ServiceProcess:
    def __init__(self, db_path: Path, port: int, log_path: Path) -> None:
        self.db_url = f"sqlite:///{db_path}"
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"

    def create_token(self, beamline: str, *, read_only: bool = False) -> str:
        """A new token (printed once by the service's CLI: the only line on its stdout)."""
        args = [SERVICE, "token", "create", "--db", self.db_url, "--label", "sampletrack demo"]
        args += ["--read-only"] if read_only else ["--beamline", beamline]
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=service_env()
        )
        if result.returncode != 0:
            raise TestBedError(f"sampletrack-service token create failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [SERVICE, "serve", "--db", self.db_url, "--host", "127.0.0.1", "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=service_env(),
            )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        import requests

        with gevent.Timeout(timeout, False):
            while True:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    if requests.get(f"{self.api_url}/healthz", timeout=1).status_code == 200:
                        return
                except requests.RequestException:
                    pass  # not listening yet
                gevent.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        self.stop()
        raise TestBedError(f"the tracking service did not start on port {self.port}; its log:\n{tail}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
