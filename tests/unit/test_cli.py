"""The console scripts: stable names (the main job is tested in test_demo.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bliss_sampletrack import __version__

BIN = Path(sys.executable).parent


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_sampletrack_version() -> None:
    result = run(str(BIN / "sampletrack"), "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"bliss-sampletrack {__version__}"


def test_every_subcommand_has_help() -> None:
    for command in ("demo", "deliver", "status", "annotate"):
        result = run(str(BIN / "sampletrack"), command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert f"sampletrack {command}" in result.stdout
