"""Fixtures and helpers of the tracking-service tests (``tests/*/service/``, and others).

Loaded by those modules with ``pytest_plugins = ["service_fixtures"]`` (one registration, so the
session-wide PostgreSQL cluster is started once). PYTEST_DONT_REWRITE: the modules import helpers
from here before pytest registers it as a plugin, and it holds no test assertions to rewrite.

- ``pg_cluster``: a private PostgreSQL cluster (``initdb``/``pg_ctl`` in a temp folder, free
  loopback port, as the ``postgres`` user when run as root), stopped at the end of the session.
  Tests that need it are skipped, with the reason, only when PostgreSQL is not installed
  (``tools/setup-system.sh`` installs it).
- ``db_url``: parametrised over ``sqlite`` and ``postgresql``: a fresh, empty database per test.
- ``storage``: a migrated storage on ``db_url``.
- :func:`start_service`: ``python -m bliss_sampletrack.service serve`` as a real process on a free
  port (read from its first line), its output in a log file; stopped at teardown.

Run as a script (no pytest collection, no BLISS import) it is the helper process of two tests::

    python tests/helpers/service_fixtures.py fuzz BASE_URL --max-examples N   (token: $SAMPLETRACK_FUZZ_TOKEN)
    python tests/helpers/service_fixtures.py ui-harness --db URL               (token: $SAMPLETRACK_UI_TOKEN)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# the tests' event builder, shared with the benchmarks (imported from here by the service tests)
from bliss_sampletrack.testbed.events import make_event as make_event
from bliss_sampletrack.testbed.service_farm import service_env

REPO = Path(__file__).resolve().parents[2]
HELPERS = Path(__file__).resolve().parent  # this folder: the helper scripts run as processes
SERVING = re.compile(r"serving on (http://[\d.]+:\d+\S*?)/? ")
_db_counter = itertools.count(1)


# --- events ------------------------------------------------------------------------------------
def stamp(minutes: float, day: str = "2026-11-24") -> str:
    """``occurred_at`` text ``minutes`` after midnight of ``day``."""
    total_us = round(minutes * 60_000_000)
    hours, rest = divmod(total_us, 3_600_000_000)
    mins, rest = divmod(rest, 60_000_000)
    secs, micros = divmod(rest, 1_000_000)
    return f"{day}T{hours:02d}:{mins:02d}:{secs:02d}.{micros:06d}Z"


# --- PostgreSQL --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    from bliss_sampletrack.service.devdb import find_pg_bin, start_cluster

    if find_pg_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed: run tools/setup-system.sh")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tracking.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return str(cluster.create_database(f"t{next(_db_counter)}_{os.getpid()}"))


@pytest.fixture
def storage(db_url: str) -> Iterator[Any]:
    from bliss_sampletrack.service.storage import open_storage

    store = open_storage(db_url)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def issue_token(db_url: str, beamlines: list[str], *, read_only: bool = False, label: str = "") -> str:
    """Create a token directly in the database (as ``token create`` does)."""
    from bliss_sampletrack.service.auth import create_token
    from bliss_sampletrack.service.storage import open_storage

    with open_storage(db_url) as store:
        store.migrate()
        return create_token(store, beamlines, read_only=read_only, label=label)[1]


# --- the service as a process ------------------------------------------------------------------
clean_env = service_env  # this environment without SAMPLETRACK_* variables (testbed.service_farm)


@dataclass
class Service:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_process(
    cmd: list[str], log_path: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> Service:
    """Start a command that prints ``serving on http://host:port/base/``; wait for that line."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=clean_env(env), cwd=log_path.parent
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = SERVING.search(log_path.read_text(errors="replace"))
        if match:
            return Service(match.group(1).rstrip("/"), log_path, process)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
    raise RuntimeError(f"{cmd[:4]} did not start:\n{log_path.read_text(errors='replace')[-3000:]}")


def start_service(
    db_url: str, workdir: Path, *args: str, env: dict[str, str] | None = None, validation_workers: int = 0
) -> Service:
    """The service on ``db_url``; without validation worker processes unless asked (they cost
    a second of CPU at start-up, and only batches of 100 events or more use them)."""
    log_path = workdir / f"service-{next(_db_counter)}.log"
    cmd = [sys.executable, "-m", "bliss_sampletrack.service", "serve", "--db", db_url, "--port", "0", *args]
    return start_process(
        cmd, log_path, {"SAMPLETRACK_SERVICE_VALIDATION_WORKERS": str(validation_workers), **(env or {})}
    )


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Any]:
    """``start(db_url, *args)`` -> a running :class:`Service`; all are stopped at teardown."""
    started: list[Service] = []

    def start(db_url: str, *args: str, env: dict[str, str] | None = None) -> Service:
        service = start_service(db_url, tmp_path, *args, env=env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


# --- script mode: the fuzzer and the web page harness -----------------------------------------
FUZZ_BEAMLINE = "fuzz"


def _steer(body: Any) -> None:
    """Point generated events at the fuzz token's beamline so that they reach the database."""
    items = body.get("events") if isinstance(body, dict) and isinstance(body.get("events"), list) else [body]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("beamline"), str):
            item["beamline"] = FUZZ_BEAMLINE


def run_fuzz(base_url: str, token: str, max_examples: int) -> list[str]:
    """Schemathesis (>= 4) over every operation, positive and negative data; returns the 5xx seen."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                nonlocal calls
                if case.body is not None and not type(case.body).__name__ == "NotSet":
                    _steer(case.body)
                response = case.call(
                    base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
                calls += 1
                if response.status_code >= 500:
                    where = f"{case.method} {case.formatted_path}"
                    failures.append(f"{where} -> {response.status_code}: {response.text[:300]}")

            try:
                check()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
                # nothing in the operation can be made invalid (e.g. GET /healthz): no negative case
        print(f"fuzzed {operation.method.upper()} {operation.path}", file=sys.stderr)
    print(json.dumps({"calls": calls, "failures": failures}))
    return failures


HARNESS_PAGE = """<!doctype html><meta charset="utf-8"><title>harness</title>
<script>sessionStorage.setItem("sampletrack.token", {token}); location.replace({target});</script>"""


def ui_harness(db_url: str) -> None:
    """The service's app, plus ``/harness?to=PATH``: stores the token (from the environment, not a
    URL) in the page origin's sessionStorage, as a user typing it would, then opens ``PATH``."""
    from urllib.parse import parse_qs

    from bliss_sampletrack.service import server
    from bliss_sampletrack.service.api import create_app
    from bliss_sampletrack.service.config import ServiceConfig
    from bliss_sampletrack.service.storage import open_storage

    token = os.environ["SAMPLETRACK_UI_TOKEN"]
    storage = open_storage(db_url)
    storage.migrate()
    config = ServiceConfig(db=db_url, port=0)
    app = create_app(storage, config)

    def harness(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/harness":
            target = parse_qs(environ.get("QUERY_STRING", "")).get("to", [config.base_path + "/ui/"])[0]
            if not target.startswith("/"):
                target = "/"
            page = HARNESS_PAGE.format(token=json.dumps(token), target=json.dumps(target)).encode()
            start_response("200 OK", [("Content-Type", "text/html"), ("Cache-Control", "no-store")])
            return [page]
        return app(environ, start_response)

    def announce(host: str, port: int) -> None:
        print(f"ui-harness: serving on http://{host}:{port}{config.base_path}/ ", file=sys.stderr, flush=True)

    server.run(harness, "127.0.0.1", 0, 4, config.max_batch_body_bytes, announce)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="service_fixtures.py")
    commands = parser.add_subparsers(dest="command", required=True)
    fuzz = commands.add_parser("fuzz")
    fuzz.add_argument("base_url")
    fuzz.add_argument("--max-examples", type=int, default=25)
    harness = commands.add_parser("ui-harness")
    harness.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    if args.command == "fuzz":
        return 1 if run_fuzz(args.base_url, os.environ["SAMPLETRACK_FUZZ_TOKEN"], args.max_examples) else 0
    ui_harness(args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
