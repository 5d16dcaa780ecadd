"""Find and copy the beacon configuration tree of the simulated demo beamline.

The tree lives in the repository's ``config_examples/demo_beamline`` (users read it as an
example); an installed wheel carries it under ``<prefix>/share/bliss-sampletrack/``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bliss_sampletrack.errors import TestBedError

DEMO_SESSION = "demo_session"
_TREE = "demo_beamline"


def default_config_tree() -> Path:
    """The demo beamline's config tree, from a source checkout or an installed wheel."""
    candidates = [
        Path(__file__).resolve().parents[2] / "config_examples" / _TREE,
        Path(sys.prefix) / "share" / "bliss-sampletrack" / "config_examples" / _TREE,
    ]
    for candidate in candidates:
        if (candidate / "sessions").is_dir():
            return candidate
    raise TestBedError(
        "the demo beamline configuration was not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); run from a source checkout or reinstall bliss-sampletrack"
    )


def copy_config_tree(target: Path, source: Path | None = None) -> Path:
    """Copy ``source`` (default: the demo beamline) to ``target`` and return ``target``."""
    source = source or default_config_tree()
    if target.exists():
        raise TestBedError(f"{target} already exists; the test bed needs a fresh folder")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target
