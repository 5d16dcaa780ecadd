"""The console scripts: stable names, and the main job end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from bliss_sampletrack import __version__

BIN = Path(sys.executable).parent


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_sampletrack_version() -> None:
    result = run(str(BIN / "sampletrack"), "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"bliss-sampletrack {__version__}"


def test_sampletrack_service_says_it_is_not_built_yet() -> None:
    result = run(str(BIN / "sampletrack-service"))
    assert result.returncode == 2
    assert "not part of this release" in result.stderr


@pytest.mark.bliss
def test_demo_runs_a_real_scan_and_prints_its_file(tmp_path: Path) -> None:
    result = run(str(BIN / "sampletrack"), "demo", "--workdir", str(tmp_path), "--npoints", "4", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("data file: ")]
    assert len(lines) == 1, result.stdout
    filename = Path(lines[0].removeprefix("data file: "))
    assert filename.is_relative_to(tmp_path)
    with h5py.File(filename, "r") as h5:
        assert h5["1.1/measurement/diode"].shape == (4,)
    assert "scan 1 (loopscan 4" in result.stdout
