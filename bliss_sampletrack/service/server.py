"""Serving the WSGI application with waitress (threaded, production grade; no gevent).

:func:`run` blocks until SIGINT/SIGTERM; :func:`start_in_thread` is for embedding (benchmarks,
harnesses). Waitress buffers each request body before calling the application; its own body
limit is set above the application's, so that the application answers an over-large body with
the contract's JSON ``413`` and waitress only cuts off absurd ones.

Caveats: waitress speaks plain HTTP; put TLS in a reverse proxy in front of it. Behind a proxy,
``trusted_proxy`` settings are left at waitress's defaults (no forwarded headers trusted).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from waitress.server import create_server

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """A waitress server started by :func:`start_in_thread`."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


def make_server(app: Callable[..., Any], host: str, port: int, threads: int, max_body: int) -> Any:
    return create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        max_request_body_size=2 * max_body,
        ident="sampletrack-service",
        clear_untrusted_proxy_headers=True,
        channel_timeout=60,
    )


def run(
    app: Callable[..., Any],
    host: str,
    port: int,
    threads: int,
    max_body: int,
    announce: Callable[[str, int], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. ``announce(host, port)`` is called once listening."""
    server = make_server(app, host, port, threads, max_body)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if announce is not None:
        announce(host, int(server.effective_port))
    try:
        server.run()  # returns on SIGINT/SIGTERM (waitress catches the KeyboardInterrupt)
    finally:
        server.close()
        log.info("stopped")


def start_in_thread(
    app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0, threads: int = 8, max_body: int = 1 << 24
) -> RunningServer:
    server = make_server(app, host, port, threads, max_body)
    thread = threading.Thread(target=server.run, name="sampletrack-waitress", daemon=True)
    thread.start()
    return RunningServer(server, thread)
