"""Schemathesis against the running service: no generated request may get a 5xx.

The fuzzer reads the service's own OpenAPI document and sends positive and negative data to every
operation (a small, derandomised ``--max-examples``: this is a smoke fuzz, well under a minute),
with a token that may write beamline ``fuzz`` (generated events are pointed at it so that they
reach the database). It runs as a separate process (``tests/helpers/service_fixtures.py fuzz``), with
schemathesis >= 4.

Caveat: schemathesis cannot be installed in the BLISS 2.0 stack (every release conflicts with it:
4.x needs typing_extensions >= 4.12.2 where bliss 2.0.3 pins < 4.10; 3.x needs pytest < 9 and its
hypothesis-jsonschema fails with the pinned hypothesis). There the fuzzer runs with the BLISS 2.4
environment's interpreter (``.venv-bliss2.4``) against the service of the current stack; without
such an interpreter the test is skipped, saying so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from service_fixtures import FUZZ_BEAMLINE, HELPERS, REPO, clean_env, issue_token

pytest_plugins = ["service_fixtures"]

MAX_EXAMPLES = 30


def fuzzer_python() -> str | None:
    """An interpreter with schemathesis >= 4: this one, else the BLISS 2.4 environment's."""
    if find_spec("schemathesis") is not None:
        return sys.executable
    other = REPO / ".venv-bliss2.4" / "bin" / "python"
    if other.exists():
        probe = subprocess.run(
            [str(other), "-c", "import schemathesis.openapi, schemathesis.generation"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0:
            return str(other)
    return None


def test_no_server_error(tmp_path: Path, service_factory: Any) -> None:
    python = fuzzer_python()
    if python is None:
        pytest.skip("no interpreter with schemathesis >= 4 (see this module's docstring)")
    db_url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    token = issue_token(db_url, [FUZZ_BEAMLINE])
    service = service_factory(db_url)
    result = subprocess.run(
        [
            python,
            str(HELPERS / "service_fixtures.py"),
            "fuzz",
            service.base_url,
            "--max-examples",
            str(MAX_EXAMPLES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env({"SAMPLETRACK_FUZZ_TOKEN": token}),
        check=False,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == [], report["failures"]
    assert result.returncode == 0, result.stderr[-3000:]
    # it did exercise the service: every operation, both modes, and some events were stored
    assert report["calls"] >= 5 * 2 * 10
    log = service.log_text()
    assert "POST /api/v1/events 201" in log and "POST /api/v1/events/batch 200" in log
    assert " 500 " not in log and "unhandled" not in log
    assert token.split("_", 2)[2] not in log
