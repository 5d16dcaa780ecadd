"""The provenance soak (``tools/provenance.py``), one short seeded run end to end: a real beacon and
BLISS session in a child process (its classifier on hand-made scans: tests/unit/testbed/
test_provenance.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bliss_sampletrack.testbed.provenance import BAD, CLASSES, OK

REPO = Path(__file__).resolve().parents[3]
#: the end-to-end run fails on any WRONG, FALSE_EMPTY, UNFLAGGED_CHANGE, SILENT, MISMATCH or
#: RAISED scan (False only checks that every scan is classified, for a plugin being fixed)
STRICT = True
SCANS = 40
SEED = 11


@pytest.mark.bliss
def test_a_short_seeded_soak_classifies_every_scan(tmp_path: Path) -> None:
    report = tmp_path / "provenance.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "provenance.py")]
        + ["--seed", str(SEED), "--scans", str(SCANS), "--policy-fraction", "0.5"]
        + ["--json", str(report), "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert done.returncode in (0, 1), f"the soak could not run:\n{done.stdout}\n{done.stderr}"
    result = json.loads(report.read_text())
    assert set(result["counts"]) == set(CLASSES)
    assert result["scans"] == SCANS
    per_scan = result["per_scan"]
    assert len(per_scan) == SCANS and all(scan["classes"] for scan in per_scan)
    for cls in CLASSES:  # the counts are those of the scans' classes
        assert result["counts"][cls] == sum(cls in scan["classes"] for scan in per_scan), cls
    assert result["counts"][OK] == sum(scan["classes"] == [OK] for scan in per_scan)
    assert sum(mode["scans"] for mode in result["by_policy"].values()) == SCANS
    assert 0 < result["by_policy"]["policy"]["scans"] < SCANS
    assert set(result["examples"]) == set(BAD)
    failing = {cls: result["counts"][cls] for cls in BAD}
    assert (done.returncode == 0) == (not any(failing.values())), failing
    assert "Provenance soak: seed" in done.stdout
    if STRICT:
        assert not any(failing.values()), f"{failing}\n{done.stdout}"
