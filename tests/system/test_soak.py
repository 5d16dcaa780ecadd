"""The soak run, short: ``tools/soak.py --duration 45 --seed 1`` sets up the whole chain (beacon
with Redis persistence, the service on SQLite behind faulty proxies, the standalone deliverer, a
BLISS session process, the in-process hardware loop), injects faults of several kinds, and finds
nothing lost, duplicated, stored out of order or wrongly tagged.

Default stack only (like the benchmarks): about a minute of wall time, most of it the soak itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.bliss,
    pytest.mark.skipif(
        Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
        reason="the soak runs on the default stack (.venv) only",
    ),
]


def test_a_short_soak_injects_faults_of_several_kinds_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    command = [sys.executable, str(REPO / "tools" / "soak.py"), "--duration", "45", "--seed", "1"]
    command += ["--json", str(out), "--workdir", str(tmp_path / "work")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    output = done.stdout[-6000:] + done.stderr[-4000:]
    assert done.returncode == 0, output
    result = json.loads(out.read_text())
    assert "Soak summary" in done.stdout and "result" in done.stdout

    session_kinds = {kind for kind, count in result["faults"].items() if count > 0}
    assert len(session_kinds) >= 3, (session_kinds, output)
    assert session_kinds & {"session_kill9", "deliverer_kill9", "deliverer_kill9_in_flight"}, session_kinds
    assert any(kind.startswith("service_") for kind in session_kinds), session_kinds
    hardware_kinds = {kind for kind, count in result["hardware_faults"].items() if count > 0}
    assert len(hardware_kinds) >= 3, hardware_kinds

    assert result["cycles_session"] > 0 and result["cycles_hardware"] > 0
    assert result["events_produced_session"] > 0 and result["events_produced_hardware"] > 0
    assert result["events_stored"] == result["events_produced"] == result["events_stored_api"]
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["unexpected_stored"] == 0
    assert result["out_of_order"] == 0
    assert result["scans_checked"] > 0 and result["tagged_wrongly"] == 0
    assert result["saved_scans_missing"] == 0 and result["hardware_wrong_sample"] == 0
    assert result["ok"] is True
