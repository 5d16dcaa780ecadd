"""The benchmark runner: ``benchmarks/run_all.py --quick`` runs every benchmark and reports each figure.

Checks that the report files exist, that every expected figure has a number and that the Markdown
table lists them; not that the targets are met (quick numbers are noisy). Runs on the default stack
only (the benchmarks compare against pyicat-plus and start the service from ``.venv``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import run_all  # noqa: E402

pytestmark = [
    pytest.mark.bliss,
    pytest.mark.skipif(
        Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
        reason="the benchmarks run on the default stack (.venv) only",
    ),
]


def test_run_all_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "report"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=480,  # the two soaks (provenance, reader stale answers) take most of it
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    table = (out / "report.md").read_text()
    assert report["quick"] is True
    assert set(report["runs"]) == {bench.name for bench in run_all.BENCHMARKS}
    expected = {figure.name for bench in run_all.BENCHMARKS for figure in bench.figures}
    assert {row["figure"] for row in report["figures"]} == expected
    for row in report["figures"]:
        assert isinstance(row["value"], float), row
        assert f"| {row['figure']} |" in table
        assert row["passed"] in (True, False, None)
    assert "| figure | target | measured | result | note |" in table
    assert table in completed.stdout  # printed too
    for name in report["runs"]:
        assert (out / f"{name}.log").exists()


def test_lookup_keys_with_dots() -> None:
    data = {"count_time_0": {"ratio": 1.1}, "count_time_0.1": {"ratio": 1.01}, "a": {"b": 2}}
    assert run_all.lookup(data, "count_time_0.ratio") == 1.1
    assert run_all.lookup(data, "count_time_0.1.ratio") == 1.01
    assert run_all.lookup(data, "a.b") == 2
    with pytest.raises(KeyError):
        run_all.lookup(data, "a.c")


def test_verdicts() -> None:
    assert run_all.Figure("f", "p", "ms", "<", 5).verdict(4.9) is True
    assert run_all.Figure("f", "p", "ms", "<", 5).verdict(5.0) is False
    assert run_all.Figure("f", "p", "", "==", 0).verdict(0.0) is True
    assert run_all.Figure("f", "p", "x").verdict(3.0) is None
