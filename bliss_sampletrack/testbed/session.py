"""Open a real BLISS session of the test bed's config tree, in this process.

Order matters: the BLISS 2.4 compatibility layer (test bed only) must be in place before BLISS
is imported, and ``import bliss`` (which monkey-patches with gevent) must come before anything
imports ``blissdata.streams``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from bliss_sampletrack.testbed.beacon import BeaconServer
from bliss_sampletrack.testbed.compat_bliss24 import install_if_needed

log = logging.getLogger(__name__)


def import_bliss() -> None:
    """Import BLISS, first completing a BLISS 2.4.0 PyPI install with the test bed's layer."""
    install_if_needed()
    import bliss  # noqa: F401  (gevent monkey-patching happens here)


def open_session(server: BeaconServer, name: str, data_root: Path) -> Any:
    """Point this process at ``server``, set up session ``name`` and save scans under ``data_root``."""
    os.environ["BEACON_HOST"] = server.host
    import_bliss()
    from bliss.config.static import get_config

    session = get_config().get(name)
    session.setup()
    session.scan_saving.base_path = str(data_root)
    log.info("BLISS session %r set up, data under %s", name, data_root)
    return session
