"""The ESRF data policy as the system tier's ``esrf`` fixture sets it up (``tests/system/conftest.py``),
for the tests that check what it did."""

from __future__ import annotations

from pathlib import Path

PROPOSAL = "st0001"  # neither "<beamline>..." nor tmp/temp/test...: a visitor proposal


def policy_roots(root: Path) -> dict[str, Path]:
    """The policy's data roots (in-house, visitor, tmp) under ``root``."""
    return {
        "inhouse_data_root": root / "inhouse",
        "visitor_data_root": root / "visitor",
        "tmp_data_root": root / "tmp",
    }
